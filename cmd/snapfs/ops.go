package main

// The seam between the command line and the store's single writer.
//
// Only one process may open a store as its writer. Every command that changes the store (and every
// one that needs the writer: restore, clone, verify, gc) describes what it wants as an op, plain
// data that survives a round trip through JSON, and hands it to runWriterOp. runWriterOp opens the
// store as writer in this process and applies the op; when a mount daemon holds the writer lock, it
// forwards the op to the daemon instead (daemon_rpc.go), which streams the progress back and answers
// with the op's result or error, so that the commands work the same either way.
//
// Because an op may be applied by another process, everything in it must be independent of the
// caller: paths are made absolute and names are checked before the op is built.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/snapfs/snapfs/chain"
	"github.com/snapfs/snapfs/store"
)

// Operation kinds.
const (
	opInit           = "init"
	opVolumeAdd      = "volume.add"
	opVolumeRemove   = "volume.rm"
	opSnapshotCreate = "snapshot.create"
	opSnapshotDelete = "snapshot.delete"
	opRestore        = "restore"
	opClone          = "clone"
	opVerify         = "verify"
	opGC             = "gc"
)

// op is one request to the store's writer.
type op struct {
	Kind string `json:"kind"`
	Args opArgs `json:"args"`
}

// opArgs are the arguments of an op; each kind uses the fields its comment names.
type opArgs struct {
	Region     string   `json:"region,omitempty"`      // init
	Volume     string   `json:"volume,omitempty"`      // volume.add, volume.rm, snapshot.create, clone (register as)
	Source     string   `json:"source,omitempty"`      // volume.add: absolute path
	VolumeKind string   `json:"volume_kind,omitempty"` // volume.add
	Instance   string   `json:"instance,omitempty"`    // volume.add; snapshot.create: the instance's system disk
	ChunkSize  int64    `json:"chunk_size,omitempty"`  // volume.add
	Name       string   `json:"name,omitempty"`        // snapshot.create
	Freeze     string   `json:"freeze,omitempty"`      // snapshot.create: absolute path of a mount point
	Refs       []string `json:"refs,omitempty"`        // snapshot.delete, restore, clone, verify
	To         string   `json:"to,omitempty"`          // restore, clone: absolute path
	Force      bool     `json:"force,omitempty"`       // restore
	NewDisk    bool     `json:"new_disk,omitempty"`    // snapshot.create, restore
	Zone       string   `json:"zone,omitempty"`        // snapshot.create: the command's time zone, for a default name
	ZoneOffset int      `json:"zone_offset,omitempty"` // snapshot.create: its offset east of UTC, in seconds
	ZoneRules  []byte   `json:"zone_rules,omitempty"`  // snapshot.create: its rules (TZif), when known
}

// volumeSpec is the volume volume.add registers.
func (a opArgs) volumeSpec() chain.VolumeSpec {
	return chain.VolumeSpec{Name: a.Volume, Source: a.Source, Kind: a.VolumeKind, Instance: a.Instance,
		ChunkSize: a.ChunkSize}
}

// deleted is what deleting one snapshot freed.
type deleted struct {
	Snapshot chain.Snapshot    `json:"snapshot"`
	Stats    chain.DeleteStats `json:"stats"`
}

// runWriterOp applies o to the store in storeDir as its writer, creating the store if needed, or
// has the mount daemon that holds the writer lock apply it; it returns the op's result (see apply).
// progress, which must not be nil, sees long operations advance.
func runWriterOp(ctx context.Context, storeDir string, o op, progress chain.Progress) (any, error) {
	if !o.createsStore() {
		if err := checkStoreExists(ctx, storeDir); err != nil {
			return nil, err
		}
	}
	m, err := chain.Open(ctx, storeDir, chain.Options{Region: o.Args.Region})
	if errors.Is(err, chain.ErrLocked) {
		return forwardIfDaemon(ctx, storeDir, o, progress, err)
	}
	if err != nil {
		return nil, err
	}
	res, err := o.apply(ctx, m, progress)
	if cerr := m.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close store: %w", cerr)
	}
	return res, err
}

// forwardIfDaemon has the daemon that holds the store's writer lock apply o. When no daemon listens
// (another command holds the lock) it returns locked, the error opening the store gave.
func forwardIfDaemon(ctx context.Context, storeDir string, o op, progress chain.Progress, locked error) (any, error) {
	conn, err := dialDaemon(storeDir)
	switch {
	case errors.Is(err, errNoDaemon):
		return nil, locked
	case err != nil:
		return nil, fmt.Errorf("%w; %v", locked, err)
	}
	return forwardOp(ctx, conn, o, progress)
}

// createsStore reports whether o may create the store when there is none: init and volume add do;
// every other op would fail on an empty store anyway, and must not leave one behind.
func (o op) createsStore() bool { return o.Kind == opInit || o.Kind == opVolumeAdd }

// checkStoreExists returns store.ErrNoStore (wrapped) when dir holds no store, store.ErrNotDir when
// it is not a directory. Other problems are left for the writer to meet, which may, for one,
// migrate a store a reader cannot open.
func checkStoreExists(ctx context.Context, dir string) error {
	m, err := chain.Open(ctx, dir, chain.Options{ReadOnly: true})
	if errors.Is(err, store.ErrNoStore) || errors.Is(err, store.ErrNotDir) {
		return err
	}
	if err == nil {
		m.Close()
	}
	return nil
}

// runOp is runWriterOp for callers that know the result's type.
func runOp[T any](ctx context.Context, storeDir string, o op, progress chain.Progress) (T, error) {
	res, err := runWriterOp(ctx, storeDir, o, progress)
	t, _ := res.(T)
	return t, err
}

// apply carries out o on an open writer. The result is, by kind: init: the region (string);
// volume.add: chain.Volume; volume.rm: nil; snapshot.create: chain.Snapshot; snapshot.delete:
// []deleted (those done, even on error); restore: chain.RestoreStats; clone: chain.CloneResult;
// verify: chain.VerifyReport; gc: chain.GCStats.
func (o op) apply(ctx context.Context, m *chain.Manager, progress chain.Progress) (any, error) {
	a := o.Args
	switch o.Kind {
	case opInit:
		return applyInit(ctx, m, a.Region)
	case opVolumeAdd:
		return m.AddVolume(ctx, a.volumeSpec())
	case opVolumeRemove:
		return nil, m.RemoveVolume(ctx, a.Volume)
	case opSnapshotCreate:
		return applyCreate(ctx, m, a, progress)
	case opSnapshotDelete:
		return applyDelete(ctx, m, a.Refs)
	case opRestore:
		if len(a.Refs) != 1 {
			return nil, fmt.Errorf("restore: want one snapshot, got %d", len(a.Refs))
		}
		return m.Restore(ctx, a.Refs[0], chain.RestoreOptions{To: a.To, Force: a.Force, NewDisk: a.NewDisk, Progress: progress})
	case opClone:
		if len(a.Refs) != 1 {
			return nil, fmt.Errorf("clone: want one snapshot, got %d", len(a.Refs))
		}
		return m.Clone(ctx, a.Refs[0], chain.CloneOptions{To: a.To, Volume: a.Volume, Progress: progress})
	case opVerify:
		return m.Verify(ctx, a.Refs, progress)
	case opGC:
		return m.GC(ctx)
	}
	return nil, fmt.Errorf("unknown operation %q", o.Kind)
}

// applyInit checks that the store, which opening created if needed, has the region asked for.
func applyInit(ctx context.Context, m *chain.Manager, want string) (string, error) {
	region, err := m.Region(ctx)
	if err != nil {
		return "", fmt.Errorf("read region: %w", err)
	}
	if want != "" && region != want {
		return region, fmt.Errorf("store exists with region %s, not %s", region, want)
	}
	return region, nil
}

// applyCreate snapshots a volume, or the system disk of an instance.
func applyCreate(ctx context.Context, m *chain.Manager, a opArgs, progress chain.Progress) (chain.Snapshot, error) {
	volume := a.Volume
	if a.Instance != "" {
		v, err := m.SystemVolume(ctx, a.Instance)
		if err != nil {
			return chain.Snapshot{}, err
		}
		volume = v.Name
	}
	opts := chain.CreateOptions{Name: a.Name, Freeze: a.Freeze, NewDisk: a.NewDisk, Progress: progress}
	if a.Zone != "" {
		// A default name is the command's local date and time, as when it runs on its own, not
		// the daemon's.
		zone := commandZone(a)
		opts.Now = func() time.Time { return time.Now().In(zone) }
	}
	return m.CreateSnapshot(ctx, volume, opts)
}

// applyDelete resolves every reference before deleting any, so that one bad reference changes
// nothing; a snapshot named twice is deleted once.
func applyDelete(ctx context.Context, m *chain.Manager, refs []string) ([]deleted, error) {
	var snaps []chain.Snapshot
	seen := map[int64]bool{}
	for _, ref := range refs {
		s, err := m.Snapshot(ctx, ref)
		if err != nil {
			return nil, &refError{ref: ref, err: err}
		}
		if !seen[s.ID] {
			seen[s.ID] = true
			snaps = append(snaps, s)
		}
	}
	var done []deleted
	for _, s := range snaps {
		// By id: the name may have been deleted and taken again by another command since.
		st, err := m.DeleteSnapshot(ctx, strconv.FormatInt(s.ID, 10))
		if err != nil {
			return done, &refError{ref: s.Ref(), err: err}
		}
		done = append(done, deleted{Snapshot: s, Stats: st})
	}
	return done, nil
}

// refError says which of several snapshot references an error is about.
type refError struct {
	ref string
	err error
}

func (e *refError) Error() string { return e.err.Error() }
func (e *refError) Unwrap() error { return e.err }

// failedRef returns the reference an error from a multi-reference op is about, if it says.
func failedRef(err error) (string, bool) {
	var re *refError
	if errors.As(err, &re) {
		return re.ref, true
	}
	return "", false
}
