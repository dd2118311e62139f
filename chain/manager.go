// Package chain gives snapshot semantics to a store: volumes (disks), chains of incremental snapshots,
// snapshot creation, delete-with-merge, images that read a snapshot back, restore, clone, verify and
// garbage collection. It knows nothing of FUSE or command-line flags.
package chain

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapfs/snapfs/store"
)

// Errors callers can test with errors.Is.
var (
	// ErrNotFound: no such volume, chain or snapshot.
	ErrNotFound = store.ErrNotFound
	// ErrExists: the name is taken.
	ErrExists = store.ErrExists
	// ErrLocked: another process holds the store's writer lock.
	ErrLocked = store.ErrLocked
	// ErrInvalid: a name, reference, size or option is not acceptable.
	ErrInvalid = errors.New("invalid argument")
	// ErrInUse: the target disk is mounted or attached.
	ErrInUse = errors.New("in use")
	// ErrCorrupt: stored data failed an integrity check.
	ErrCorrupt = store.ErrCorrupt
	// ErrOtherDisk: a volume's path names another disk than the one the volume was added with.
	ErrOtherDisk = errors.New("another disk")
)

// Volume kinds.
const (
	KindData   = "data"
	KindSystem = "system"
)

// Snapshot statuses.
const (
	StatusCreating = "creating"
	StatusReady    = "ready"
	StatusDeleting = "deleting"
)

// Chunk sizes a volume may use.
const (
	MinChunkSize     = 16 << 10
	MaxChunkSize     = 4 << 20
	DefaultChunkSize = 64 << 10
)

// Options say how to open a store.
type Options struct {
	// ReadOnly opens without the writer lock: listing and reading only.
	ReadOnly bool
	// Region is recorded when the store is created.
	Region string
	// CacheBytes caps the cache of decompressed chunks that images read through (default 64 MiB).
	CacheBytes int64
	// MapCacheBytes caps the cache of snapshots' chunk maps (default 32 MiB, 25 GiB of disk
	// addressed at the default chunk size).
	MapCacheBytes int64
}

// Manager is an open store seen as volumes, chains and snapshots.
type Manager struct {
	st    *store.Store
	cache *chunkCache
	maps  *mapCache
	// segChunks is how many entries of a chunk map are loaded at a time: segmentChunks, but tests
	// make it small, to cross segment boundaries on small disks.
	segChunks   int64
	holeSeg     []store.Chunk // see holeSegment
	holeSegOnce sync.Once

	chainMu sync.Mutex
	chainLk map[int64]*sync.Mutex // serialises create and delete within one chain

	// appendMu is held shared by snapshot creations (which append records not yet committed) and
	// exclusively by gc (which punches every byte no committed record covers).
	appendMu sync.RWMutex
	openMu   sync.Mutex // held while an image opens, and while a delete decides whether to wait for one
	pinMu    sync.Mutex
	pins     map[int64]int  // open images per snapshot id
	active   map[int64]bool // snapshots this process is creating

	// counts is what snapshot creations did with the chunks they found changed: compressed them
	// into new records, found them in the store already, or read them again because the store let
	// go of them before the batch committed; and how many holes longer than a block they handed on
	// whole. Tests read it.
	counts struct{ encoded, reused, reread, holeSpans atomic.Int64 }
	// beforeCommit, set by tests only, runs before each batch of a snapshot being created commits.
	beforeCommit func()
}

// Open opens (and, unless read-only, creates) the store in dir. A writer finishes or undoes what an
// interrupted writer left: snapshots still being created are rolled back and half-deleted ones are
// finished.
func Open(ctx context.Context, dir string, opts Options) (*Manager, error) {
	st, err := store.Open(ctx, dir, store.Options{ReadOnly: opts.ReadOnly, Region: opts.Region})
	if err != nil {
		return nil, err
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 64 << 20
	}
	if opts.MapCacheBytes <= 0 {
		opts.MapCacheBytes = 32 << 20
	}
	m := &Manager{st: st, cache: newChunkCache(opts.CacheBytes), maps: newMapCache(opts.MapCacheBytes, segmentChunks),
		segChunks: segmentChunks, chainLk: map[int64]*sync.Mutex{}, pins: map[int64]int{}, active: map[int64]bool{}}
	if !opts.ReadOnly {
		// Taken again if a full filesystem made an earlier writer give it up, and there is room.
		m.st.EnsureReserve()
		if err := m.recover(ctx); err != nil {
			st.Close()
			return nil, fmt.Errorf("recover store: %w", err)
		}
	}
	return m, nil
}

// Close releases the store.
func (m *Manager) Close() error { return m.st.Close() }

// Store is the underlying store.
func (m *Manager) Store() *store.Store { return m.st }

// Region is the store's region.
func (m *Manager) Region(ctx context.Context) (string, error) { return m.st.Region(ctx) }

func (m *Manager) lockChain(id int64) func() {
	m.chainMu.Lock()
	mu, ok := m.chainLk[id]
	if !ok {
		mu = &sync.Mutex{}
		m.chainLk[id] = mu
	}
	m.chainMu.Unlock()
	mu.Lock()
	return mu.Unlock
}

// recover rolls back snapshots an interrupted process was creating and finishes deletes it started.
func (m *Manager) recover(ctx context.Context) error {
	var creating, deleting []store.Snapshot
	err := m.st.View(ctx, func(tx *store.Tx) error {
		var err error
		if creating, err = tx.SnapshotsWithStatus(StatusCreating); err != nil {
			return err
		}
		deleting, err = tx.SnapshotsWithStatus(StatusDeleting)
		return err
	})
	if err != nil {
		return err
	}
	for _, s := range creating {
		if err := m.discardSnapshot(ctx, s.ID); err != nil {
			if store.IsFull(err) {
				// Left as it is, hidden: the next open, snapshot or gc rolls it back once
				// there is room, which a delete may be opening the store to make.
				continue
			}
			return err
		}
	}
	for _, s := range deleting {
		if _, err := m.finishDelete(ctx, s.ID); err != nil {
			if store.IsFull(err) {
				// The snapshot stays hidden and whole: deleting it again, or the next open,
				// finishes the delete once there is room. Refusing to open would leave no way
				// to free space through snapfs.
				continue
			}
			return err
		}
	}
	return nil
}

// --- names and references ---

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)

// ValidateName checks a volume, chain or snapshot name: 1–128 letters, digits, '.', '_' or '-', not
// starting with '.'.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalid)
	}
	if len(name) > 128 {
		return fmt.Errorf("%w: name longer than 128 characters", ErrInvalid)
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q: use letters, digits, '.', '_' and '-', not starting with '.'", ErrInvalid, name)
	}
	return nil
}

// Ref names a snapshot: by chain and name, or by numeric id.
type Ref struct {
	Chain string
	Name  string
	ID    int64
}

// ParseRef parses "CHAIN/NAME" or a snapshot's numeric id.
func ParseRef(s string) (Ref, error) {
	if chainName, name, ok := strings.Cut(s, "/"); ok {
		if err := ValidateName(chainName); err != nil {
			return Ref{}, fmt.Errorf("%w: snapshot reference %q: bad chain name", ErrInvalid, s)
		}
		if err := ValidateName(name); err != nil {
			return Ref{}, fmt.Errorf("%w: snapshot reference %q: bad snapshot name", ErrInvalid, s)
		}
		return Ref{Chain: chainName, Name: name}, nil
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != s {
		return Ref{}, fmt.Errorf("%w: snapshot reference %q: want CHAIN/NAME or a snapshot id", ErrInvalid, s)
	}
	return Ref{ID: id}, nil
}

// String formats the reference as given.
func (r Ref) String() string {
	if r.ID != 0 {
		return strconv.FormatInt(r.ID, 10)
	}
	return r.Chain + "/" + r.Name
}

// resolve finds the snapshot a reference names. Snapshots being created or deleted are not found.
func resolve(tx *store.Tx, ref string) (store.Snapshot, store.Chain, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return store.Snapshot{}, store.Chain{}, err
	}
	var s store.Snapshot
	var c store.Chain
	// Only a row that is not there is "not found": any other failure to read one (a busy or
	// damaged database) must not tell a FUSE lookup or a command that the snapshot does not exist.
	if r.ID != 0 {
		if s, err = tx.SnapshotByID(r.ID); err != nil {
			return s, c, lookupErr("snapshot "+ref, err)
		}
		if c, err = tx.ChainByID(s.ChainID); err != nil {
			return s, c, err
		}
	} else {
		if c, err = tx.ChainByName(r.Chain); err != nil {
			return s, c, lookupErr("chain "+r.Chain, err)
		}
		if s, err = tx.SnapshotByName(c.ID, r.Name); err != nil {
			return s, c, lookupErr("snapshot "+ref, err)
		}
	}
	if s.Status != StatusReady {
		return s, c, fmt.Errorf("snapshot %s: %w (it is %s)", ref, ErrNotFound, s.Status)
	}
	return s, c, nil
}

// lookupErr says what of looks it up failed: not found, or why not.
func lookupErr(what string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("look up %s: %w", what, err)
}

// --- views ---

// Volume is a registered disk.
type Volume struct {
	Name      string    `json:"name"`
	Source    string    `json:"source"`
	Kind      string    `json:"kind"`
	Instance  string    `json:"instance"`
	Size      int64     `json:"size"`
	ChunkSize int64     `json:"chunk_size"`
	Chain     string    `json:"chain"` // "" until its first snapshot
	Created   time.Time `json:"created"`
}

// Chain is the chain of one disk's snapshots.
type Chain struct {
	Name        string    `json:"name"`
	Region      string    `json:"region"`
	Volume      string    `json:"volume"` // "" once the volume was forgotten
	Source      string    `json:"source"`
	Size        int64     `json:"size"` // capacity: the size of the newest snapshot
	ChunkSize   int64     `json:"chunk_size"`
	Snapshots   int64     `json:"snapshots"`
	StoredBytes int64     `json:"stored_bytes"`
	Created     time.Time `json:"created"`
}

// Snapshot is one snapshot of a chain.
type Snapshot struct {
	ID          int64     `json:"id"`
	Chain       string    `json:"chain"`
	Name        string    `json:"name"`
	Volume      string    `json:"volume"`
	Seq         int64     `json:"seq"`
	Created     time.Time `json:"created"`
	Size        int64     `json:"size"`
	ChunkSize   int64     `json:"chunk_size"`
	Chunks      int64     `json:"changed_chunks"` // chunk indexes this snapshot records itself
	UniqueBytes int64     `json:"unique_bytes"`   // stored bytes that deleting it would free
	Status      string    `json:"status"`
	Parent      int64     `json:"parent"` // previous snapshot of the chain, 0 for the first
	Origin      int64     `json:"origin"` // for a clone's base: the snapshot it was cloned from
	// DataBytes is how many bytes of the disk's chunks hold data (holes and zero chunks left out),
	// -1 for a snapshot made before snapfs recorded it.
	DataBytes int64 `json:"data_bytes"`
}

// Ref is the snapshot's CHAIN/NAME reference.
func (s Snapshot) Ref() string { return s.Chain + "/" + s.Name }

func fromNanos(n int64) time.Time { return time.Unix(0, n) }

func (m *Manager) volumeView(tx *store.Tx, v store.Volume) (Volume, error) {
	out := Volume{Name: v.Name, Source: v.Source, Kind: v.Kind, Instance: v.Instance, Size: v.Size,
		ChunkSize: v.ChunkSize, Created: fromNanos(v.Created)}
	c, err := tx.ChainByVolume(v.ID)
	switch {
	case err == nil:
		out.Chain = c.Name
	case !errors.Is(err, ErrNotFound):
		return out, err
	}
	return out, nil
}

func (m *Manager) chainView(tx *store.Tx, c store.Chain) (Chain, error) {
	out, err := m.chainInfo(tx, c)
	if err != nil {
		return out, err
	}
	out.StoredBytes, err = tx.ChainStoredBytes(c.ID)
	return out, err
}

// chainInfo is chainView without StoredBytes, which takes a pass over the chain's deltas.
func (m *Manager) chainInfo(tx *store.Tx, c store.Chain) (Chain, error) {
	out := Chain{Name: c.Name, Region: c.Region, Source: c.Source, ChunkSize: c.ChunkSize, Created: fromNanos(c.Created)}
	if c.VolumeID != 0 {
		v, err := tx.VolumeByID(c.VolumeID)
		if err != nil {
			return out, err
		}
		out.Volume = v.Name
	}
	snaps, err := tx.Snapshots(c.ID, StatusReady)
	if err != nil {
		return out, err
	}
	out.Snapshots = int64(len(snaps))
	if len(snaps) > 0 {
		out.Size = snaps[len(snaps)-1].Size
	}
	return out, nil
}

// snapshotViews describes a chain's ready snapshots; with stats, with the data unique to each, which
// costs a pass over each snapshot's own deltas (the first snapshot's are the whole disk).
func (m *Manager) snapshotViews(tx *store.Tx, c store.Chain, stats bool) ([]Snapshot, error) {
	all, err := tx.Snapshots(c.ID, "")
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	var parent int64
	for i, s := range all {
		if s.Status != StatusReady {
			continue
		}
		view := describe(c, s, parent)
		parent = s.ID
		if stats {
			// What a delete would merge s into: the next snapshot not being created, one whose
			// delete waits for an image included (see NextSnapshot).
			var next store.Snapshot
			if k := slices.IndexFunc(all[i+1:], func(x store.Snapshot) bool { return x.Status != StatusCreating }); k >= 0 {
				next = all[i+1+k]
			}
			view.Chunks, view.UniqueBytes, err = uniqueStats(tx, c, s, next)
			if err != nil {
				return nil, err
			}
		}
		out = append(out, view)
	}
	return out, nil
}

// uniqueStats returns how many deltas snapshot s of chain c records and the stored bytes deleting it
// would free, merging it into next (zero for none).
func uniqueStats(tx *store.Tx, c store.Chain, s, next store.Snapshot) (rows, unique int64, err error) {
	rows, unique, err = tx.DeltaStats(s.ID, next.ID, chunkCount(next.Size, c.ChunkSize))
	if err != nil {
		return 0, 0, fmt.Errorf("unique bytes of snapshot %s/%s: %w", c.Name, s.Name, err)
	}
	return rows, unique, nil
}

// describe is the view of snapshot s of chain c whose predecessor is parent (0 for none); Chunks and
// UniqueBytes are left for the caller.
func describe(c store.Chain, s store.Snapshot, parent int64) Snapshot {
	return Snapshot{ID: s.ID, Chain: c.Name, Name: s.Name, Volume: s.Volume, Seq: s.Seq, Created: fromNanos(s.Created),
		Size: s.Size, ChunkSize: c.ChunkSize, Status: s.Status, Parent: parent, Origin: s.Origin, DataBytes: s.DataBytes}
}

func chunkCount(size, chunkSize int64) int64 { return (size + chunkSize - 1) / chunkSize }

// --- listing ---

// Volumes lists the registered volumes.
func (m *Manager) Volumes(ctx context.Context) ([]Volume, error) {
	var out []Volume
	err := m.st.View(ctx, func(tx *store.Tx) error {
		vs, err := tx.Volumes()
		if err != nil {
			return err
		}
		for _, v := range vs {
			view, err := m.volumeView(tx, v)
			if err != nil {
				return err
			}
			out = append(out, view)
		}
		return nil
	})
	return out, err
}

// Volume describes one volume.
func (m *Manager) Volume(ctx context.Context, name string) (Volume, error) {
	var out Volume
	err := m.st.View(ctx, func(tx *store.Tx) error {
		v, err := tx.VolumeByName(name)
		if err != nil {
			return err
		}
		out, err = m.volumeView(tx, v)
		return err
	})
	return out, err
}

// Chains lists every chain.
func (m *Manager) Chains(ctx context.Context) ([]Chain, error) {
	var out []Chain
	err := m.st.View(ctx, func(tx *store.Tx) error {
		cs, err := tx.Chains()
		if err != nil {
			return err
		}
		for _, c := range cs {
			view, err := m.chainView(tx, c)
			if err != nil {
				return err
			}
			out = append(out, view)
		}
		return nil
	})
	return out, err
}

// Chain describes one chain.
func (m *Manager) Chain(ctx context.Context, name string) (Chain, error) {
	var out Chain
	err := m.st.View(ctx, func(tx *store.Tx) error {
		c, err := tx.ChainByName(name)
		if err != nil {
			return err
		}
		out, err = m.chainView(tx, c)
		return err
	})
	return out, err
}

// ChainInfo is Chain without StoredBytes (left zero), at no cost per chunk.
func (m *Manager) ChainInfo(ctx context.Context, name string) (Chain, error) {
	var out Chain
	err := m.st.View(ctx, func(tx *store.Tx) error {
		c, err := tx.ChainByName(name)
		if err != nil {
			return err
		}
		out, err = m.chainInfo(tx, c)
		return err
	})
	return out, err
}

// ChainNames lists the chains' names, in order.
func (m *Manager) ChainNames(ctx context.Context) ([]string, error) {
	var names []string
	err := m.st.View(ctx, func(tx *store.Tx) error {
		cs, err := tx.Chains()
		for _, c := range cs {
			names = append(names, c.Name)
		}
		return err
	})
	return names, err
}

// HeldNames maps every snapshot name of chain chainName that a snapshot holds to that snapshot's
// status: ready ones, and ones being created or deleted (while an image of it is open), whose names
// CreateSnapshot refuses too. A chain that does not exist holds none.
func (m *Manager) HeldNames(ctx context.Context, chainName string) (map[string]string, error) {
	held := map[string]string{}
	err := m.st.View(ctx, func(tx *store.Tx) error {
		c, err := tx.ChainByName(chainName)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		snaps, err := tx.Snapshots(c.ID, "")
		for _, s := range snaps {
			held[s.Name] = s.Status
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list chain %s: %w", chainName, err)
	}
	return held, nil
}

// Snapshots lists the ready snapshots of a chain, oldest first, or of every chain when chainName is "",
// with the changed chunks and unique bytes of each.
func (m *Manager) Snapshots(ctx context.Context, chainName string) ([]Snapshot, error) {
	return m.listSnapshots(ctx, chainName, true)
}

// SnapshotNames is Snapshots without Chunks and UniqueBytes (left zero): it reads only the snapshot
// rows, never a snapshot's deltas, so it costs nothing per chunk of the disk.
func (m *Manager) SnapshotNames(ctx context.Context, chainName string) ([]Snapshot, error) {
	return m.listSnapshots(ctx, chainName, false)
}

func (m *Manager) listSnapshots(ctx context.Context, chainName string, stats bool) ([]Snapshot, error) {
	var out []Snapshot
	err := m.st.View(ctx, func(tx *store.Tx) error {
		var cs []store.Chain
		if chainName == "" {
			var err error
			if cs, err = tx.Chains(); err != nil {
				return err
			}
		} else {
			c, err := tx.ChainByName(chainName)
			if err != nil {
				return err
			}
			cs = []store.Chain{c}
		}
		for _, c := range cs {
			views, err := m.snapshotViews(tx, c, stats)
			if err != nil {
				return err
			}
			out = append(out, views...)
		}
		return nil
	})
	return out, err
}

// Snapshot describes the snapshot ref names, with its changed chunks and unique bytes.
func (m *Manager) Snapshot(ctx context.Context, ref string) (Snapshot, error) {
	return m.findSnapshot(ctx, ref, true)
}

// SnapshotInfo is Snapshot without Chunks and UniqueBytes (left zero), at no cost per chunk.
func (m *Manager) SnapshotInfo(ctx context.Context, ref string) (Snapshot, error) {
	return m.findSnapshot(ctx, ref, false)
}

func (m *Manager) findSnapshot(ctx context.Context, ref string, stats bool) (Snapshot, error) {
	var out Snapshot
	err := m.st.View(ctx, func(tx *store.Tx) error {
		s, c, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		if s.Status != StatusReady {
			return fmt.Errorf("snapshot %s: %w", ref, ErrNotFound)
		}
		out = describe(c, s, 0)
		// One indexed look-up, not a listing of the chain: the FUSE tree asks this for every
		// path lookup of an image.
		prev, err := tx.PrevReadySnapshot(c.ID, s.Seq)
		switch {
		case err == nil:
			out.Parent = prev.ID
		case !errors.Is(err, ErrNotFound):
			return err
		}
		if !stats {
			return nil
		}
		// What a delete would merge s into (see snapshotViews).
		next, err := tx.NextSnapshot(c.ID, s.Seq)
		if errors.Is(err, ErrNotFound) {
			next = store.Snapshot{}
		} else if err != nil {
			return err
		}
		out.Chunks, out.UniqueBytes, err = uniqueStats(tx, c, s, next)
		return err
	})
	return out, err
}
