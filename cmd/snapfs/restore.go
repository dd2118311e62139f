package main

import (
	"fmt"
	"path/filepath"

	"github.com/snapfs/snapfs/chain"
	"github.com/urfave/cli/v2"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "write a snapshot back to its disk, or to another",
		ArgsUsage: "REF",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "the disk or image file to write (default: the chain's source)"},
			&cli.BoolFlag{Name: "force", Usage: "write even when the target is mounted or attached"},
			&cli.BoolFlag{Name: "new-disk", Usage: "the volume's path names another disk than it was added with: restore onto it, as the volume's disk from now on"},
		},
		Action: restore,
	}
}

func cloneCommand() *cli.Command {
	return &cli.Command{
		Name:      "clone",
		Usage:     "write a snapshot to a new sparse image file",
		ArgsUsage: "REF --to PATH",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "the new image file (required; must not exist)"},
			&cli.StringFlag{Name: "volume", Usage: "register the image as this volume, its chain starting from the snapshot"},
		},
		Action: clone,
	}
}

// refArg checks that a command has exactly one argument, a snapshot reference; what names the
// command and the reference in errors.
func refArg(cCtx *cli.Context, command string) (ref, what string, err error) {
	args, err := checkArgs(cCtx, 1, 1, "REF")
	if err != nil {
		return "", "", err
	}
	ref = args[0]
	what = command + " " + argText(ref)
	if _, err := chain.ParseRef(ref); err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	return ref, what, nil
}

// absFlag is the absolute form of a path flag, "" when the flag is unset.
func absFlag(cCtx *cli.Context, name string) (string, error) {
	if !cCtx.IsSet(name) {
		return "", nil
	}
	p := cCtx.String(name)
	if p == "" {
		return "", usagef(cCtx, "--%s: empty path", name)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("--%s %s: %w", name, p, err)
	}
	return abs, nil
}

// restore writes a snapshot to a disk and says what it wrote.
func restore(cCtx *cli.Context) error {
	ref, what, err := refArg(cCtx, "restore")
	if err != nil {
		return err
	}
	to, err := absFlag(cCtx, "to")
	if err != nil {
		return err
	}
	dir, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	o := op{Kind: opRestore, Args: opArgs{Refs: []string{ref}, To: to, Force: cCtx.Bool("force"), NewDisk: cCtx.Bool("new-disk")}}
	progress, done := progressBar(cCtx, "restore", false)
	st, err := runOp[chain.RestoreStats](cCtx.Context, dir, o, progress)
	done()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	fmt.Fprintf(cCtx.App.Writer, "restored %s to %s: wrote %d chunks (%s), skipped %d unchanged\n",
		ref, st.Target, st.ChunksWritten, humanSize(st.BytesWritten), st.ChunksSkipped)
	warn(cCtx, what, st.Warning)
	return nil
}

// clone writes a snapshot to a new image file, and registers it as a volume with --volume.
func clone(cCtx *cli.Context) error {
	ref, what, err := refArg(cCtx, "clone")
	if err != nil {
		return err
	}
	to, err := absFlag(cCtx, "to")
	if err != nil {
		return err
	}
	if to == "" {
		return usagef(cCtx, "missing --to PATH")
	}
	volume := cCtx.String("volume")
	if cCtx.IsSet("volume") {
		if err := chain.ValidateName(volume); err != nil {
			return fmt.Errorf("%s: --volume: %w", what, err)
		}
	}
	dir, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	o := op{Kind: opClone, Args: opArgs{Refs: []string{ref}, To: to, Volume: volume}}
	progress, done := progressBar(cCtx, "clone", false)
	res, err := runOp[chain.CloneResult](cCtx.Context, dir, o, progress)
	done()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	w := cCtx.App.Writer
	fmt.Fprintln(w, res.Path)
	if res.Volume != nil {
		fmt.Fprintf(w, "volume %s\n", res.Volume.Name)
	}
	warn(cCtx, what, res.Warning)
	return nil
}
