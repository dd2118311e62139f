package chain

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"

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
	chunks, err := m.chunksToVerify(ctx, refs)
	if err != nil {
		return rep, err
	}
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
	bad := m.rehash(ctx, chunks, &rep, progress)
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	listed := make(map[int64]store.Chunk, len(bad))
	for _, c := range chunks {
		listed[c.ID] = c
	}
	for _, f := range bad {
		// A chunk that a delete freed after it was listed reads as whatever its punched record
		// holds now: not a fault.
		if freed, err := m.freedSince(ctx, listed[f.Chunk]); err != nil {
			return rep, err
		} else if freed {
			continue
		}
		users, err := m.chunkUsers(ctx, f.Chunk)
		if err != nil {
			return rep, err
		}
		f.Snapshots = users
		rep.Faults = append(rep.Faults, f)
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

// chunksToVerify lists every stored chunk, or the distinct chunks the snapshots refs read.
func (m *Manager) chunksToVerify(ctx context.Context, refs []string) ([]store.Chunk, error) {
	var out []store.Chunk
	err := m.st.View(ctx, func(tx *store.Tx) error {
		if len(refs) == 0 {
			return tx.EachChunk(func(c store.Chunk) error { out = append(out, c); return nil })
		}
		seen := map[int64]bool{}
		for _, ref := range refs {
			_, _, v, err := m.resolveView(tx, ref)
			if err != nil {
				return err
			}
			err = v.each(ctx, func(_ int64, ch store.Chunk) error {
				if ch.ID != 0 && !seen[ch.ID] {
					seen[ch.ID] = true
					out = append(out, ch)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		sort.Slice(out, func(i, j int) bool {
			if out[i].Pack != out[j].Pack {
				return out[i].Pack < out[j].Pack
			}
			return out[i].Offset < out[j].Offset
		})
		return nil
	})
	return out, err
}

// rehash reads and verifies chunks on all cores and returns those that fail.
func (m *Manager) rehash(ctx context.Context, chunks []store.Chunk, rep *VerifyReport, progress Progress) []Fault {
	var total int64
	for _, c := range chunks {
		total += c.Size
	}
	var mu sync.Mutex
	var bad []Fault
	var done int64
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
					bad = append(bad, Fault{Chunk: c.ID, Hash: c.Hash.String(), Problem: err.Error()})
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
	for _, c := range chunks {
		if ctx.Err() != nil {
			break
		}
		work <- c
	}
	close(work)
	wg.Wait()
	sort.Slice(bad, func(i, j int) bool { return bad[i].Chunk < bad[j].Chunk })
	return bad
}

// chunkUsers names every snapshot whose image reads chunk id: each snapshot with a delta naming it,
// and the later snapshots of its chain that inherit that delta.
func (m *Manager) chunkUsers(ctx context.Context, id int64) ([]string, error) {
	var names []string
	err := m.st.View(ctx, func(tx *store.Tx) error {
		snaps, err := tx.ChunkUsers(id)
		if err != nil {
			return err
		}
		seen := map[int64]bool{}
		for _, sid := range snaps {
			s, err := tx.SnapshotByID(sid)
			if err != nil {
				return err
			}
			c, err := tx.ChainByID(s.ChainID)
			if err != nil {
				return err
			}
			chainSnaps, err := tx.Snapshots(c.ID, "")
			if err != nil {
				return err
			}
			for _, later := range chainSnaps {
				if later.Seq < s.Seq || seen[later.ID] || later.Status == StatusCreating {
					continue
				}
				uses, err := loadView(m, c, later).uses(ctx, id)
				if err != nil {
					return err
				}
				if uses {
					seen[later.ID] = true
					names = append(names, c.Name+"/"+later.Name)
				}
			}
		}
		return nil
	})
	return names, err
}

func (v *view) uses(ctx context.Context, id int64) (bool, error) {
	found := false
	err := v.eachFrom(ctx, 0, func(_ int64, c store.Chunk) bool {
		found = c.ID == id
		return !found
	})
	return found, err
}

// GCStats says what gc reclaimed.
type GCStats struct {
	SnapshotsUndone int64 `json:"snapshots_undone"` // interrupted creations rolled back
	store.ReclaimStats
}

// GC rolls back interrupted snapshot creations and returns to the filesystem all stored space that
// no metadata references.
func (m *Manager) GC(ctx context.Context) (GCStats, error) {
	m.appendMu.Lock()
	defer m.appendMu.Unlock()
	var st GCStats
	var creating []store.Snapshot
	err := m.st.View(ctx, func(tx *store.Tx) (err error) {
		creating, err = tx.SnapshotsWithStatus(StatusCreating)
		return err
	})
	if err != nil {
		return st, err
	}
	for _, s := range creating {
		if err := m.discardSnapshot(ctx, s.ID); err != nil {
			return st, fmt.Errorf("undo interrupted snapshot %s: %w", s.Name, err)
		}
		st.SnapshotsUndone++
	}
	st.ReclaimStats, err = m.st.Reclaim(ctx)
	return st, err
}
