package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"
)

// TestCancelledUpdateLeavesOthersRecords: an Update whose context is cancelled while fn runs (a client
// gone, a snapshot cancelled after a read error) must not let another Update append meanwhile, or
// its abort would drop the other's staged records, which would then commit unwritten.
func TestCancelledUpdateLeavesOthersRecords(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	rng := rand.New(rand.NewPCG(3, 4))
	putChunks(t, s, randBytes(rng, 64<<10)) // a pack to append to
	ctxA, cancelA := context.WithCancel(context.Background())
	aRunning, bAppended, aDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(aDone)
		s.Update(ctxA, func(tx *Tx) error {
			cancelA()
			close(aRunning)
			// fn goes on with work that is not SQL (encoding, reading the disk) until B has had
			// every chance to append.
			select {
			case <-bAppended:
			case <-time.After(300 * time.Millisecond):
			}
			return ctxA.Err()
		})
	}()
	<-aRunning
	var enc Encoder
	d := randBytes(rng, 64<<10)
	var id int64
	err := s.Update(context.Background(), func(tx *Tx) error {
		var err error
		id, err = tx.PutChunk(Sum(d), len(d), enc.Encode(d, Sum(d)))
		close(bAppended)
		<-aDone // A's Update has returned: its abort ran
		return err
	})
	if err != nil {
		t.Fatalf("B: %v", err)
	}
	c, err := chunkByID(s, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadChunk(context.Background(), nil, c); err != nil {
		t.Fatalf("committed chunk lost: %v", err)
	}
}

// TestUpdateWaitsForContext: an Update waiting for another to finish gives up when its context ends.
func TestUpdateWaitsForContext(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	release, held := make(chan struct{}), make(chan struct{})
	go s.Update(context.Background(), func(*Tx) error { close(held); <-release; return nil })
	<-held
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ran := false
	if err := s.Update(ctx, func(*Tx) error { ran = true; return nil }); err != context.DeadlineExceeded || ran {
		t.Errorf("Update beside a running one, context ended: %v (fn ran: %v), want %v", err, ran, context.DeadlineExceeded)
	}
}

// TestRemovedPackIsNotSynced: a rolled-back transaction that filled a pack and rolled to the next
// leaves the first marked for syncing; once a delete empties and removes it, later snapshots must
// still commit (every Sync failed opening the removed pack, until a restart).
func TestRemovedPackIsNotSynced(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 70 MiB")
	}
	ctx := context.Background()
	s := openStore(t, t.TempDir(), Options{})
	rng := rand.NewChaCha8([32]byte{8})
	chunk := func(n int) []byte { b := make([]byte, n); rng.Read(b); return b }
	per := PackRollSize / RecordLen(MaxChunkSize)
	var first [][]byte
	for range per - 1 {
		first = append(first, chunk(MaxChunkSize))
	}
	putChunks(t, s, first...)                                         // committed, unreferenced, pack 1
	appendUncommitted(t, s, chunk(MaxChunkSize), chunk(MaxChunkSize)) // rolls to pack 2; rolled back
	if err := s.Update(ctx, func(tx *Tx) error { _, _, err := tx.ReleaseUnreferenced(); return err }); err != nil {
		t.Fatal(err) // pack 1 is empty and not current: removed
	}
	for i := range 2 {
		d := chunk(4096)
		var enc Encoder
		err := s.Update(ctx, func(tx *Tx) error { _, err := tx.PutChunk(Sum(d), len(d), enc.Encode(d, Sum(d))); return err })
		if err != nil {
			t.Fatalf("append %d after the pack's removal: %v", i, err)
		}
	}
}

// TestShortPackIsNotResumed: a newest pack found shorter than its committed records (its tail lost
// to a storage fault or a bad copy) is not appended to, or a new record would land where a
// committed row points and freeing that row would punch the new record.
func TestShortPackIsNotResumed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	rng := rand.New(rand.NewPCG(9, 9))
	cs := putChunks(t, s, randBytes(rng, 64<<10), randBytes(rng, 64<<10)) // both unreferenced
	s.Close()
	if err := os.Truncate(packFiles(t, dir)[0], cs[1].Offset); err != nil { // the second one's record lost
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	snap := newSnapshotRow(t, s, "v")
	nc := putChunks(t, s, randBytes(rng, 64<<10))[0]
	if nc.Pack == cs[1].Pack {
		t.Errorf("new chunk appended to the damaged pack %d at %d", nc.Pack, nc.Offset)
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.InsertDeltas(snap, []Delta{{Idx: 0, Chunk: nc.ID}}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadChunk(ctx, nil, cs[1]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("read of the lost record: %v, want corrupt", err)
	}
	if err := s.Update(ctx, func(tx *Tx) error { _, _, err := tx.ReleaseUnreferenced(); return err }); err != nil {
		t.Fatal(err) // frees the damaged chunks, punching where they were
	}
	if _, err := s.ReadChunk(ctx, nil, nc); err != nil {
		t.Fatalf("referenced chunk destroyed by another chunk's punch: %v", err)
	}
}

// TestDamagedChunkRow: a chunk row whose sizes or offset no record can have (SQLite keeps no
// checksums) reads as corrupt instead of panicking or sizing a huge buffer.
func TestDamagedChunkRow(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	good := putChunks(t, s, []byte("hello world, some chunk"))[0]
	for _, tc := range []struct {
		name   string
		damage func(*Chunk)
	}{
		{"negative stored size", func(c *Chunk) { c.StoredSize = -1 }},
		{"huge stored size", func(c *Chunk) { c.StoredSize = 1 << 40 }},
		{"stored size below a header", func(c *Chunk) { c.StoredSize = HeaderSize - 1 }},
		{"negative size", func(c *Chunk) { c.Size = -5 }},
		{"huge size", func(c *Chunk) { c.Size = 1 << 40 }},
		{"negative offset", func(c *Chunk) { c.Offset = -4096 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.damage(&c)
			if _, err := s.ReadChunk(context.Background(), nil, c); !errors.Is(err, ErrCorrupt) {
				t.Errorf("read: %v, want corrupt", err)
			}
		})
	}
	if _, err := s.ReadChunk(context.Background(), nil, good); err != nil {
		t.Errorf("the undamaged row: %v", err)
	}
}

func TestCommitMayHaveLanded(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{sqlite3.Error{Code: sqlite3.ErrIoErr, ExtendedCode: sqlite3.ErrIoErrFsync}, true},
		{sqlite3.Error{Code: sqlite3.ErrIoErr, ExtendedCode: sqlite3.ErrIoErrWrite, SystemErrno: unix.EIO}, true},
		{sqlite3.Error{Code: sqlite3.ErrFull}, false},
		{sqlite3.Error{Code: sqlite3.ErrBusy}, false},
		{sqlite3.Error{Code: sqlite3.ErrConstraint}, false},
		{context.Canceled, false},
	} {
		if got := commitMayHaveLanded(tc.err); got != tc.want {
			t.Errorf("commitMayHaveLanded(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
