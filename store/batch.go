package store

import (
	"errors"
	"fmt"
	"strings"
)

// NewChunk is a chunk a snapshot found: its address, raw size and encoded record. Rec is nil for
// a chunk the caller found the store holding already, which it did not encode.
type NewChunk struct {
	Hash Hash
	Size int
	Rec  []byte
}

// PutChunks makes sure the store holds every chunk of items and returns their ids, in order. A
// chunk the store already holds, or that another item holds the record of, is not stored again. New
// chunks start with no references. It does per batch what PutChunk does per chunk, with a few
// set-wise statements instead of several per chunk. An item without a record whose chunk the store
// does not hold, and no other item has the record of, is an error (ErrNoRecord).
func (t *Tx) PutChunks(items []NewChunk) ([]int64, error) {
	hashes := make([]Hash, len(items))
	for i := range items {
		hashes[i] = items[i].Hash
	}
	known, err := t.KnownChunks(hashes)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, len(items))
	type packUse struct{ live, end int64 }
	packs := map[int64]*packUse{}
	for i, it := range items {
		if id, ok := known[it.Hash]; ok {
			ids[i] = id
			continue
		}
		if it.Rec == nil {
			continue // resolved below, once every record of the batch is stored
		}
		pack, off, err := t.s.chunks.Append(t.ctx, it.Rec)
		if err != nil {
			return nil, err
		}
		n := int64(len(it.Rec))
		t.appended = append(t.appended, Extent{Pack: pack, Offset: off, Len: n})
		use, ok := packs[pack]
		if !ok {
			if _, err := t.exec(`INSERT INTO packs(id, size, live_bytes) VALUES (?, 0, 0) ON CONFLICT DO NOTHING`, pack); err != nil {
				return nil, fmt.Errorf("register pack %d: %w", pack, err)
			}
			use = &packUse{}
			packs[pack] = use
		}
		use.live += n
		use.end = max(use.end, off+n)
		res, err := t.exec(`INSERT INTO chunks(hash, size, stored_size, pack_id, offset, refs) VALUES (?, ?, ?, ?, ?, 0)`,
			it.Hash[:], it.Size, n, pack, off)
		if err != nil {
			return nil, fmt.Errorf("insert chunk %s: %w", it.Hash, err)
		}
		if ids[i], err = res.LastInsertId(); err != nil {
			return nil, err
		}
		known[it.Hash] = ids[i]
	}
	for i, it := range items {
		if ids[i] != 0 {
			continue
		}
		id, ok := known[it.Hash]
		if !ok {
			return nil, fmt.Errorf("chunk %s: %w", it.Hash, ErrNoRecord)
		}
		ids[i] = id
	}
	for pack, use := range packs {
		if _, err := t.exec(`UPDATE packs SET live_bytes = live_bytes + ?, size = MAX(size, ?) WHERE id = ?`,
			use.live, use.end, pack); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// ErrNoRecord means a chunk was to be referenced as one the store holds, but the store does not hold
// it (any more) and no record of it was given.
var ErrNoRecord = errors.New("the store does not hold the chunk and no record of it was given")

// KnownChunks returns the ids of those of the chunks named by hashes that the store holds.
func (t *Tx) KnownChunks(hashes []Hash) (map[Hash]int64, error) {
	known := make(map[Hash]int64, len(hashes))
	const group = 500
	for start := 0; start < len(hashes); start += group {
		part := hashes[start:min(start+group, len(hashes))]
		args := make([]any, len(part))
		for i := range part {
			args[i] = part[i][:]
		}
		rows, err := t.query(`SELECT id, hash FROM chunks WHERE hash IN (?`+strings.Repeat(",?", len(part)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("look up chunks: %w", err)
		}
		for rows.Next() {
			var id int64
			var h []byte
			if err := rows.Scan(&id, &h); err != nil {
				rows.Close()
				return nil, err
			}
			known[Hash(h)] = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return known, nil
}

// addRefs takes one reference per delta on the chunk it names, with one statement per group.
func (t *Tx) addRefs(ds []Delta, by int) error {
	count := map[int64]int{}
	for _, d := range ds {
		if d.Chunk != 0 {
			count[d.Chunk] += by
		}
	}
	args := make([]any, 0, 2*len(count))
	for id, n := range count {
		args = append(args, id, n)
	}
	const group = 400 // pairs per statement
	for len(args) > 0 {
		n := min(len(args), 2*group)
		q := `UPDATE chunks SET refs = refs + v.column2 FROM (VALUES (?,?)` + strings.Repeat(",(?,?)", n/2-1) +
			`) AS v WHERE chunks.id = v.column1`
		if _, err := t.exec(q, args[:n]...); err != nil {
			return fmt.Errorf("reference chunks: %w", err)
		}
		args = args[n:]
	}
	return nil
}
