package chain

import (
	"context"
	"fmt"

	"github.com/snapfs/snapfs/store"
)

// segmentChunks is how many entries of a snapshot's chunk map are loaded at a time: 512 MiB of disk
// at the default chunk size, 640 KiB of memory.
const segmentChunks = 8192

// view is a snapshot's chunk map, folded from its chain's deltas: entry i describes chunk index i, a
// zero Chunk (ID 0) being a hole. It is loaded a segment at a time, on demand, through the
// Manager's map cache, so that its memory does not grow with the disk: a whole map costs 80 bytes a
// chunk, 1.3 GiB for a 1 TiB disk. A snapshot's map never changes while the snapshot exists (a
// delete merges an older snapshot's deltas into a newer one without changing what that folds to),
// and its id is never reused, so cached segments stay right.
type view struct {
	m         *Manager
	name      string // for errors
	snap      int64
	chain     int64
	seq       int64
	size      int64
	chunkSize int64
	count     int64 // chunks
}

// loadView returns the chunk map of snapshot s of chain c. It loads nothing yet.
func loadView(m *Manager, c store.Chain, s store.Snapshot) *view {
	return &view{m: m, name: s.Name, snap: s.ID, chain: c.ID, seq: s.Seq, size: s.Size, chunkSize: c.ChunkSize,
		count: chunkCount(s.Size, c.ChunkSize)}
}

// resolveView finds the snapshot ref names and its chunk map.
func (m *Manager) resolveView(tx *store.Tx, ref string) (store.Snapshot, store.Chain, *view, error) {
	s, c, err := resolve(tx, ref)
	if err != nil {
		return s, c, nil, err
	}
	return s, c, loadView(m, c, s), nil
}

// chunkLen is the length of chunk idx: the last one may be short.
func (v *view) chunkLen(idx int64) int64 {
	return min(v.chunkSize, v.size-idx*v.chunkSize)
}

// segment returns the loaded segment seg: entries from seg*v.m.segChunks. The result must not be
// modified.
func (v *view) segment(ctx context.Context, seg int64) ([]store.Chunk, error) {
	key := segmentKey{v.snap, seg}
	if s, ok := v.m.maps.get(key); ok {
		return s, nil
	}
	from := seg * v.m.segChunks
	n := min(v.m.segChunks, v.count-from)
	var entries []store.Chunk // nil while all holes
	err := v.m.st.View(ctx, func(tx *store.Tx) error {
		return tx.FoldChunkRange(v.chain, v.seq, from, from+n, func(idx int64, c store.Chunk) {
			if c.ID == 0 && entries == nil {
				return
			}
			if entries == nil {
				entries = make([]store.Chunk, n)
			}
			entries[idx-from] = c
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load chunk map of snapshot %s: %w", v.name, err)
	}
	if entries == nil {
		// All holes, as most of a large sparse disk is: one shared, never written segment of
		// zero entries instead of 640 KiB allocated (and soon collected) each time.
		entries = v.m.holeSegment()[:n]
	}
	v.m.maps.put(key, entries)
	return entries, nil
}

// holeSegment returns a segment of zero entries (holes) shared by all maps. It must not be modified.
func (m *Manager) holeSegment() []store.Chunk {
	m.holeSegOnce.Do(func() { m.holeSeg = make([]store.Chunk, m.segChunks) })
	return m.holeSeg
}

// at returns entry idx.
func (v *view) at(ctx context.Context, idx int64) (store.Chunk, error) {
	s, err := v.segment(ctx, idx/v.m.segChunks)
	if err != nil {
		return store.Chunk{}, err
	}
	return s[idx%v.m.segChunks], nil
}

// span returns entries [from, to), which must lie within the map. It must not be modified.
func (v *view) span(ctx context.Context, from, to int64) ([]store.Chunk, error) {
	if from >= to {
		return nil, nil
	}
	first, last := from/v.m.segChunks, (to-1)/v.m.segChunks
	if first == last {
		s, err := v.segment(ctx, first)
		if err != nil {
			return nil, err
		}
		return s[from-first*v.m.segChunks : to-first*v.m.segChunks], nil
	}
	out := make([]store.Chunk, 0, to-from)
	for seg := first; seg <= last; seg++ {
		s, err := v.segment(ctx, seg)
		if err != nil {
			return nil, err
		}
		base := seg * v.m.segChunks
		out = append(out, s[max(from, base)-base:min(to, base+int64(len(s)))-base]...)
	}
	return out, nil
}

// each calls fn for every entry in order, a segment at a time.
func (v *view) each(ctx context.Context, fn func(idx int64, c store.Chunk) error) error {
	var ferr error
	err := v.eachFrom(ctx, 0, func(idx int64, c store.Chunk) bool {
		ferr = fn(idx, c)
		return ferr == nil
	})
	if err != nil {
		return err
	}
	return ferr
}

// eachFrom calls fn for the entries from idx on, in order, until it returns false.
func (v *view) eachFrom(ctx context.Context, idx int64, fn func(idx int64, c store.Chunk) bool) error {
	for seg := max(0, idx) / v.m.segChunks; seg*v.m.segChunks < v.count; seg++ {
		s, err := v.segment(ctx, seg)
		if err != nil {
			return err
		}
		base := seg * v.m.segChunks
		for i := max(idx, base) - base; i < int64(len(s)); i++ {
			if !fn(base+i, s[i]) {
				return nil
			}
		}
	}
	return nil
}

// segmentKey names a segment of a snapshot's chunk map.
type segmentKey struct{ snap, seg int64 }
