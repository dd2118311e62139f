package main

import (
	"fmt"
	"strconv"

	"github.com/snapfs/snapfs/chain"
	"github.com/urfave/cli/v2"
)

func chainCommand() *cli.Command {
	return &cli.Command{
		Name:        "chain",
		Usage:       "list and describe snapshot chains",
		Subcommands: []*cli.Command{chainLsCommand(), chainShowCommand()},
	}
}

func chainLsCommand() *cli.Command {
	return &cli.Command{
		Name:   "ls",
		Usage:  "list the chains",
		Flags:  []cli.Flag{jsonFlag()},
		Action: chainLs,
	}
}

func chainShowCommand() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "describe a chain and list its snapshots",
		ArgsUsage: "CHAIN",
		Flags:     []cli.Flag{jsonFlag()},
		Action:    chainShow,
	}
}

// chainDetail is chain show's JSON: the chain's fields, as chain ls prints them, and its snapshots.
type chainDetail struct {
	chain.Chain
	SnapshotList []chain.Snapshot `json:"snapshot_list"`
}

// chainLs lists the chains.
func chainLs(cCtx *cli.Context) error {
	if _, err := checkArgs(cCtx, 0, 0, ""); err != nil {
		return err
	}
	var chains []chain.Chain
	err := withReader(cCtx, func(m *chain.Manager) error {
		if m == nil {
			return nil
		}
		var err error
		chains, err = m.Chains(cCtx.Context)
		return err
	})
	if err != nil {
		return fmt.Errorf("chain ls: %w", err)
	}
	if cCtx.Bool("json") {
		return printJSON(cCtx.App.Writer, nonNil(chains))
	}
	t := newTable(cCtx.App.Writer, "NAME", "REGION", "CAPACITY", "SNAPSHOTS", "STORED", "VOLUME", "SOURCE")
	for _, c := range chains {
		t.row(c.Name, c.Region, humanSize(c.Size), strconv.FormatInt(c.Snapshots, 10), humanSize(c.StoredBytes),
			orDash(c.Volume), c.Source)
	}
	return t.flush()
}

// chainShow describes a chain and lists its snapshots.
func chainShow(cCtx *cli.Context) error {
	args, err := checkArgs(cCtx, 1, 1, "CHAIN")
	if err != nil {
		return err
	}
	name := args[0]
	what := "chain show " + argText(name)
	if err := chain.ValidateName(name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var d chainDetail
	err = withReader(cCtx, func(m *chain.Manager) error {
		if m == nil {
			return fmt.Errorf("chain %s: %w", name, chain.ErrNotFound)
		}
		var err error
		if d.Chain, err = m.Chain(cCtx.Context, name); err != nil {
			return err
		}
		d.SnapshotList, err = m.Snapshots(cCtx.Context, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	d.SnapshotList = nonNil(d.SnapshotList)
	if cCtx.Bool("json") {
		return printJSON(cCtx.App.Writer, d)
	}
	c := d.Chain
	t := newTable(cCtx.App.Writer, "Chain:", c.Name)
	t.row("Region:", c.Region)
	t.row("Volume:", orDash(c.Volume))
	t.row("Source:", c.Source)
	t.row("Capacity:", humanSize(c.Size))
	t.row("Chunk size:", humanSize(c.ChunkSize))
	t.row("Snapshots:", strconv.FormatInt(c.Snapshots, 10))
	t.row("Stored:", humanSize(c.StoredBytes))
	t.row("Created:", localTime(c.Created))
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(cCtx.App.Writer)
	return printSnapshotTable(cCtx, d.SnapshotList, false)
}
