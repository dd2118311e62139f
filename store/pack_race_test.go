package store

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// freeLater runs, in a transaction of its own, the release of snapshot snap's delta at idx, as a
// delete does, and returns the extents it freed instead of punching them: the punch of a delete that
// has committed and not yet reached them.
func freeLater(t *testing.T, s *Store, snap int64, idx int64) []Extent {
	t.Helper()
	var pending []Extent
	err := s.Update(context.Background(), func(tx *Tx) error {
		if err := tx.dropDeltas(deltaWhere{`d.snapshot_id = ? AND d.idx = ?`, []any{snap, idx}}); err != nil {
			return err
		}
		if _, _, err := tx.ReleaseUnreferenced(); err != nil {
			return err
		}
		pending, tx.freed = tx.freed, nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) == 0 {
		t.Fatal("the release freed nothing")
	}
	return pending
}

// twoChunkStore makes a store whose one snapshot references two chunks, in one pack, and reopens it
// as a new process would, before its first append.
func twoChunkStore(t *testing.T, rng *rand.Rand) (dir string, s *Store, snap int64) {
	t.Helper()
	dir = t.TempDir()
	s = openStore(t, dir, Options{})
	cs := putChunks(t, s, randBytes(rng, 64<<10), randBytes(rng, 64<<10))
	if cs[0].Pack != cs[1].Pack {
		t.Fatalf("chunks in packs %d and %d, want one", cs[0].Pack, cs[1].Pack)
	}
	snap = newSnapshotRow(t, s, "v")
	if err := s.Update(context.Background(), func(tx *Tx) error {
		return tx.InsertDeltas(snap, []Delta{{Idx: 0, Chunk: cs[0].ID}, {Idx: 1, Chunk: cs[1].ID}})
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	return dir, openStore(t, dir, Options{}), snap
}

// commitNewChunk stores data as a chunk that snapshot snap references at idx, and returns its row.
func commitNewChunk(t *testing.T, s *Store, snap, idx int64, data []byte) Chunk {
	t.Helper()
	c := putChunks(t, s, data)[0]
	if err := s.Update(context.Background(), func(tx *Tx) error {
		return tx.InsertDeltas(snap, []Delta{{Idx: idx, Chunk: c.ID}})
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// A delete's punch that runs after a new snapshot's first append of the process must not hit the
// new snapshot's records: appends never go below the pack's end, even where the bytes there were
// freed by a committed transaction.
func TestFreedTailIsNotAppendedOver(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	_, s, snap := twoChunkStore(t, rng)
	pending := freeLater(t, s, snap, 1) // the pack's last record
	data := randBytes(rng, 64<<10)
	c := commitNewChunk(t, s, snap, 2, data)
	for _, e := range pending {
		if e.Pack == c.Pack && c.Offset < e.Offset+e.Len && e.Offset < c.Offset+c.StoredSize {
			t.Errorf("new record at pack %d offset %d overlaps freed extent %+v", c.Pack, c.Offset, e)
		}
	}
	if err := s.chunks.Free(ctx, pending); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadChunk(ctx, nil, c)
	if err != nil {
		t.Fatalf("committed chunk lost to a delete's punch: %v", err)
	}
	if string(got) != string(data) {
		t.Fatal("committed chunk reads back different bytes")
	}
}

// A pack that deletes empty and remove keeps its id: a new pack made afterwards by the same process
// gets another, so that a punch of the old pack still pending cannot hole the new one.
func TestRemovedPackIDIsNotReused(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	_, s, snap := twoChunkStore(t, rng)
	pending := freeLater(t, s, snap, 0)
	// A second delete frees the pack's other record, punches it, and removes the now empty pack.
	if err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.dropDeltas(deltaWhere{`d.snapshot_id = ? AND d.idx = 1`, []any{snap}}); err != nil {
			return err
		}
		_, _, err := tx.ReleaseUnreferenced()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.chunks.(*packBackend).path(pending[0].Pack)); !os.IsNotExist(err) {
		t.Fatalf("the emptied pack %d is still there (%v)", pending[0].Pack, err)
	}
	data := randBytes(rng, 64<<10)
	c := commitNewChunk(t, s, snap, 2, data)
	if c.Pack == pending[0].Pack {
		t.Errorf("new pack reuses the id %d of the pack just removed", c.Pack)
	}
	if err := s.chunks.Free(ctx, pending); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadChunk(ctx, nil, c); err != nil || string(got) != string(data) {
		t.Fatalf("committed chunk lost to a punch of the removed pack: %v", err)
	}
}

// Removing an empty pack must not wait for the metadata's write lock while it keeps appends out: a
// transaction holding that lock may be about to append.
func TestRemoveEmptyPackBesideAppendingTransaction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	rng := rand.New(rand.NewPCG(5, 6))
	putChunks(t, s, randBytes(rng, 10000))
	// An empty pack that is not the current one, as a delete leaves it.
	if _, err := s.db.Exec(`INSERT INTO packs(id, size, live_bytes) VALUES (99, 0, 0)`); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "packs", "0000000099.pack")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	inTx, appendNow := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var txErr error
	wg.Add(1)
	go func() { // a snapshot's batch: takes the write lock, then appends
		defer wg.Done()
		var enc Encoder
		txErr = s.Update(ctx, func(tx *Tx) error {
			if _, err := tx.ChunkByID(1); err != nil { // holds the write lock from BEGIN IMMEDIATE
				return err
			}
			close(inTx)
			<-appendNow
			d := randBytes(rng, 10000)
			_, err := tx.PutChunk(Sum(d), len(d), enc.Encode(d, Sum(d)))
			return err
		})
	}()
	<-inTx
	freed := make(chan error, 1)
	go func() { freed <- s.chunks.Free(ctx, []Extent{{Pack: 99, Offset: 0, Len: 4096}}) }()
	close(appendNow)
	if err := <-freed; err != nil {
		t.Errorf("removing the empty pack: %v", err)
	}
	wg.Wait()
	if txErr != nil {
		t.Errorf("appending transaction: %v", txErr)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("empty pack still there: %v", err)
	}
}
