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
// set-wise statements instead of several per chunk. Items without a record whose chunk the store
// does not hold, and no other item has the record of, fail it before it changes anything, with a
// *MissingRecordsError that names them.
func (t *Tx) PutChunks(items []NewChunk) ([]int64, error) {
	hashes := make([]Hash, len(items))
	for i := range items {
		hashes[i] = items[i].Hash
	}
	known, err := t.knownChunks(hashes)
	if err != nil {
		return nil, err
	}
	if missing := missingRecords(items, known); len(missing) > 0 {
		return nil, &MissingRecordsError{Items: missing}
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
			continue // another item's record: its id is known below
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
		if ids[i] == 0 {
			ids[i] = known[it.Hash]
		}
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

// MissingRecordsError names the items of a PutChunks that lack a record the store needs (it is
// ErrNoRecord): the caller may give them records and call again.
type MissingRecordsError struct {
	Items []int // indexes into the items, in order
}

func (e *MissingRecordsError) Error() string {
	return fmt.Sprintf("%d chunks: %v", len(e.Items), ErrNoRecord)
}

// Unwrap makes the error ErrNoRecord.
func (e *MissingRecordsError) Unwrap() error { return ErrNoRecord }

// missingRecords returns the indexes of the items without a record whose chunk is neither known
// nor recorded by another item.
func missingRecords(items []NewChunk, known map[Hash]int64) []int {
	recorded := map[Hash]bool{}
	for _, it := range items {
		if it.Rec != nil {
			recorded[it.Hash] = true
		}
	}
	var missing []int
	for i, it := range items {
		if _, ok := known[it.Hash]; !ok && it.Rec == nil && !recorded[it.Hash] {
			missing = append(missing, i)
		}
	}
	return missing
}

// knownChunks returns the ids of those of the chunks named by hashes that the store holds.
func (t *Tx) knownChunks(hashes []Hash) (map[Hash]int64, error) {
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
