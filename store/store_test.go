package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func openStore(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// putChunks stores each of datas in one transaction, unreferenced, and returns their rows.
func putChunks(t *testing.T, s *Store, datas ...[]byte) []Chunk {
	t.Helper()
	ctx := context.Background()
	var enc Encoder
	var out []Chunk
	err := s.Update(ctx, func(tx *Tx) error {
		for _, d := range datas {
			sum := Sum(d)
			id, err := tx.PutChunk(sum, len(d), enc.Encode(d, sum))
			if err != nil {
				return err
			}
			c, err := tx.ChunkByID(id)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newSnapshotRow creates a volume, a chain and one ready snapshot, and returns the snapshot's id.
func newSnapshotRow(t *testing.T, s *Store, name string) int64 {
	t.Helper()
	var id int64
	err := s.Update(context.Background(), func(tx *Tx) error {
		vid, err := tx.InsertVolume(Volume{Name: name, Kind: "data", Source: "/dev/null", Size: 1 << 20, ChunkSize: 64 << 10})
		if err != nil {
			return err
		}
		cid, err := tx.InsertChain(Chain{Name: name, VolumeID: vid, Source: "/dev/null", Region: "local", ChunkSize: 64 << 10})
		if err != nil {
			return err
		}
		seq, err := tx.TakeSeq(cid)
		if err != nil {
			return err
		}
		id, err = tx.InsertSnapshot(Snapshot{ChainID: cid, Seq: seq, Name: "s1", Volume: name, Size: 1 << 20, Status: "ready"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func stats(t *testing.T, s *Store) StoreStats {
	t.Helper()
	var st StoreStats
	if err := s.View(context.Background(), func(tx *Tx) (err error) { st, err = tx.Stats(); return err }); err != nil {
		t.Fatal(err)
	}
	return st
}

func checkMetadata(t *testing.T, s *Store) {
	t.Helper()
	err := s.View(context.Background(), func(tx *Tx) error {
		problems, err := tx.CheckMetadata()
		for _, p := range problems {
			t.Errorf("metadata: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func packFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func readBack(t *testing.T, s *Store, c Chunk, want []byte) {
	t.Helper()
	got, err := s.ReadChunk(context.Background(), nil, c)
	if err != nil {
		t.Fatalf("read chunk %d: %v", c.ID, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("chunk %d reads back other bytes", c.ID)
	}
}

func TestLockAndReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "store")
	if _, err := Open(ctx, dir, Options{ReadOnly: true}); !errors.Is(err, ErrNoStore) {
		t.Fatalf("read-only open of a missing store: %v, want ErrNoStore", err)
	}
	w := openStore(t, dir, Options{Region: "eu-test"})
	data := []byte("hello, chunk")
	c := putChunks(t, w, data)[0]

	if s2, err := Open(ctx, dir, Options{}); !errors.Is(err, ErrLocked) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("second writer: %v, want ErrLocked", err)
	}
	ro := openStore(t, dir, Options{ReadOnly: true})
	if !ro.ReadOnly() || w.ReadOnly() {
		t.Fatal("ReadOnly() is wrong")
	}
	if r, err := ro.Region(ctx); err != nil || r != "eu-test" {
		t.Fatalf("region %q, %v", r, err)
	}
	if st := stats(t, ro); st.Chunks != 1 {
		t.Fatalf("read-only store sees %d chunks", st.Chunks)
	}
	readBack(t, ro, c, data)
	if err := ro.Update(ctx, func(tx *Tx) error { return nil }); err == nil {
		t.Fatal("Update on a read-only store succeeded")
	}
	err := ro.View(ctx, func(tx *Tx) error {
		_, err := tx.PutChunk(Sum(data), len(data), make([]byte, RecordAlign))
		return err
	})
	if err == nil {
		t.Fatal("PutChunk through a read-only store succeeded")
	}
	// The failed writer left the lock alone; once the writer closes, another may open.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := openStore(t, dir, Options{Region: "ignored"})
	if r, _ := w2.Region(ctx); r != "eu-test" {
		t.Fatalf("region changed to %q on reopen", r)
	}
	readBack(t, w2, c, data)
	readBack(t, ro, c, data)
}

func TestRefsReleaseAndPunch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	rng := rand.New(rand.NewPCG(3, 4))
	var datas [][]byte
	for range 8 {
		datas = append(datas, randBytes(rng, 64<<10))
	}
	cs := putChunks(t, s, datas...)
	snap := newSnapshotRow(t, s, "v")
	err := s.Update(ctx, func(tx *Tx) error {
		var ds []Delta
		for i, c := range cs {
			ds = append(ds, Delta{Idx: int64(i), Chunk: c.ID})
		}
		ds = append(ds, Delta{Idx: 100, Chunk: cs[0].ID}, Delta{Idx: 101}) // a second use, a hole
		return tx.InsertDeltas(snap, ds)
	})
	if err != nil {
		t.Fatal(err)
	}
	checkMetadata(t, s)
	packs := packFiles(t, dir)
	if len(packs) != 1 {
		t.Fatalf("%d pack files", len(packs))
	}
	full := allocated(packs[0])
	st := stats(t, s)
	if st.Chunks != 8 || st.StoredBytes != 8*RecordLen(64<<10) || st.RawBytes != 8*64<<10 || st.Packs != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Nothing is unreferenced yet.
	err = s.Update(ctx, func(tx *Tx) error {
		n, b, err := tx.ReleaseUnreferenced()
		if n != 0 || b != 0 {
			t.Errorf("released %d chunks (%d bytes) that are referenced", n, b)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Drop every delta but those of chunk 0: seven chunks go, their blocks are punched.
	err = s.Update(ctx, func(tx *Tx) error {
		if err := tx.dropDeltas(deltaWhere{`d.snapshot_id = ? AND d.idx BETWEEN 1 AND 7`, []any{snap}}); err != nil {
			return err
		}
		n, b, err := tx.ReleaseUnreferenced()
		if n != 7 || b != 7*RecordLen(64<<10) {
			t.Errorf("released %d chunks, %d bytes; want 7, %d", n, b, 7*RecordLen(64<<10))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	checkMetadata(t, s)
	readBack(t, s, cs[0], datas[0])
	if after := allocated(packs[0]); after > full-7*RecordLen(64<<10) {
		t.Fatalf("pack holds %d allocated bytes after freeing 7 of 8 records (was %d): not punched", after, full)
	}
	if _, err := s.ReadChunk(ctx, nil, cs[3]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading a freed record: %v, want ErrCorrupt", err)
	}
	if c, err := chunkByID(s, cs[0].ID); err != nil || c.Refs != 2 {
		t.Fatalf("chunk 0: refs %d, %v", c.Refs, err)
	}
}

func chunkByID(s *Store, id int64) (c Chunk, err error) {
	err = s.View(context.Background(), func(tx *Tx) error { c, err = tx.ChunkByID(id); return err })
	return c, err
}

// errRollback makes Update roll back after appending records.
var errRollback = errors.New("roll back")

// appendUncommitted appends records in a transaction that rolls back.
func appendUncommitted(t *testing.T, s *Store, datas ...[]byte) {
	t.Helper()
	var enc Encoder
	err := s.Update(context.Background(), func(tx *Tx) error {
		for _, d := range datas {
			if _, err := tx.PutChunk(Sum(d), len(d), enc.Encode(d, Sum(d))); err != nil {
				return err
			}
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("update: %v", err)
	}
}

// appendGarbage appends records that no transaction registers, as a writer that crashed before its
// commit (and before it could give their space back) leaves them.
func appendGarbage(t *testing.T, s *Store, datas ...[]byte) {
	t.Helper()
	var enc Encoder
	for _, d := range datas {
		if _, _, err := s.chunks.Append(context.Background(), enc.Encode(d, Sum(d))); err != nil {
			t.Fatal(err)
		}
	}
	// As a writer that crashed between the sync of its records and its commit leaves them.
	if err := s.chunks.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestRolledBackAppendsFreed checks that a transaction that fails after appending records gives their
// space back at once and leaves nothing visible.
func TestRolledBackAppendsFreed(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	rng := rand.New(rand.NewPCG(1, 6))
	keep := randBytes(rng, 64<<10)
	c := putChunks(t, s, keep)[0]
	pack := packFiles(t, dir)[0]
	before := allocated(pack)
	appendUncommitted(t, s, randBytes(rng, 64<<10), randBytes(rng, 64<<10))
	// A transaction that fails inside PutChunk (the chunk exists) after appending the record.
	var enc Encoder
	err := s.Update(context.Background(), func(tx *Tx) error {
		_, err := tx.PutChunk(Sum(keep), len(keep), enc.Encode(keep, Sum(keep)))
		return err
	})
	if err == nil {
		t.Fatal("PutChunk of a stored chunk succeeded")
	}
	if a := allocated(pack); a > before {
		t.Errorf("rolled-back records still hold %d bytes", a-before)
	}
	if st := stats(t, s); st.Chunks != 1 {
		t.Errorf("rolled-back chunks are visible: %+v", st)
	}
	readBack(t, s, c, keep)
	d := randBytes(rng, 1000)
	c2 := putChunks(t, s, d)[0]
	readBack(t, s, c2, d)
	readBack(t, s, c, keep)
	checkMetadata(t, s)
}

func TestReclaimTailAndOrphans(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	rng := rand.New(rand.NewPCG(5, 6))
	keep := randBytes(rng, 64<<10)
	c := putChunks(t, s, keep)[0]
	snap := newSnapshotRow(t, s, "v")
	if err := s.Update(ctx, func(tx *Tx) error { return tx.InsertDeltas(snap, []Delta{{Idx: 0, Chunk: c.ID}}) }); err != nil {
		t.Fatal(err)
	}
	var garbage [][]byte
	for range 10 {
		garbage = append(garbage, randBytes(rng, 64<<10))
	}
	appendGarbage(t, s, garbage...)
	pack := packFiles(t, dir)[0]
	rec := RecordLen(64 << 10)
	if a := allocated(pack); a < 11*rec {
		t.Fatalf("pack holds %d allocated bytes, want at least %d", a, 11*rec)
	}
	if st := stats(t, s); st.Chunks != 1 {
		t.Fatalf("rolled-back chunks are visible: %+v", st)
	}
	// An orphan pack file the metadata does not know, and an unreferenced chunk.
	orphan := filepath.Join(dir, "packs", "0000000099.pack")
	if err := os.WriteFile(orphan, bytes.Repeat([]byte{1}, 3*RecordAlign), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := putChunks(t, s, randBytes(rng, 64<<10))[0]

	rs, err := s.Reclaim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reclaim: %+v", rs)
	if rs.ChunksFreed != 1 || rs.RemovedPacks != 1 {
		t.Errorf("reclaim %+v: want 1 chunk freed and 1 pack removed", rs)
	}
	if want := 10*rec + 3*RecordAlign; rs.ReclaimedBytes != want {
		t.Errorf("reclaimed %d bytes, want %d (the garbage and the orphan)", rs.ReclaimedBytes, want)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan pack still there: %v", err)
	}
	if a := allocated(pack); a > rec {
		t.Errorf("pack holds %d allocated bytes after reclaim, its one record %d", a, rec)
	}
	if _, err := chunkByID(s, loose.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("unreferenced chunk survived reclaim: %v", err)
	}
	readBack(t, s, c, keep)
	checkMetadata(t, s)

	// A second reclaim finds nothing.
	if rs, err := s.Reclaim(ctx); err != nil || rs != (ReclaimStats{}) {
		t.Errorf("second reclaim: %+v, %v", rs, err)
	}
	// The store goes on appending after the reclaimed tail.
	more := randBytes(rng, 20000)
	c2 := putChunks(t, s, more)[0]
	readBack(t, s, c2, more)
	readBack(t, s, c, keep)
}

// TestRestartPunchesUncommittedTail checks that what an interrupted writer left past the last
// committed record of the newest pack is returned to the filesystem when the next process appends to
// that pack, and that the new records go after it: bytes there that a committed delete freed may
// still be waiting for that delete's punch, which must not hit a new record.
func TestRestartPunchesUncommittedTail(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 9))
	a := randBytes(rng, 30000)
	ca := putChunks(t, s, a)[0]
	appendGarbage(t, s, randBytes(rng, 64<<10), randBytes(rng, 64<<10))
	pack := packFiles(t, dir)[0]
	end := ca.Offset + ca.StoredSize
	tail := fileSize(t, pack)
	if tail <= end+8192 {
		t.Fatal("no uncommitted tail to punch")
	}
	s.Close()

	s = openStore(t, dir, Options{})
	b := randBytes(rng, 30000)
	cb := putChunks(t, s, b)[0]
	if cb.Pack != ca.Pack || cb.Offset != tail {
		t.Fatalf("new record at pack %d offset %d, want pack %d offset %d", cb.Pack, cb.Offset, ca.Pack, tail)
	}
	const block = 4096
	from, to := (end+block-1)/block*block, tail/block*block
	if data := seekData(t, pack, from); data < to {
		t.Fatalf("the uncommitted tail [%d, %d) still holds data at %d", end, tail, data)
	}
	readBack(t, s, ca, a)
	readBack(t, s, cb, b)
	checkMetadata(t, s)
}

// seekData returns the first offset at or after off that holds data in the file at path.
func seekData(t *testing.T, path string, off int64) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if err != nil {
		t.Fatalf("seek data in %s from %d: %v", path, off, err)
	}
	return n
}

// TestEmptyPackRemoved checks that a pack whose last chunk is freed disappears, row and file, unless
// it is being appended to.
func TestEmptyPackRemoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(10, 11))
	putChunks(t, s, randBytes(rng, 10000), randBytes(rng, 10000))
	release := func(s *Store) {
		t.Helper()
		err := s.Update(ctx, func(tx *Tx) error { _, _, err := tx.ReleaseUnreferenced(); return err })
		if err != nil {
			t.Fatal(err)
		}
	}
	// The pack this process appends to stays, punched.
	release(s)
	files := packFiles(t, dir)
	if len(files) != 1 || allocated(files[0]) != 0 {
		t.Fatalf("current pack: files %v, allocated %d", files, allocated(files[0]))
	}
	putChunks(t, s, randBytes(rng, 10000))
	s.Close()

	// Another process frees the pack's chunks without appending: the pack goes.
	s = openStore(t, dir, Options{})
	release(s)
	if files := packFiles(t, dir); len(files) != 0 {
		t.Fatalf("empty pack not removed: %v", files)
	}
	if st := stats(t, s); st != (StoreStats{}) {
		t.Fatalf("stats %+v", st)
	}
	checkMetadata(t, s)
	// And appending starts a new one.
	d := randBytes(rng, 10000)
	c := putChunks(t, s, d)[0]
	readBack(t, s, c, d)
	checkMetadata(t, s)
}

func TestCorruptPackDetected(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	rng := rand.New(rand.NewPCG(12, 13))
	d1, d2 := randBytes(rng, 16<<10), bytes.Repeat([]byte("compressible "), 2000)
	cs := putChunks(t, s, d1, d2)
	pack := packFiles(t, dir)[0]
	f, err := os.OpenFile(pack, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Flip one payload byte of the first record: its read fails, the other still reads.
	var b [1]byte
	off := cs[0].Offset + HeaderSize + 5000
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadChunk(ctx, nil, cs[0]); !errors.Is(err, ErrCorrupt) || got != nil {
		t.Fatalf("corrupt record: %v (%d bytes)", err, len(got))
	}
	readBack(t, s, cs[1], d2)
	// Cut the pack inside the second record.
	if err := f.Truncate(cs[1].Offset + 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadChunk(ctx, nil, cs[1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated record: %v", err)
	}
	// Metadata that points one chunk at the other's record.
	wrong := cs[0]
	wrong.Offset = cs[1].Offset
	if _, err := s.ReadChunk(ctx, nil, wrong); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("record of another chunk: %v", err)
	}
}

func TestCheckMetadataFindsProblems(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir(), Options{})
	rng := rand.New(rand.NewPCG(14, 15))
	cs := putChunks(t, s, randBytes(rng, 5000), randBytes(rng, 5000))
	snap := newSnapshotRow(t, s, "v")
	if err := s.Update(ctx, func(tx *Tx) error {
		return tx.InsertDeltas(snap, []Delta{{Idx: 0, Chunk: cs[0].ID}, {Idx: 1, Chunk: cs[1].ID}})
	}); err != nil {
		t.Fatal(err)
	}
	checkMetadata(t, s)
	for _, q := range []string{
		`UPDATE chunks SET refs = refs + 1 WHERE id = ` + fmt.Sprint(cs[0].ID),
		`UPDATE packs SET live_bytes = live_bytes - 1`,
		`UPDATE chunks SET offset = offset + 4096 WHERE id = ` + fmt.Sprint(cs[0].ID),
	} {
		if err := s.Update(ctx, func(tx *Tx) error { _, err := tx.exec(q); return err }); err != nil {
			t.Fatal(err)
		}
	}
	var problems []string
	err := s.View(ctx, func(tx *Tx) (err error) { problems, err = tx.CheckMetadata(); return err })
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 3 {
		t.Fatalf("found %d problems, want 3: %q", len(problems), problems)
	}
}

// TestPackRoll fills a pack past PackRollSize: appending moves on to a new pack, the full one goes
// once its chunks are freed, and a new process goes on appending to the newest pack.
func TestPackRoll(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 70 MiB")
	}
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{9})
	chunk := func() []byte {
		b := make([]byte, MaxChunkSize)
		rng.Read(b)
		return b
	}
	per := PackRollSize / RecordLen(MaxChunkSize) // whole records that fit in one pack
	var datas [][]byte
	var cs []Chunk
	for range per + 2 {
		d := chunk()
		datas = append(datas, d)
		cs = append(cs, putChunks(t, s, d)[0])
	}
	for i, c := range cs {
		want := int64(1)
		if int64(i) >= per {
			want = 2
		}
		if c.Pack != want {
			t.Fatalf("chunk %d went to pack %d, want %d", i, c.Pack, want)
		}
	}
	if st := stats(t, s); st.Packs != 2 {
		t.Fatalf("%d packs", st.Packs)
	}
	readBack(t, s, cs[0], datas[0])
	readBack(t, s, cs[per], datas[per])
	// Free the first pack's chunks: it is not appended to any more, so it goes.
	snap := newSnapshotRow(t, s, "v")
	err = s.Update(ctx, func(tx *Tx) error {
		return tx.InsertDeltas(snap, []Delta{{Idx: 0, Chunk: cs[per].ID}, {Idx: 1, Chunk: cs[per+1].ID}})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx *Tx) error { _, _, err := tx.ReleaseUnreferenced(); return err })
	if err != nil {
		t.Fatal(err)
	}
	if files := packFiles(t, dir); len(files) != 1 || filepath.Base(files[0]) != "0000000002.pack" {
		t.Fatalf("pack files %v, want only pack 2", files)
	}
	checkMetadata(t, s)
	s.Close()
	// A new process appends to pack 2, which has room.
	s = openStore(t, dir, Options{})
	d := chunk()
	c := putChunks(t, s, d)[0]
	if c.Pack != 2 || c.Offset != 2*RecordLen(MaxChunkSize) {
		t.Fatalf("new chunk at pack %d offset %d", c.Pack, c.Offset)
	}
	readBack(t, s, c, d)
	readBack(t, s, cs[per+1], datas[per+1])
	checkMetadata(t, s)
}

// TestPutChunks stores a batch with chunks repeated inside it and chunks the store holds already.
func TestPutChunks(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir(), Options{})
	rng := rand.New(rand.NewPCG(20, 21))
	a, b, c := randBytes(rng, 5000), randBytes(rng, 6000), randBytes(rng, 7000)
	old := putChunks(t, s, a)[0]
	var enc Encoder
	item := func(d []byte) NewChunk {
		return NewChunk{Hash: Sum(d), Size: len(d), Rec: append([]byte(nil), enc.Encode(d, Sum(d))...)}
	}
	var ids []int64
	err := s.Update(ctx, func(tx *Tx) (err error) {
		ids, err = tx.PutChunks([]NewChunk{item(b), item(a), item(b), item(c), item(c), item(a)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 6 || ids[1] != old.ID || ids[5] != old.ID || ids[0] != ids[2] || ids[3] != ids[4] || ids[0] == ids[3] {
		t.Fatalf("ids %v (a is %d)", ids, old.ID)
	}
	if st := stats(t, s); st.Chunks != 3 || st.StoredBytes != 3*RecordLen(6000) {
		t.Fatalf("stats %+v", st)
	}
	for _, x := range []struct {
		id   int64
		data []byte
	}{{ids[0], b}, {ids[1], a}, {ids[3], c}} {
		ch, err := chunkByID(s, x.id)
		if err != nil || ch.Refs != 0 {
			t.Fatalf("chunk %d: %+v, %v", x.id, ch, err)
		}
		readBack(t, s, ch, x.data)
	}
	checkMetadata(t, s)
	// A batch that rolls back leaves nothing and gives its space back.
	err = s.Update(ctx, func(tx *Tx) error {
		if _, err := tx.PutChunks([]NewChunk{item(randBytes(rng, 9000)), item(randBytes(rng, 9000))}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	if st := stats(t, s); st.Chunks != 3 {
		t.Fatalf("rolled-back batch: %+v", st)
	}
	checkMetadata(t, s)
}

// TestHeld: Held says which hashes name stored chunks, in groups longer and shorter than one
// statement's, and a first call whose context is cancelled does not fail the later ones.
func TestHeld(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	var stored, absent []Hash
	var datas [][]byte
	for i := range 40 {
		d := bytes.Repeat([]byte{byte(i + 1)}, 1000+i)
		if i%3 == 0 {
			absent = append(absent, Sum(d))
			continue
		}
		datas = append(datas, d)
		stored = append(stored, Sum(d))
	}
	putChunks(t, s, datas...)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Held(cancelled, stored[:1]); err == nil {
		t.Error("Held with a cancelled context succeeded")
	}
	for _, n := range []int{0, 1, heldGroup - 1, heldGroup, heldGroup + 1, len(stored)} {
		ask := append(slices.Clone(stored[:n]), absent...)
		held, err := s.Held(context.Background(), ask)
		if err != nil {
			t.Fatalf("%d stored hashes: %v", n, err)
		}
		if len(held) != n {
			t.Errorf("%d stored and %d absent hashes: %d held", n, len(absent), len(held))
		}
		for _, h := range stored[:n] {
			if !held[h] {
				t.Errorf("%s not held", h)
			}
		}
	}
}

// TestPutChunksWithoutRecords: an item without a record takes the id of the stored chunk, or of
// another item's record in the same call, wherever that item stands; with neither, ErrNoRecord and
// nothing stored.
func TestPutChunksWithoutRecords(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	old := putChunks(t, s, []byte("stored before"))[0]
	fresh := []byte("stored in the same call")
	var enc Encoder
	freshSum := Sum(fresh)
	var ids []int64
	err := s.Update(context.Background(), func(tx *Tx) (err error) {
		ids, err = tx.PutChunks([]NewChunk{
			{Hash: freshSum, Size: len(fresh)}, // its record comes after it
			{Hash: old.Hash, Size: int(old.Size)},
			{Hash: freshSum, Size: len(fresh), Rec: bytes.Clone(enc.Encode(fresh, freshSum))},
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if ids[0] != ids[2] || ids[1] != old.ID || ids[0] == old.ID {
		t.Fatalf("ids %v, stored chunk %d", ids, old.ID)
	}
	before := stats(t, s)
	missing := []byte("never stored")
	err = s.Update(context.Background(), func(tx *Tx) error {
		_, err := tx.PutChunks([]NewChunk{{Hash: Sum(missing), Size: len(missing)}})
		return err
	})
	if !errors.Is(err, ErrNoRecord) {
		t.Fatalf("a chunk without a record nobody stored: %v", err)
	}
	if after := stats(t, s); after != before {
		t.Fatalf("a failed PutChunks changed the store: %+v then %+v", before, after)
	}
}
