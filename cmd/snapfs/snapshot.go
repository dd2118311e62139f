package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/snapfs/snapfs/chain"
	"github.com/urfave/cli/v2"
)

func snapshotCommand() *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "create, list, show and delete snapshots",
		Subcommands: []*cli.Command{
			snapshotCreateCommand(), snapshotLsCommand(), snapshotShowCommand(), snapshotDeleteCommand(),
		},
	}
}

func snapshotCreateCommand() *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "snapshot a volume, or the system disk of an instance",
		ArgsUsage: "VOLUME | --instance ID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "instance", Usage: "snapshot this instance's system disk"},
			&cli.StringFlag{Name: "name", Usage: "the snapshot's name (default VOLUME-YYYYMMDD-HHMMSS)"},
			&cli.StringFlag{Name: "freeze", Usage: "freeze the filesystem mounted here while the disk is read"},
			&cli.BoolFlag{Name: "new-disk", Usage: "the volume's path names another disk than it was added with: snapshot it, as the volume's disk from now on"},
			&cli.BoolFlag{Name: "json", Usage: "print the new snapshot as JSON"},
		},
		Action: snapshotCreate,
	}
}

func snapshotLsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list the snapshots of a chain, or of every chain",
		ArgsUsage: "[CHAIN]",
		Flags:     []cli.Flag{jsonFlag()},
		Action:    snapshotLs,
	}
}

func snapshotShowCommand() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "describe a snapshot",
		ArgsUsage: "REF (CHAIN/NAME or id)",
		Flags:     []cli.Flag{jsonFlag()},
		Action:    snapshotShow,
	}
}

func snapshotDeleteCommand() *cli.Command {
	return &cli.Command{
		Name:      "delete",
		Usage:     "delete snapshots; the data later snapshots need is kept",
		ArgsUsage: "REF...",
		Action:    snapshotDelete,
	}
}

// snapshotCreateOp checks snapshot create's command line and builds its op; what names the command
// in errors.
func snapshotCreateOp(cCtx *cli.Context) (o op, what string, err error) {
	args, err := checkArgs(cCtx, 0, 1, "VOLUME")
	if err != nil {
		return op{}, "", err
	}
	instance := cCtx.String("instance")
	hasInstance := cCtx.IsSet("instance")
	switch {
	case len(args) == 1 && hasInstance:
		return op{}, "", usagef(cCtx, "give VOLUME or --instance, not both")
	case len(args) == 0 && !hasInstance:
		return op{}, "", usagef(cCtx, "missing argument: want VOLUME or --instance ID")
	case hasInstance && instance == "":
		return op{}, "", usagef(cCtx, "--instance: empty instance id")
	}
	a := opArgs{Instance: instance, Name: cCtx.String("name"), NewDisk: cCtx.Bool("new-disk")}
	if len(args) == 1 {
		a.Volume = args[0]
		what = "snapshot create " + argText(a.Volume)
	} else {
		what = "snapshot create --instance " + argText(instance)
	}
	if a.Volume != "" {
		if err := chain.ValidateName(a.Volume); err != nil {
			return op{}, what, fmt.Errorf("%s: %w", what, err)
		}
	}
	if cCtx.IsSet("name") {
		if err := chain.ValidateName(a.Name); err != nil {
			return op{}, what, fmt.Errorf("%s: --name: %w", what, err)
		}
	}
	if cCtx.IsSet("freeze") {
		freeze := cCtx.String("freeze")
		if freeze == "" {
			return op{}, what, usagef(cCtx, "--freeze: want the mount point of a filesystem")
		}
		if a.Freeze, err = filepath.Abs(freeze); err != nil {
			return op{}, what, fmt.Errorf("%s: --freeze %s: %w", what, freeze, err)
		}
	}
	// The default name holds the date and time in this command's zone, whoever applies the op.
	now := time.Now()
	a.Zone, a.ZoneOffset = now.Zone()
	a.ZoneRules = localZoneRules(now)
	return op{Kind: opSnapshotCreate, Args: a}, what, nil
}

// snapshotCreate snapshots a volume and prints the new snapshot's CHAIN/NAME.
func snapshotCreate(cCtx *cli.Context) error {
	o, what, err := snapshotCreateOp(cCtx)
	if err != nil {
		return err
	}
	dir, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	asJSON := cCtx.Bool("json")
	progress, done := progressBar(cCtx, "snapshot", asJSON)
	s, err := runOp[chain.Snapshot](cCtx.Context, dir, o, progress)
	done()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if asJSON {
		return printJSON(cCtx.App.Writer, s)
	}
	fmt.Fprintln(cCtx.App.Writer, s.Ref())
	return nil
}

// snapshotLs lists snapshots, oldest first within each chain.
func snapshotLs(cCtx *cli.Context) error {
	args, err := checkArgs(cCtx, 0, 1, "[CHAIN]")
	if err != nil {
		return err
	}
	what, chainName := "snapshot ls", ""
	if len(args) == 1 {
		chainName = args[0]
		what += " " + argText(chainName)
		if err := chain.ValidateName(chainName); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	var snaps []chain.Snapshot
	err = withReader(cCtx, func(m *chain.Manager) error {
		if m == nil {
			return nil
		}
		var err error
		snaps, err = m.Snapshots(cCtx.Context, chainName)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if cCtx.Bool("json") {
		return printJSON(cCtx.App.Writer, nonNil(snaps))
	}
	return printSnapshotTable(cCtx, snaps, true)
}

// printSnapshotTable prints snapshots as a table, with their chain's name when withChain is set.
func printSnapshotTable(cCtx *cli.Context, snaps []chain.Snapshot, withChain bool) error {
	header := []string{"ID", "CHAIN", "NAME", "CREATED", "SIZE", "CHANGED", "UNIQUE", "STATUS"}
	if !withChain {
		header = append(header[:1:1], header[2:]...)
	}
	t := newTable(cCtx.App.Writer, header...)
	for _, s := range snaps {
		cells := []string{strconv.FormatInt(s.ID, 10), s.Chain, s.Name, localTime(s.Created), humanSize(s.Size),
			humanSize(s.Chunks * s.ChunkSize), humanSize(s.UniqueBytes), s.Status}
		if !withChain {
			cells = append(cells[:1:1], cells[2:]...)
		}
		t.row(cells...)
	}
	return t.flush()
}

// snapshotShow describes one snapshot.
func snapshotShow(cCtx *cli.Context) error {
	args, err := checkArgs(cCtx, 1, 1, "REF")
	if err != nil {
		return err
	}
	ref := args[0]
	what := "snapshot show " + argText(ref)
	if _, err := chain.ParseRef(ref); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var s chain.Snapshot
	err = withReader(cCtx, func(m *chain.Manager) error {
		if m == nil {
			return fmt.Errorf("snapshot %s: %w", ref, chain.ErrNotFound)
		}
		var err error
		s, err = m.Snapshot(cCtx.Context, ref)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if cCtx.Bool("json") {
		return printJSON(cCtx.App.Writer, s)
	}
	t := newTable(cCtx.App.Writer, "Snapshot:", s.Ref())
	t.row("ID:", strconv.FormatInt(s.ID, 10))
	t.row("Volume:", orDash(s.Volume))
	t.row("Created:", localTime(s.Created))
	t.row("Size:", humanSize(s.Size))
	t.row("Chunk size:", humanSize(s.ChunkSize))
	t.row("Changed:", fmt.Sprintf("%d chunks (%s)", s.Chunks, humanSize(s.Chunks*s.ChunkSize)))
	t.row("Data:", dataSize(s.DataBytes))
	t.row("Unique:", humanSize(s.UniqueBytes))
	t.row("Status:", s.Status)
	t.row("Parent:", idOrDash(s.Parent))
	if s.Origin != 0 {
		t.row("Origin:", strconv.FormatInt(s.Origin, 10))
	}
	return t.flush()
}

// dataSize shows how much of a snapshot's disk holds data, or "-" where that was not recorded.
func dataSize(n int64) string {
	if n < 0 {
		return "-"
	}
	return humanSize(n)
}

// idOrDash shows a snapshot id, or "-" for none.
func idOrDash(id int64) string {
	if id == 0 {
		return "-"
	}
	return strconv.FormatInt(id, 10)
}

// snapshotDelete deletes snapshots. Every reference is checked before anything is deleted.
func snapshotDelete(cCtx *cli.Context) error {
	refs, err := checkArgs(cCtx, 1, -1, "REF...")
	if err != nil {
		return err
	}
	for _, ref := range refs {
		if _, err := chain.ParseRef(ref); err != nil {
			return fmt.Errorf("snapshot delete %s: %w", argText(ref), err)
		}
	}
	dir, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("snapshot delete: %w", err)
	}
	done, err := runOp[[]deleted](cCtx.Context, dir, op{Kind: opSnapshotDelete, Args: opArgs{Refs: refs}}, noProgress)
	for _, d := range done {
		if d.Stats.Deferred {
			fmt.Fprintf(cCtx.App.Writer, "deleted %s (id %d): its data is freed when the last reader closes it\n",
				d.Snapshot.Ref(), d.Snapshot.ID)
			continue
		}
		fmt.Fprintf(cCtx.App.Writer, "deleted %s (id %d): freed %d chunks, %s\n", d.Snapshot.Ref(), d.Snapshot.ID,
			d.Stats.FreedChunks, humanSize(d.Stats.FreedBytes))
		warn(cCtx, "snapshot delete "+d.Snapshot.Ref(), d.Stats.Warning)
	}
	if err != nil {
		if ref, ok := failedRef(err); ok {
			return fmt.Errorf("snapshot delete %s: %w", argText(ref), err)
		}
		return fmt.Errorf("snapshot delete: %w", err)
	}
	return nil
}
