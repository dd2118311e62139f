package chain

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/snapfs/snapfs/store"
)

// Fault is one integrity problem verify found.
type Fault struct {
	Chunk     int64    `json:"chunk,omitempty"`
	Hash      string   `json:"hash,omitempty"`
	Problem   string   `json:"problem"`
	Snapshots []string `json:"snapshots,omitempty"` // CHAIN/NAME of every snapshot whose image reads the chunk
}

// VerifyReport is what verify checked and found.
type VerifyReport struct {
	Chunks int64   `json:"chunks"`
	Bytes  int64   `json:"bytes"` // raw bytes re-hashed
	Faults []Fault `json:"faults"`
}

// Verify re-reads and re-hashes stored chunks — all of them, or those the snapshots refs read — and,
// for a whole-store check, cross-checks the metadata. Each fault names the snapshots it damages.
func (m *Manager) Verify(ctx context.Context, refs []string, progress Progress) (VerifyReport, error) {
	rep := VerifyReport{Faults: []Fault{}}
	if len(refs) == 0 {
		err := m.st.View(ctx, func(tx *store.Tx) error {
			problems, err := tx.CheckMetadata()
			for _, p := range problems {
				rep.Faults = append(rep.Faults, Fault{Problem: p})
			}
			return err
		})
		if err != nil {
			return rep, err
		}
	}
	bad, err := m.rehash(ctx, m.chunkFeed(ctx, refs), &rep, progress)
	if err != nil {
		return rep, err
	}
	for _, b := range bad {
		// A chunk that a delete freed after it was listed reads as whatever its punched record
		// holds now: not a fault.
		if freed, err := m.freedSince(ctx, b.chunk); err != nil {
			return rep, err
		} else if freed {
			continue
		}
		users, err := m.chunkUsers(ctx, b.chunk.ID)
		if err != nil {
			return rep, err
		}
		rep.Faults = append(rep.Faults, Fault{Chunk: b.chunk.ID, Hash: b.chunk.Hash.String(), Problem: b.err.Error(),
			Snapshots: users})
	}
	return rep, nil
}

// freedSince reports whether chunk c is no longer stored where it was listed.
func (m *Manager) freedSince(ctx context.Context, c store.Chunk) (bool, error) {
	var freed bool
	err := m.st.View(ctx, func(tx *store.Tx) error {
		now, err := tx.ChunkByID(c.ID)
		if errors.Is(err, ErrNotFound) {
			freed = true
			return nil
		}
		freed = err == nil && (now.Hash != c.Hash || now.Pack != c.Pack || now.Offset != c.Offset)
		return err
	})
	return freed, err
}

// chunkFeed is a source of the chunks to verify: it calls send with each chunk in pack order, after
// total with the sum of their raw sizes, and stops when send returns false. The chunks are read a
// page at a time, so that their number costs no memory: the whole store's, or those of it
// that the snapshots refs read, which are first marked in a bitmap of chunk ids (one bit per id,
// 2 MiB for the 16 million chunks of a full 1 TiB disk, where a list of them and a map of those
// seen took over 100 bytes a chunk).
type chunkFeed func(total func(int64), send func(store.Chunk) bool) error

// feedPage is how many chunks the feed reads in one read transaction.
const feedPage = 4096

func (m *Manager) chunkFeed(ctx context.Context, refs []string) chunkFeed {
	return func(total func(int64), send func(store.Chunk) bool) error {
		// What to verify is fixed first: the chunks stored now (by id: one stored later is left
		// out), or those the snapshots refs read. A chunk freed meanwhile is told apart when it
		// fails (freedSince).
		var set idSet
		var maxID int64
		err := m.st.View(ctx, func(tx *store.Tx) (err error) {
			if maxID, err = tx.MaxChunkID(); err != nil {
				return err
			}
			if len(refs) == 0 {
				st, err := tx.Stats()
				total(st.RawBytes)
				return err
			}
			var sum int64
			set, sum, err = m.refChunks(ctx, tx, refs)
			total(sum)
			return err
		})
		if err != nil {
			return err
		}
		// Then the chunks in pack order, a page at a time, each page in a read transaction of its
		// own: one transaction for a whole verify, which can take hours, would keep SQLite from
		// checkpointing its WAL, which would grow with every snapshot made meanwhile.
		pack, offset := int64(-1), int64(-1)
		for {
			var page []store.Chunk
			err := m.st.View(ctx, func(tx *store.Tx) (err error) {
				page, err = tx.ChunksAfter(pack, offset, feedPage)
				return err
			})
			if err != nil || len(page) == 0 {
				return err
			}
			for _, c := range page {
				if c.ID > maxID || (set != nil && !set.has(c.ID)) {
					continue
				}
				if !send(c) {
					return errStopFeed
				}
			}
			last := page[len(page)-1]
			pack, offset = last.Pack, last.Offset
		}
	}
}

var errStopFeed = errors.New("verify stopped")

// refChunks marks the chunks the snapshots refs read and sums their raw sizes, each chunk once.
func (m *Manager) refChunks(ctx context.Context, tx *store.Tx, refs []string) (idSet, int64, error) {
	maxID, err := tx.MaxChunkID()
	if err != nil {
		return nil, 0, err
	}
	set := newIDSet(maxID)
	var sum int64
	for _, ref := range refs {
		_, _, v, err := m.resolveView(tx, ref)
		if err != nil {
			return nil, 0, err
		}
		err = v.each(ctx, func(_ int64, ch store.Chunk) error {
			if ch.ID != 0 && set.add(ch.ID) {
				sum += ch.Size
			}
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
	}
	return set, sum, nil
}

// idSet is a set of chunk ids, one bit each.
type idSet []uint64

func newIDSet(maxID int64) idSet { return make(idSet, maxID/64+1) }

// add puts id in the set and reports whether it was not there yet. The set grows to take it.
func (s *idSet) add(id int64) bool {
	for int(id/64) >= len(*s) {
		*s = append(*s, 0)
	}
	w, bit := &(*s)[id/64], uint64(1)<<(id%64)
	if *w&bit != 0 {
		return false
	}
	*w |= bit
	return true
}

func (s idSet) has(id int64) bool {
	return id >= 0 && int(id/64) < len(s) && s[id/64]&(1<<(id%64)) != 0
}

// badChunk is a chunk that failed its check, as it was listed.
type badChunk struct {
	chunk store.Chunk
	err   error
}

// rehash reads and verifies the chunks feed gives on all cores and returns those that fail,
// by chunk id.
func (m *Manager) rehash(ctx context.Context, feed chunkFeed, rep *VerifyReport, progress Progress) ([]badChunk, error) {
	var mu sync.Mutex
	var bad []badChunk
	var done, total int64
	work := make(chan store.Chunk)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for c := range work {
				data, err := m.st.VerifyChunk(ctx, buf, c)
				mu.Lock()
				if err != nil {
					bad = append(bad, badChunk{chunk: c, err: err})
				} else {
					buf = data
				}
				rep.Chunks++
				rep.Bytes += c.Size
				done += c.Size
				if progress != nil {
					progress(done, total)
				}
				mu.Unlock()
			}
		}()
	}
	err := feed(func(n int64) {
		mu.Lock()
		total = n
		mu.Unlock()
	}, func(c store.Chunk) bool {
		select {
		case work <- c:
			return true
		case <-ctx.Done():
			return false
		}
	})
	close(work)
	wg.Wait()
	if errors.Is(err, errStopFeed) || err == nil {
		err = ctx.Err()
	}
	sort.Slice(bad, func(i, j int) bool { return bad[i].chunk.ID < bad[j].chunk.ID })
	return bad, err
}

// chunkUsers names every snapshot whose image reads chunk id: each snapshot with a delta naming it,
// and the later snapshots of its chain that inherit that delta. Only the indexes where a delta names
// the chunk can read it, so it looks at those entries of each later snapshot's map and nothing else:
// the cost follows the deltas naming the chunk, not the size of the disks (scanning whole maps, a
// damaged pack of a large chain took hours to attribute).
func (m *Manager) chunkUsers(ctx context.Context, id int64) ([]string, error) {
	var names []string
	err := m.st.View(ctx, func(tx *store.Tx) error {
		deltas, err := tx.ChunkDeltas(id)
		if err != nil {
			return err
		}
		byChain := map[int64][]store.ChunkDelta{}
		for _, d := range deltas {
			byChain[d.Chain] = append(byChain[d.Chain], d)
		}
		chainSnaps := map[int64][]store.Snapshot{}
		checked := map[int64]bool{} // later snapshots looked at already, whether they read it or not
		for i, d := range deltas {
			if i > 0 && deltas[i-1].Snapshot == d.Snapshot {
				continue
			}
			c, err := tx.ChainByID(d.Chain)
			if err != nil {
				return err
			}
			snaps, ok := chainSnaps[c.ID]
			if !ok {
				if snaps, err = tx.Snapshots(c.ID, ""); err != nil {
					return err
				}
				chainSnaps[c.ID] = snaps
			}
			for _, later := range snaps {
				if later.Seq < d.Seq || checked[later.ID] || later.Status == StatusCreating {
					continue
				}
				checked[later.ID] = true
				uses, err := loadView(m, c, later).usesAt(ctx, id, byChain[c.ID])
				if err != nil {
					return err
				}
				if uses {
					names = append(names, c.Name+"/"+later.Name)
				}
			}
		}
		return nil
	})
	return names, err
}

// usesAt reports whether the view reads chunk id at one of the indexes that deltas of its chain
// name it at. Those deltas are the only places it can read it from: an entry of the map is the
// newest delta at its index of a snapshot no newer than the view's.
func (v *view) usesAt(ctx context.Context, id int64, deltas []store.ChunkDelta) (bool, error) {
	for _, d := range deltas {
		if d.Seq > v.seq || d.Idx >= v.count {
			continue // a newer snapshot's, or past the end of a disk that shrank since
		}
		c, err := v.at(ctx, d.Idx)
		if err != nil {
			return false, err
		}
		if c.ID == id {
			return true, nil
		}
	}
	return false, nil
}

// GCStats says what gc reclaimed.
type GCStats struct {
	SnapshotsUndone int64 `json:"snapshots_undone"` // interrupted creations rolled back
	// DeletesFinished counts deletes left unfinished with no image reading the snapshot: one
	// deferred until an image closed, whose finish failed then (a full or failing disk).
	DeletesFinished int64 `json:"deletes_finished"`
	// DataBytesRecorded counts snapshots made before snapfs recorded how much of a disk holds data
	// whose figure gc worked out and recorded.
	DataBytesRecorded int64 `json:"data_bytes_recorded"`
	store.ReclaimStats
}

// GC finishes deletes left unfinished, rolls back interrupted snapshot creations, returns to the
// filesystem all stored space that no metadata references, and records the data bytes of snapshots
// made before they were recorded.
func (m *Manager) GC(ctx context.Context) (GCStats, error) {
	finished, err := m.finishStrandedDeletes(ctx)
	if err != nil {
		return GCStats{DeletesFinished: finished}, err
	}
	st, err := m.reclaim(ctx)
	st.DeletesFinished = finished
	if err != nil {
		return st, err
	}
	st.DataBytesRecorded, err = m.recordDataBytes(ctx)
	return st, err
}

// finishStrandedDeletes finishes the deletes of snapshots marked deleting that no image reads. A
// process finishes them when it opens the store; these are a running one's, whose finish failed.
func (m *Manager) finishStrandedDeletes(ctx context.Context) (int64, error) {
	return m.eachWithStatus(ctx, StatusDeleting, "finish the delete of", func(s store.Snapshot) (bool, error) {
		if m.pinned(s.ID) {
			return false, nil // its last reader's close finishes it
		}
		return m.finishStranded(ctx, s)
	})
}

// eachWithStatus runs fn on each snapshot with status in turn and counts those it did something
// to; the first error stops it, saying what it was doing and to which snapshot.
func (m *Manager) eachWithStatus(ctx context.Context, status, what string, fn func(store.Snapshot) (bool, error)) (int64, error) {
	var snaps []store.Snapshot
	err := m.st.View(ctx, func(tx *store.Tx) (err error) {
		snaps, err = tx.SnapshotsWithStatus(status)
		return err
	})
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range snaps {
		done, err := fn(s)
		if err != nil {
			return n, fmt.Errorf("%s snapshot %s: %w", what, s.Name, err)
		}
		if done {
			n++
		}
	}
	return n, nil
}

// finishStranded finishes the delete of snapshot s, under its chain's lock as every delete, unless
// the last close of an image finished it meanwhile.
func (m *Manager) finishStranded(ctx context.Context, s store.Snapshot) (bool, error) {
	defer m.lockChain(s.ChainID)()
	if _, deleting, err := m.deleting(ctx, s.ID); err != nil || !deleting {
		return false, err
	}
	_, err := m.finishDelete(context.WithoutCancel(ctx), s.ID)
	return err == nil, err
}

// recordDataBytes works out and records the data bytes of every ready snapshot that has none
// recorded (made by a snapfs before schema 3), one snapshot at a time under its chain's lock so that
// no delete merges its deltas away meanwhile. It reads only chunk maps: O(chunks) per snapshot, once.
func (m *Manager) recordDataBytes(ctx context.Context) (int64, error) {
	return m.eachWithStatus(ctx, StatusReady, "record data bytes of", func(s store.Snapshot) (bool, error) {
		if s.DataBytes != store.UnknownDataBytes {
			return false, nil
		}
		return m.recordDataBytesOf(ctx, s)
	})
}

// recordDataBytesOf records snapshot s's data bytes unless it is no longer ready.
func (m *Manager) recordDataBytesOf(ctx context.Context, s store.Snapshot) (bool, error) {
	defer m.lockChain(s.ChainID)()
	var v *view
	err := m.st.View(ctx, func(tx *store.Tx) error {
		cur, err := tx.SnapshotByID(s.ID)
		if err != nil || cur.Status != StatusReady {
			return err
		}
		c, err := tx.ChainByID(s.ChainID)
		if err != nil {
			return err
		}
		v = loadView(m, c, cur)
		return nil
	})
	if errors.Is(err, store.ErrNotFound) || (err == nil && v == nil) {
		return false, nil // deleted meanwhile
	}
	if err != nil {
		return false, err
	}
	data, err := v.eachDeltas(ctx, func([]store.Delta) error { return nil })
	if err != nil {
		return false, err
	}
	err = m.st.Update(ctx, func(tx *store.Tx) error { return tx.SetSnapshotDataBytes(s.ID, data) })
	return err == nil, err
}

// appendPoll is how often lockAppends tries for the append lock.
const appendPoll = 20 * time.Millisecond

// lockAppends takes appendMu exclusively once no snapshot is being created, or returns when ctx
// ends. It polls rather than waits in Lock: a waiting Lock makes every snapshot started meanwhile
// wait too (RWMutex favours the writer), and could not be given up when gc is cancelled.
func (m *Manager) lockAppends(ctx context.Context) error {
	for !m.appendMu.TryLock() {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(appendPoll):
		}
	}
	return nil
}

// reclaim rolls back interrupted snapshot creations and returns unreferenced space.
func (m *Manager) reclaim(ctx context.Context) (GCStats, error) {
	var st GCStats
	if err := m.lockAppends(ctx); err != nil {
		return st, err
	}
	defer m.appendMu.Unlock()
	var err error
	st.SnapshotsUndone, err = m.eachWithStatus(ctx, StatusCreating, "undo interrupted", func(s store.Snapshot) (bool, error) {
		return true, m.discardSnapshot(ctx, s.ID)
	})
	if err != nil {
		return st, err
	}
	st.ReclaimStats, err = m.st.Reclaim(ctx)
	return st, err
}
