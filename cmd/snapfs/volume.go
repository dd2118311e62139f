package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/snapfs/snapfs/chain"
	"github.com/urfave/cli/v2"
)

func volumeCommand() *cli.Command {
	return &cli.Command{
		Name:        "volume",
		Usage:       "register, list and forget disks",
		Subcommands: []*cli.Command{volumeAddCommand(), volumeLsCommand(), volumeRmCommand()},
	}
}

func volumeAddCommand() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "register a disk (a block device or an image file)",
		ArgsUsage: "NAME --source PATH",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "source", Usage: "the disk: a block device or an image file (required)"},
			&cli.StringFlag{Name: "kind", Value: chain.KindData, Usage: "data or system"},
			&cli.StringFlag{Name: "instance", Usage: "the instance the disk belongs to"},
			&cli.StringFlag{Name: "chunk-size", Usage: "chunk size: a power of two from 16K to 4M (default 64K)"},
		},
		Action: volumeAdd,
	}
}

func volumeLsCommand() *cli.Command {
	return &cli.Command{
		Name:   "ls",
		Usage:  "list the registered disks",
		Flags:  []cli.Flag{jsonFlag()},
		Action: volumeLs,
	}
}

func volumeRmCommand() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "forget a disk; its chain and snapshots stay",
		ArgsUsage: "NAME",
		Action:    volumeRm,
	}
}

// jsonFlag is the --json flag of listing commands.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON"}
}

// volumeAddOp checks volume add's command line and builds its op.
func volumeAddOp(cCtx *cli.Context) (op, error) {
	args, err := checkArgs(cCtx, 1, 1, "NAME")
	if err != nil {
		return op{}, err
	}
	source := cCtx.String("source")
	if source == "" {
		return op{}, usagef(cCtx, "missing --source PATH")
	}
	kind := cCtx.String("kind")
	if kind != chain.KindData && kind != chain.KindSystem {
		return op{}, usagef(cCtx, "--kind %s: want %s or %s", argText(kind), chain.KindData, chain.KindSystem)
	}
	var chunkSize int64 // 0: the store's default
	if cCtx.IsSet("chunk-size") {
		if chunkSize, err = parseChunkSize(cCtx.String("chunk-size")); err != nil {
			return op{}, usagef(cCtx, "--chunk-size: %v", err)
		}
	}
	abs, err := filepath.Abs(source)
	if err != nil {
		return op{}, fmt.Errorf("source %s: %w", source, err)
	}
	return op{Kind: opVolumeAdd, Args: opArgs{Volume: args[0], Source: abs, VolumeKind: kind,
		Instance: cCtx.String("instance"), ChunkSize: chunkSize}}, nil
}

// volumeAdd registers a disk.
func volumeAdd(cCtx *cli.Context) error {
	o, err := volumeAddOp(cCtx)
	if err != nil {
		return err
	}
	what := "volume add " + argText(o.Args.Volume)
	// Whatever the spec itself gets wrong is caught before the store is opened (and maybe created).
	if _, err := os.Stat(o.Args.Source); err != nil {
		return fmt.Errorf("%s: source %s: %w", what, cCtx.String("source"), pathErrCause(err))
	}
	if err := chain.CheckVolumeSpec(o.Args.volumeSpec()); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	dir, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	v, err := runOp[chain.Volume](cCtx.Context, dir, o, noProgress)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	fmt.Fprintf(cCtx.App.Writer, "added volume %s: %s, %s, chunk size %s\n", v.Name, v.Source,
		humanSize(v.Size), humanSize(v.ChunkSize))
	return nil
}

// pathErrCause drops the operation and path from an *fs.PathError, which the caller names itself.
func pathErrCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// volumeLs lists the registered disks.
func volumeLs(cCtx *cli.Context) error {
	if _, err := checkArgs(cCtx, 0, 0, ""); err != nil {
		return err
	}
	var vols []chain.Volume
	err := withReader(cCtx, func(m *chain.Manager) error {
		if m == nil {
			return nil
		}
		var err error
		vols, err = m.Volumes(cCtx.Context)
		return err
	})
	if err != nil {
		return fmt.Errorf("volume ls: %w", err)
	}
	w := cCtx.App.Writer
	if cCtx.Bool("json") {
		return printJSON(w, nonNil(vols))
	}
	t := newTable(w, "NAME", "KIND", "INSTANCE", "SIZE", "CHUNK", "CHAIN", "SOURCE")
	for _, v := range vols {
		t.row(v.Name, v.Kind, orDash(v.Instance), humanSize(v.Size), humanSize(v.ChunkSize), orDash(v.Chain), v.Source)
	}
	return t.flush()
}

// volumeRm forgets a disk.
func volumeRm(cCtx *cli.Context) error {
	args, err := checkArgs(cCtx, 1, 1, "NAME")
	if err != nil {
		return err
	}
	name := args[0]
	what := "volume rm " + argText(name)
	if err := chain.ValidateName(name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	dir, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := runWriterOp(cCtx.Context, dir, op{Kind: opVolumeRemove, Args: opArgs{Volume: name}}, noProgress); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	fmt.Fprintf(cCtx.App.Writer, "removed volume %s; its chain and snapshots stay\n", name)
	return nil
}
