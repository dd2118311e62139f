package main

import (
	"fmt"
	"strings"

	"github.com/snapfs/snapfs/chain"
	"github.com/urfave/cli/v2"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "re-read and re-hash stored chunks (of the given snapshots, or all)",
		ArgsUsage: "[REF...]",
		Action:    verify,
	}
}

func gcCommand() *cli.Command {
	return &cli.Command{
		Name:   "gc",
		Usage:  "roll back unfinished snapshots, reclaim stored space nothing refers to",
		Action: gc,
	}
}

// verify checks stored chunks, lists the faults it finds with the snapshots they hit, and fails if
// there is any.
func verify(cCtx *cli.Context) error {
	refs := cCtx.Args().Slice()
	for _, ref := range refs {
		if _, err := chain.ParseRef(ref); err != nil {
			return fmt.Errorf("verify %s: %w", argText(ref), err)
		}
	}
	what := strings.TrimSpace("verify " + strings.Join(refs, " "))
	dir, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	progress, done := progressBar(cCtx, "verify", false)
	rep, err := runOp[chain.VerifyReport](cCtx.Context, dir, op{Kind: opVerify, Args: opArgs{Refs: refs}}, progress)
	done()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	w := cCtx.App.Writer
	fmt.Fprintf(w, "verified %d chunks (%s)\n", rep.Chunks, humanSize(rep.Bytes))
	if len(rep.Faults) == 0 {
		return nil
	}
	for _, f := range rep.Faults {
		problem := f.Problem
		if f.Chunk != 0 && !strings.Contains(problem, fmt.Sprint(f.Chunk)) {
			problem = fmt.Sprintf("chunk %d (%s): %s", f.Chunk, f.Hash, problem)
		}
		fmt.Fprintf(w, "fault: %s\n", problem)
		if len(f.Snapshots) > 0 {
			fmt.Fprintf(w, "  snapshots hit: %s\n", strings.Join(f.Snapshots, " "))
		}
	}
	noun := "faults"
	if len(rep.Faults) == 1 {
		noun = "fault"
	}
	return fmt.Errorf("%s: found %d %s", what, len(rep.Faults), noun)
}

// gc reclaims unreferenced space and says how much.
func gc(cCtx *cli.Context) error {
	if _, err := checkArgs(cCtx, 0, 0, ""); err != nil {
		return err
	}
	dir, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	st, err := runOp[chain.GCStats](cCtx.Context, dir, op{Kind: opGC}, noProgress)
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	fmt.Fprintf(cCtx.App.Writer, "gc: freed %d chunks, reclaimed %s, removed %d pack files, rolled back %d unfinished snapshots\n",
		st.ChunksFreed, humanSize(st.ReclaimedBytes), st.RemovedPacks, st.SnapshotsUndone)
	if st.DeletesFinished > 0 {
		fmt.Fprintf(cCtx.App.Writer, "gc: finished %d snapshot deletes left unfinished\n", st.DeletesFinished)
	}
	if st.DataBytesRecorded > 0 {
		fmt.Fprintf(cCtx.App.Writer, "gc: recorded the data size of %d snapshots made by an earlier snapfs\n",
			st.DataBytesRecorded)
	}
	return nil
}
