package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReclaimStats says what Reclaim gave back to the filesystem.
type ReclaimStats struct {
	ChunksFreed    int64 `json:"chunks_freed"`    // chunks no delta referenced
	ReclaimedBytes int64 `json:"reclaimed_bytes"` // disk blocks released from pack files
	RemovedPacks   int64 `json:"removed_packs"`
}

// Reclaim returns every byte of the pack files that no chunk row covers: records an interrupted
// writer appended but never committed, space whose punching a crash cut short, packs left empty and
// pack files the metadata does not know. The caller must make sure nothing is appending meanwhile.
func (s *Store) Reclaim(ctx context.Context) (ReclaimStats, error) {
	var st ReclaimStats
	err := s.Update(ctx, func(tx *Tx) error {
		var err error
		st.ChunksFreed, _, err = tx.ReleaseUnreferenced()
		return err
	})
	if err != nil {
		return st, err
	}
	live, err := s.liveExtents(ctx)
	if err != nil {
		return st, err
	}
	files, err := filepath.Glob(filepath.Join(s.dir, "packs", "*.pack"))
	if err != nil {
		return st, err
	}
	for _, path := range files {
		id, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(path), ".pack"), 10, 64)
		if err != nil || id <= 0 || path != s.chunks.(*packBackend).path(id) {
			// Not a name snapfs gives a pack (no pack row can cover it): nothing reads it.
			before := allocated(path)
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return st, fmt.Errorf("remove stray pack file: %w", err)
			}
			st.RemovedPacks++
			st.ReclaimedBytes += before
			continue
		}
		before := allocated(path)
		if exts, ok := live[id]; ok && len(exts) > 0 {
			if err := s.punchGaps(id, exts); err != nil {
				return st, err
			}
		} else {
			if err := s.chunks.(*packBackend).removeIfEmpty(ctx, id); err != nil {
				return st, err
			}
			if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
				st.RemovedPacks++
			} else if err := s.punchGaps(id, nil); err != nil {
				return st, err
			}
		}
		st.ReclaimedBytes += before - allocated(path)
	}
	return st, nil
}

// liveExtents lists, per pack, the committed records in offset order.
func (s *Store) liveExtents(ctx context.Context) (map[int64][]Extent, error) {
	live := map[int64][]Extent{}
	err := s.View(ctx, func(tx *Tx) error {
		return tx.EachChunk(func(c Chunk) error {
			live[c.Pack] = append(live[c.Pack], Extent{Pack: c.Pack, Offset: c.Offset, Len: c.StoredSize})
			return nil
		})
	})
	return live, err
}

// punchGaps punches every range of pack id outside exts (sorted by offset).
func (s *Store) punchGaps(id int64, exts []Extent) error {
	b := s.chunks.(*packBackend)
	f, err := b.file(id)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	var pos int64
	for _, e := range append(exts, Extent{Pack: id, Offset: fi.Size()}) {
		if e.Offset > pos {
			if err := b.punch(Extent{Pack: id, Offset: pos, Len: e.Offset - pos}); err != nil {
				return err
			}
		}
		pos = max(pos, e.Offset+e.Len)
	}
	return nil
}

func allocated(path string) int64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

// CheckMetadata cross-checks the metadata's own bookkeeping and returns each inconsistency found:
// reference counts against the deltas, pack live bytes against the chunks, overlapping records.
func (t *Tx) CheckMetadata() ([]string, error) {
	var problems []string
	checks := []struct {
		q   string
		msg func(a, b, c int64) string
	}{
		{`SELECT c.id, c.refs, (SELECT COUNT(*) FROM deltas d WHERE d.chunk_id = c.id) AS n FROM chunks c WHERE c.refs <> n`,
			func(id, refs, n int64) string {
				return fmt.Sprintf("chunk %d: reference count %d, but %d deltas name it", id, refs, n)
			}},
		{`SELECT p.id, p.live_bytes, COALESCE((SELECT SUM(stored_size) FROM chunks c WHERE c.pack_id = p.id), 0) AS n
			FROM packs p WHERE p.live_bytes <> n`,
			func(id, live, n int64) string {
				return fmt.Sprintf("pack %d: live bytes %d, but its chunks hold %d", id, live, n)
			}},
		{`SELECT id, pack_id, prev_end FROM (SELECT id, pack_id, offset,
				LAG(offset + stored_size) OVER (PARTITION BY pack_id ORDER BY offset) AS prev_end FROM chunks)
			WHERE offset < prev_end`,
			func(id, pack, _ int64) string {
				return fmt.Sprintf("chunk %d overlaps the record before it in pack %d", id, pack)
			}},
	}
	for _, c := range checks {
		rows, err := t.query(c.q)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var a, b, n int64
			if err := rows.Scan(&a, &b, &n); err != nil {
				rows.Close()
				return nil, err
			}
			problems = append(problems, c.msg(a, b, n))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return problems, nil
}
