package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/snapfs/snapfs/store"
	"golang.org/x/sys/unix"
)

const testChunk = MinChunkSize // 16 KiB: many chunks in a small disk

// unit is a store with one or more image-file disks, for the chain unit tests.
type unit struct {
	t   *testing.T
	ctx context.Context
	dir string
	m   *Manager
	rng *rand.Rand
}

func newUnit(t *testing.T, opts Options) *unit {
	t.Helper()
	dir := t.TempDir()
	m, err := Open(context.Background(), filepath.Join(dir, "store"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &unit{t: t, ctx: context.Background(), dir: dir, m: m, rng: rand.New(rand.NewPCG(uint64(len(t.Name())), 99))}
}

// disk creates a sparse disk file of size bytes and registers it as volume name.
func (u *unit) disk(name string, size int64) string {
	u.t.Helper()
	path := filepath.Join(u.dir, name+".img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		u.t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		u.t.Fatal(err)
	}
	if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: name, Source: path, ChunkSize: testChunk}); err != nil {
		u.t.Fatal(err)
	}
	return path
}

func (u *unit) random(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(u.rng.Uint32())
	}
	return b
}

func (u *unit) write(path string, off int64, data []byte) {
	u.t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		u.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		u.t.Fatal(err)
	}
}

// touch writes 100 random bytes into each of the given chunks, within the disk's size.
func (u *unit) touch(path string, chunks ...int64) {
	u.t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		u.t.Fatal(err)
	}
	for _, c := range chunks {
		room := min(testChunk, fi.Size()-c*testChunk) - 100
		if room < 0 {
			u.t.Fatalf("chunk %d is not in the disk", c)
		}
		u.write(path, c*testChunk+u.rng.Int64N(room+1), u.random(100))
	}
}

// allocatedBytes is the space a file's blocks take (st_blocks).
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func (u *unit) read(path string) []byte {
	u.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		u.t.Fatal(err)
	}
	return b
}

func (u *unit) snap(vol, name string) Snapshot {
	u.t.Helper()
	s, err := u.m.CreateSnapshot(u.ctx, vol, CreateOptions{Name: name})
	if err != nil {
		u.t.Fatalf("snapshot %s: %v", vol, err)
	}
	return s
}

func (u *unit) image(ref string) []byte {
	u.t.Helper()
	im, err := u.m.OpenImage(u.ctx, ref)
	if err != nil {
		u.t.Fatalf("open %s: %v", ref, err)
	}
	defer im.Close()
	return readAll(u.t, im)
}

// damageChunk overwrites two bytes of the stored payload of the chunk holding data, at at within
// it, and returns the chunk.
func (u *unit) damageChunk(data []byte, at int64) store.Chunk {
	u.t.Helper()
	var c store.Chunk
	err := u.m.Store().View(u.ctx, func(tx *store.Tx) (err error) { c, err = tx.ChunkByHash(store.Sum(data)); return err })
	if err != nil {
		u.t.Fatal(err)
	}
	pack := filepath.Join(u.m.Store().Dir(), "packs", fmt.Sprintf("%010d.pack", c.Pack))
	f, err := os.OpenFile(pack, os.O_RDWR, 0)
	if err != nil {
		u.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{0xde, 0xad}, c.Offset+store.HeaderSize+at); err != nil {
		u.t.Fatal(err)
	}
	return c
}

func readAll(t *testing.T, im *Image) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(im, 0, im.Size()))
	if err != nil {
		t.Fatalf("read %s: %v", im.Info().Ref(), err)
	}
	return b
}

func (u *unit) stats() store.StoreStats {
	u.t.Helper()
	var st store.StoreStats
	err := u.m.Store().View(u.ctx, func(tx *store.Tx) (err error) { st, err = tx.Stats(); return err })
	if err != nil {
		u.t.Fatal(err)
	}
	return st
}

func (u *unit) verify() {
	u.t.Helper()
	rep, err := u.m.Verify(u.ctx, nil, nil)
	if err != nil {
		u.t.Fatal(err)
	}
	for _, f := range rep.Faults {
		u.t.Errorf("verify: %+v", f)
	}
}

func (u *unit) names(chain string) []string {
	u.t.Helper()
	ss, err := u.m.Snapshots(u.ctx, chain)
	if err != nil {
		u.t.Fatal(err)
	}
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

// distinctChunks counts the distinct non-zero chunk contents of images, as the store should hold them.
func distinctChunks(images ...[]byte) int64 {
	seen := map[string]bool{}
	for _, img := range images {
		for off := 0; off < len(img); off += testChunk {
			c := img[off:min(off+testChunk, len(img))]
			if !allZero(c) {
				seen[string(c)] = true
			}
		}
	}
	return int64(len(seen))
}

func TestDefaultSnapshotNames(t *testing.T) {
	u := newUnit(t, Options{})
	u.disk("vol", 1<<20)
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.Local)
	now := func() time.Time { return at }
	var got []string
	for range 3 {
		s, err := u.m.CreateSnapshot(u.ctx, "vol", CreateOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s.Name)
		if !s.Created.Equal(at) {
			t.Errorf("created %v, want %v", s.Created, at)
		}
	}
	want := []string{"vol-20240102-030405", "vol-20240102-030405-2", "vol-20240102-030405-3"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("names %q, want %q", got, want)
	}
	// A freed name is taken again.
	if _, err := u.m.DeleteSnapshot(u.ctx, "vol/vol-20240102-030405-2"); err != nil {
		t.Fatal(err)
	}
	if s, err := u.m.CreateSnapshot(u.ctx, "vol", CreateOptions{Now: now}); err != nil || s.Name != want[1] {
		t.Fatalf("after freeing -2: %q, %v", s.Name, err)
	}
	at = at.Add(time.Second)
	if s, err := u.m.CreateSnapshot(u.ctx, "vol", CreateOptions{Now: now}); err != nil || s.Name != "vol-20240102-030406" {
		t.Fatalf("a second later: %q, %v", s.Name, err)
	}
	if _, err := u.m.CreateSnapshot(u.ctx, "vol", CreateOptions{Name: "vol-20240102-030406"}); !errors.Is(err, ErrExists) {
		t.Fatalf("explicit taken name: %v, want ErrExists", err)
	}
	if _, err := u.m.CreateSnapshot(u.ctx, "vol", CreateOptions{Name: "../x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid name: %v, want ErrInvalid", err)
	}
	if _, err := u.m.CreateSnapshot(u.ctx, "nosuch", CreateOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown volume: %v, want ErrNotFound", err)
	}
	if n := len(u.names("vol")); n != 4 {
		t.Fatalf("%d snapshots, want 4", n)
	}
}

// TestDefaultNameOfLongVolume checks that the default name of a snapshot of a volume whose name is
// near the limit is still a valid name, so that the snapshot can be named in a reference.
func TestDefaultNameOfLongVolume(t *testing.T) {
	u := newUnit(t, Options{})
	vol := strings.Repeat("v", 128)
	u.disk(vol, 1<<20)
	now := func() time.Time { return time.Date(2024, 1, 2, 3, 4, 5, 0, time.Local) }
	var refs []string
	for range 3 {
		s, err := u.m.CreateSnapshot(u.ctx, vol, CreateOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateName(s.Name); err != nil {
			t.Fatalf("default snapshot name %q: %v", s.Name, err)
		}
		want := "-20240102-030405"
		if len(refs) > 0 {
			want += fmt.Sprintf("-%d", len(refs)+1)
		}
		if !strings.HasSuffix(s.Name, want) || !strings.HasPrefix(s.Name, "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv") {
			t.Fatalf("default snapshot name %q, want the volume's name cut short and %s", s.Name, want)
		}
		refs = append(refs, s.Ref())
	}
	for _, ref := range refs {
		if _, err := u.m.DeleteSnapshot(u.ctx, ref); err != nil {
			t.Fatalf("delete %s: %v", ref, err)
		}
	}
}

// failedSnapshot runs a snapshot of vol whose Progress callback calls hit on its first call, and checks
// that it fails and leaves the store as it was.
func (u *unit) failedSnapshot(vol string, hit func(), wantErr func(error) bool) {
	u.t.Helper()
	before := u.stats()
	names := u.names("")
	chains, _ := u.m.Chains(u.ctx)
	calls := 0
	_, err := u.m.CreateSnapshot(u.ctx, vol, CreateOptions{Name: "doomed", Progress: func(done, total int64) {
		calls++
		if calls == 1 {
			hit()
		}
	}})
	if err == nil || !wantErr(err) {
		u.t.Fatalf("snapshot: %v", err)
	}
	u.t.Logf("failed as expected: %v", err)
	if calls == 0 {
		u.t.Fatal("Progress was never called")
	}
	if got := u.names(""); fmt.Sprint(got) != fmt.Sprint(names) {
		u.t.Fatalf("snapshots %q after the failure, want %q", got, names)
	}
	if _, err := u.m.Snapshot(u.ctx, vol+"/doomed"); !errors.Is(err, ErrNotFound) {
		u.t.Fatalf("failed snapshot resolves: %v", err)
	}
	if after := u.stats(); after.Chunks != before.Chunks || after.StoredBytes != before.StoredBytes {
		u.t.Fatalf("store %+v after the failure, %+v before", after, before)
	}
	if cs, _ := u.m.Chains(u.ctx); len(cs) != len(chains) {
		u.t.Fatalf("%d chains after the failure, %d before", len(cs), len(chains))
	}
	var creating []store.Snapshot
	u.m.Store().View(u.ctx, func(tx *store.Tx) (err error) {
		creating, err = tx.SnapshotsWithStatus(StatusCreating)
		return err
	})
	if len(creating) != 0 {
		u.t.Fatalf("snapshot rows left creating: %+v", creating)
	}
	u.verify()
}

func TestShrinkDuringSnapshot(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("vol", 3<<20)
	u.write(path, 0, u.random(3<<20))
	shrink := func() {
		if err := os.Truncate(path, 3<<19); err != nil {
			t.Fatal(err)
		}
	}
	shrank := func(err error) bool { return strings.Contains(err.Error(), "shrank") }
	// The first snapshot of the volume: nothing at all may stay, not even the chain.
	u.failedSnapshot("vol", shrink, shrank)
	if st := u.stats(); st.Chunks != 0 {
		t.Fatalf("chunks stored: %+v", st)
	}
	packsEmpty(t, u.m)
	// A later snapshot: the earlier one is intact.
	u.write(path, 0, u.random(3<<20))
	want := u.read(path)
	first := u.snap("vol", "first")
	u.write(path, 1<<20, u.random(1<<20))
	u.failedSnapshot("vol", shrink, shrank)
	if !bytes.Equal(u.image(first.Ref()), want) {
		t.Fatal("first snapshot changed")
	}
	if st := u.stats(); st.Chunks != distinctChunks(want) {
		t.Fatalf("%d chunks stored, the first snapshot has %d", st.Chunks, distinctChunks(want))
	}
	// The shrunk disk snapshots fine now, as a smaller disk.
	small := u.read(path)
	s := u.snap("vol", "small")
	if s.Size != 3<<19 || !bytes.Equal(u.image(s.Ref()), small) {
		t.Fatalf("snapshot of the shrunk disk: size %d", s.Size)
	}
}

func TestCancelDuringSnapshot(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("vol", 3<<20)
	u.write(path, 0, u.random(3<<20))
	var cancel context.CancelFunc
	run := func() {
		ctx, c := context.WithCancel(context.Background())
		cancel = c
		before := u.stats()
		calls := 0
		_, err := u.m.CreateSnapshot(ctx, "vol", CreateOptions{Name: "doomed", Progress: func(done, total int64) {
			if calls++; calls == 1 {
				cancel()
			}
		}})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled snapshot: %v", err)
		}
		if names := u.names(""); len(names) > 0 && names[len(names)-1] == "doomed" {
			t.Fatal("cancelled snapshot is listed")
		}
		if after := u.stats(); after.Chunks != before.Chunks || after.StoredBytes != before.StoredBytes {
			t.Fatalf("store %+v after the cancel, %+v before", after, before)
		}
		u.verify()
	}
	run()
	if cs, _ := u.m.Chains(u.ctx); len(cs) != 0 {
		t.Fatalf("chains left: %+v", cs)
	}
	packsEmpty(t, u.m)
	want := u.read(path)
	first := u.snap("vol", "first")
	u.write(path, 0, u.random(3<<20))
	run()
	if !bytes.Equal(u.image(first.Ref()), want) {
		t.Fatal("first snapshot changed")
	}
	// A chain whose snapshots were all deleted stays when a snapshot of it fails.
	if _, err := u.m.DeleteSnapshot(u.ctx, first.Ref()); err != nil {
		t.Fatal(err)
	}
	run()
	if c, err := u.m.Chain(u.ctx, "vol"); err != nil || c.Snapshots != 0 || c.Volume != "vol" {
		t.Fatalf("emptied chain after a failed snapshot: %+v, %v", c, err)
	}
	first = u.snap("vol", "first")
	if first.Seq != 4 {
		t.Fatalf("snapshot seq %d, want 4 (the chain goes on)", first.Seq)
	}
	// A context cancelled before the call fails at once.
	ctx, c := context.WithCancel(context.Background())
	c()
	if _, err := u.m.CreateSnapshot(ctx, "vol", CreateOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("snapshot with a cancelled context: %v", err)
	}
	if n := len(u.names("vol")); n != 1 {
		t.Fatalf("%d snapshots, want 1", n)
	}
}

// packsEmpty checks that the store's pack files hold no allocated data.
func packsEmpty(t *testing.T, m *Manager) {
	t.Helper()
	if n := packAllocated(t, m); n > 0 {
		t.Fatalf("pack files hold %d allocated bytes", n)
	}
}

func packAllocated(t *testing.T, m *Manager) int64 {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(m.Store().Dir(), "packs", "*.pack"))
	var n int64
	for _, f := range files {
		n += allocatedBytes(t, f)
	}
	return n
}

func TestImageSeekDataHole(t *testing.T) {
	u := newUnit(t, Options{})
	const cs = testChunk
	size := int64(20*cs + 5000)
	path := u.disk("vol", size)
	u.write(path, 3*cs, u.random(2*cs))                  // chunks 3 and 4
	u.write(path, 7*cs, make([]byte, cs))                // written zeros: a hole all the same
	u.write(path, 10*cs+100, []byte("x"))                // one byte in chunk 10
	u.write(path, 20*cs+4000, []byte("end of the disk")) // the short last chunk
	s := u.snap("vol", "s")
	im, err := u.m.OpenImage(u.ctx, s.Ref())
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.Size() != size || im.ChunkSize() != cs {
		t.Fatalf("size %d chunk %d", im.Size(), im.ChunkSize())
	}
	for _, tc := range []struct {
		off    int64
		data   int64
		ok     bool
		hole   int64
		reason string
	}{
		{0, 3 * cs, true, 0, "start"},
		{-5, 3 * cs, true, 0, "negative offset"},
		{3 * cs, 3 * cs, true, 5 * cs, "start of data"},
		{3*cs + 7, 3*cs + 7, true, 5 * cs, "inside data"},
		{5*cs - 1, 5*cs - 1, true, 5 * cs, "last data byte"},
		{5 * cs, 10 * cs, true, 5 * cs, "after data"},
		{7 * cs, 10 * cs, true, 7 * cs, "written zeros"},
		{10 * cs, 10 * cs, true, 11 * cs, "chunk with one byte"},
		{11 * cs, 20 * cs, true, 11 * cs, "before the last chunk"},
		{20 * cs, 20 * cs, true, size, "last chunk"},
		{size - 1, size - 1, true, size, "last byte"},
	} {
		pos, ok := im.SeekData(tc.off)
		if ok != tc.ok || ok && pos != tc.data {
			t.Errorf("%s: SeekData(%d) = %d, %v; want %d, %v", tc.reason, tc.off, pos, ok, tc.data, tc.ok)
		}
		if h := im.SeekHole(tc.off); h != tc.hole {
			t.Errorf("%s: SeekHole(%d) = %d, want %d", tc.reason, tc.off, h, tc.hole)
		}
	}
	// At and past the end there is no data.
	for _, off := range []int64{size, size + 1, 21 * cs, 1 << 40} {
		if pos, ok := im.SeekData(off); ok {
			t.Errorf("SeekData(%d) past the end = %d, true", off, pos)
		}
	}
	// Reading agrees with the map.
	img := readAll(t, im)
	if !bytes.Equal(img, u.read(path)) {
		t.Fatal("image differs from the disk")
	}
	for off := int64(0); off < size; off += cs {
		pos, ok := im.SeekData(off)
		end := min(off+cs, size)
		if has := !allZero(img[off:end]); has != (ok && pos < end) {
			t.Errorf("chunk at %d: data %v, SeekData %d %v", off, has, pos, ok)
		}
	}

	// A disk of holes only.
	u.disk("sparse", 1<<20+1)
	s2 := u.snap("sparse", "s")
	im2, err := u.m.OpenImage(u.ctx, s2.Ref())
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	if pos, ok := im2.SeekData(0); ok {
		t.Errorf("sparse disk: SeekData(0) = %d, true", pos)
	}
	if h := im2.SeekHole(12345); h != 12345 {
		t.Errorf("sparse disk: SeekHole(12345) = %d", h)
	}
	if st := u.stats(); st.Chunks != 4 {
		t.Errorf("%d chunks stored, want 4", st.Chunks)
	}
}

// TestImageReadAt checks reads of every alignment, at the end and past it.
func TestImageReadAt(t *testing.T) {
	u := newUnit(t, Options{CacheBytes: 1})
	size := int64(5*testChunk + 333)
	path := u.disk("vol", size)
	u.write(path, 0, u.random(int(size)))
	u.write(path, 2*testChunk, make([]byte, testChunk))
	want := u.read(path)
	s := u.snap("vol", "s")
	im, err := u.m.OpenImage(u.ctx, s.Ref())
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for range 300 {
		off := u.rng.Int64N(size + 10)
		n := u.rng.IntN(3 * testChunk)
		buf := make([]byte, n)
		got, err := im.ReadAt(buf, off)
		wantN := int(max(0, min(int64(n), size-off)))
		if got != wantN || !bytes.Equal(buf[:got], want[min(off, size):min(off, size)+int64(got)]) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v: wrong bytes", n, off, got, err)
		}
		if wantN < n && !errors.Is(err, io.EOF) || wantN == n && err != nil {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, got, err)
		}
	}
	if _, err := im.ReadAt(make([]byte, 1), -1); err == nil {
		t.Fatal("negative offset read")
	}
}

// TestDeleteWhileImageOpen deletes snapshots (middle and newest) that an image reads: they disappear
// from lists and references at once, the image keeps reading them, and their chunks go at Close.
func TestDeleteWhileImageOpen(t *testing.T) {
	u := newUnit(t, Options{CacheBytes: 1}) // no cache: reads go to the packs
	path := u.disk("vol", 2<<20+4321)
	var states [][]byte
	var snaps []Snapshot
	for i := range 4 {
		if i == 0 {
			u.write(path, 0, u.random(2<<20+4321))
		} else {
			u.touch(path, 1, 11, int64(60+i)) // chunks 1 and 11 override the previous snapshot's
		}
		states = append(states, u.read(path))
		snaps = append(snaps, u.snap("vol", fmt.Sprintf("s%d", i)))
	}
	for _, victim := range []int{1, 3} { // a middle snapshot, then the newest
		im, err := u.m.OpenImage(u.ctx, snaps[victim].Ref())
		if err != nil {
			t.Fatal(err)
		}
		before := u.stats()
		ds, err := u.m.DeleteSnapshot(u.ctx, snaps[victim].Ref())
		if err != nil {
			t.Fatal(err)
		}
		if !ds.Deferred || ds.FreedChunks != 0 {
			t.Fatalf("delete of an open snapshot: %+v", ds)
		}
		for _, n := range u.names("vol") {
			if n == snaps[victim].Name {
				t.Fatalf("deleted snapshot %s still listed", n)
			}
		}
		for _, ref := range []string{snaps[victim].Ref(), fmt.Sprint(snaps[victim].ID)} {
			if _, err := u.m.OpenImage(u.ctx, ref); !errors.Is(err, ErrNotFound) {
				t.Fatalf("open of a deleted snapshot %s: %v", ref, err)
			}
			if _, err := u.m.Snapshot(u.ctx, ref); !errors.Is(err, ErrNotFound) {
				t.Fatalf("lookup of a deleted snapshot %s: %v", ref, err)
			}
			if _, err := u.m.DeleteSnapshot(u.ctx, ref); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second delete %s: %v", ref, err)
			}
			if _, err := u.m.Restore(u.ctx, ref, RestoreOptions{To: filepath.Join(u.dir, "r.img")}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("restore of a deleted snapshot %s: %v", ref, err)
			}
		}
		if after := u.stats(); after != before {
			t.Fatalf("store %+v while the image is open, %+v before", after, before)
		}
		if !bytes.Equal(readAll(t, im), states[victim]) {
			t.Fatal("open image of the deleted snapshot reads wrong")
		}
		// The other snapshots read right.
		var live [][]byte
		for i, s := range snaps {
			if i == victim || i == 1 {
				continue
			}
			if !bytes.Equal(u.image(s.Ref()), states[i]) {
				t.Fatalf("%s reads wrong", s.Ref())
			}
			live = append(live, states[i])
		}
		if !bytes.Equal(readAll(t, im), states[victim]) {
			t.Fatal("open image of the deleted snapshot reads wrong")
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if st := u.stats(); st.Chunks != distinctChunks(live...) || st.Chunks >= before.Chunks {
			t.Fatalf("after Close: %d chunks, the live snapshots have %d (%d before)", st.Chunks, distinctChunks(live...), before.Chunks)
		}
		u.verify()
	}
}

// TestDeferredDeleteDuringCreate finishes a deferred delete of the newest snapshot (its image is
// closed) while the next snapshot, made against it, is being created.
func TestDeferredDeleteDuringCreate(t *testing.T) {
	u := newUnit(t, Options{CacheBytes: 1})
	path := u.disk("vol", 3<<20)
	u.write(path, 0, u.random(3<<20))
	s1 := u.snap("vol", "s1")
	u.touch(path, 1, 5, 9, 100, 150)
	s2 := u.snap("vol", "s2")
	im, err := u.m.OpenImage(u.ctx, s2.Ref())
	if err != nil {
		t.Fatal(err)
	}
	if ds, err := u.m.DeleteSnapshot(u.ctx, s2.Ref()); err != nil || !ds.Deferred {
		t.Fatalf("delete: %+v, %v", ds, err)
	}
	u.touch(path, 2)
	want3 := u.read(path)
	closed := make(chan error, 1)
	calls := 0
	s3, err := u.m.CreateSnapshot(u.ctx, "vol", CreateOptions{Name: "s3", Progress: func(done, total int64) {
		if calls++; calls != 1 {
			return
		}
		go func() { closed <- im.Close() }()
		select { // give the close time to finish the delete, unless it waits for this snapshot
		case err := <-closed:
			closed <- err
		case <-time.After(300 * time.Millisecond):
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := u.names("vol"); fmt.Sprint(got) != "[s1 s3]" {
		t.Fatalf("snapshots %q", got)
	}
	if !bytes.Equal(u.image(s3.Ref()), want3) {
		t.Fatal("s3 does not read as the disk it was made of")
	}
	u.image(s1.Ref())
	u.verify()
}

// TestChunkIDReuse deletes the newest chunk and stores another: the image of the new snapshot must
// read the new chunk, not the old one from the cache of decoded chunks.
func TestChunkIDReuse(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("vol", testChunk)
	for i := range 4 {
		data := u.random(testChunk)
		u.write(path, 0, data)
		s := u.snap("vol", fmt.Sprint("s", i))
		if got := u.image(s.Ref()); !bytes.Equal(got, data) {
			t.Fatalf("round %d: image reads other bytes", i)
		}
		if _, err := u.m.DeleteSnapshot(u.ctx, s.Ref()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestIncrementalStoresOnlyChanges checks what each snapshot of a changing disk stores.
func TestIncrementalStoresOnlyChanges(t *testing.T) {
	u := newUnit(t, Options{})
	size := int64(2<<20 + 777)
	path := u.disk("vol", size)
	u.write(path, 0, u.random(int(size)))
	u.write(path, 30*testChunk, make([]byte, 3*testChunk)) // a zero run
	s1 := u.snap("vol", "s1")
	st1 := u.stats()
	nchunks := chunkCount(size, testChunk)
	// A first snapshot records no rows for holes: nothing older could show through them.
	if s1.Chunks != nchunks-3 || st1.Chunks != nchunks-3 {
		t.Fatalf("first snapshot: %d deltas, %d chunks stored; want %d, %d", s1.Chunks, st1.Chunks, nchunks-3, nchunks-3)
	}
	rec := store.RecordLen(testChunk) // random data: stored raw
	if st1.StoredBytes != (nchunks-4)*rec+store.RecordLen(int(size%testChunk)) {
		t.Fatalf("first snapshot stored %d bytes", st1.StoredBytes)
	}
	// Three chunks change.
	u.touch(path, 5, 17, nchunks-1)
	s2 := u.snap("vol", "s2")
	st2 := u.stats()
	if s2.Chunks != 3 || st2.Chunks != st1.Chunks+3 {
		t.Fatalf("second snapshot: %d deltas, %d new chunks; want 3, 3", s2.Chunks, st2.Chunks-st1.Chunks)
	}
	if d := st2.StoredBytes - st1.StoredBytes; d != 2*rec+store.RecordLen(int(size%testChunk)) {
		t.Fatalf("second snapshot stored %d bytes", d)
	}
	// Nothing changes.
	s3 := u.snap("vol", "s3")
	if st3 := u.stats(); s3.Chunks != 0 || st3 != st2 {
		t.Fatalf("unchanged disk: %d deltas, store %+v then %+v", s3.Chunks, st2, st3)
	}
	// A chunk zeroed (a hole delta, no new chunk) and one copied from elsewhere (deduplicated).
	u.write(path, 8*testChunk, make([]byte, testChunk))
	data := u.read(path)
	u.write(path, 9*testChunk, data[50*testChunk:51*testChunk])
	s4 := u.snap("vol", "s4")
	if st4 := u.stats(); s4.Chunks != 2 || st4 != st2 {
		t.Fatalf("zeroed and copied chunks: %d deltas (want 2), store %+v then %+v", s4.Chunks, st2, st4)
	}
	// Growing adds the new chunks; the old short last chunk changes size.
	if err := os.Truncate(path, size+3*testChunk); err != nil {
		t.Fatal(err)
	}
	u.write(path, size+testChunk, u.random(10))
	s5 := u.snap("vol", "s5")
	// Two rows: the old last chunk and the written one; the two new holes need none.
	if st5 := u.stats(); s5.Chunks != 2 || st5.Chunks != st2.Chunks+2 {
		t.Fatalf("grown disk: %d deltas (want 2), %d new chunks (want 2)", s5.Chunks, st5.Chunks-st2.Chunks)
	}
	if s5.Size != size+3*testChunk {
		t.Fatalf("size %d", s5.Size)
	}
	for _, s := range []Snapshot{s1, s2, s3, s4, s5} {
		u.image(s.Ref())
	}
	u.verify()
}

// TestCloneVolumeSharesChunks clones a snapshot as a new volume: nothing is stored again, and the
// clone's chain goes on incrementally from the clone.
func TestCloneVolumeSharesChunks(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("vol", 1<<20+100)
	u.write(path, 0, u.random(1<<20+100))
	u.write(path, 4*testChunk, make([]byte, 4*testChunk))
	want := u.read(path)
	s := u.snap("vol", "s1")
	before := u.stats()
	to := filepath.Join(u.dir, "clone.img")
	res, err := u.m.Clone(u.ctx, s.Ref(), CloneOptions{To: to, Volume: "cl"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Volume == nil || res.Volume.Name != "cl" || res.Volume.Chain != "cl" || res.Size != int64(len(want)) {
		t.Fatalf("clone result %+v (volume %+v)", res, res.Volume)
	}
	if !bytes.Equal(u.read(to), want) {
		t.Fatal("clone file differs")
	}
	if allocatedBytes(t, to) > int64(len(want))-3*testChunk {
		t.Errorf("clone file is not sparse: %d bytes allocated", allocatedBytes(t, to))
	}
	if st := u.stats(); st != before {
		t.Fatalf("clone stored data: %+v then %+v", before, st)
	}
	base := u.names("cl")
	if len(base) != 1 {
		t.Fatalf("clone chain %q", base)
	}
	if info, err := u.m.Snapshot(u.ctx, "cl/"+base[0]); err != nil || info.Origin != s.ID {
		t.Fatalf("clone base %+v, %v", info, err)
	}
	s2 := u.snap("cl", "c2")
	if st := u.stats(); s2.Chunks != 0 || st != before {
		t.Fatalf("snapshot of the unchanged clone: %d deltas, store %+v then %+v", s2.Chunks, before, st)
	}
	u.touch(to, 2)
	s3 := u.snap("cl", "c3")
	if st := u.stats(); s3.Chunks != 1 || st.Chunks != before.Chunks+1 {
		t.Fatalf("one chunk changed in the clone: %d deltas, %d new chunks", s3.Chunks, st.Chunks-before.Chunks)
	}
	// Deleting the origin keeps the clone whole.
	if _, err := u.m.DeleteSnapshot(u.ctx, s.Ref()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(u.image("cl/"+base[0]), want) || !bytes.Equal(u.image(s2.Ref()), want) {
		t.Fatal("clone snapshots changed when the origin went")
	}
	if !bytes.Equal(u.image(s3.Ref()), u.read(to)) {
		t.Fatal("clone snapshot reads wrong")
	}
	// Refused clones leave no file.
	if _, err := u.m.Clone(u.ctx, s3.Ref(), CloneOptions{To: to}); !errors.Is(err, ErrExists) {
		t.Fatalf("clone onto an existing file: %v", err)
	}
	other := filepath.Join(u.dir, "other.img")
	if _, err := u.m.Clone(u.ctx, s3.Ref(), CloneOptions{To: other, Volume: "vol"}); !errors.Is(err, ErrExists) {
		t.Fatalf("clone with a taken volume name: %v", err)
	}
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused clone left %s", other)
	}
	u.verify()
}

func TestRestoreWritesOnlyDifferences(t *testing.T) {
	u := newUnit(t, Options{})
	size := int64(2<<20 + 999)
	path := u.disk("vol", size)
	u.write(path, 0, u.random(int(size)))
	u.write(path, 20*testChunk, make([]byte, 2*testChunk))
	want := u.read(path)
	s := u.snap("vol", "s1")
	total := chunkCount(size, testChunk)
	u.touch(path, 3, 60, total-1)                        // three chunks change
	u.write(path, 20*testChunk+5, []byte("over a hole")) // a hole gets data
	u.write(path, 40*testChunk, make([]byte, testChunk)) // data becomes zeros
	rs, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rs.ChunksWritten != 5 || rs.ChunksSkipped != total-5 || rs.Size != size || rs.Target != path {
		t.Fatalf("restore %+v: want 5 chunks written of %d", rs, total)
	}
	if !bytes.Equal(u.read(path), want) {
		t.Fatal("restored disk differs")
	}
	if rs, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{}); err != nil || rs.ChunksWritten != 0 {
		t.Fatalf("second restore: %+v, %v", rs, err)
	}
	// A larger file is cut to the snapshot's size.
	if err := os.Truncate(path, size+5*testChunk); err != nil {
		t.Fatal(err)
	}
	u.write(path, size+testChunk, []byte("beyond"))
	if rs, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{}); err != nil || rs.ChunksWritten != 0 {
		t.Fatalf("restore onto a larger file: %+v, %v", rs, err)
	}
	if !bytes.Equal(u.read(path), want) {
		t.Fatal("restored larger disk differs")
	}
	// A new file.
	to := filepath.Join(u.dir, "new.img")
	if rs, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{To: to}); err != nil || rs.ChunksWritten != total-2 {
		t.Fatalf("restore to a new file: %+v, %v", rs, err)
	}
	if !bytes.Equal(u.read(to), want) {
		t.Fatal("new file differs")
	}
}

func TestRestoreRefusesTargets(t *testing.T) {
	u := newUnit(t, Options{})
	size := int64(1 << 20)
	path := u.disk("vol", size)
	u.write(path, 0, u.random(int(size)))
	want := u.read(path)
	s := u.snap("vol", "s1")

	small := filepath.Join(u.dir, "small.img")
	smallData := u.random(int(size - 4096))
	if err := os.WriteFile(small, smallData, 0o600); err != nil {
		t.Fatal(err)
	}
	// A smaller image file grows to the snapshot's size (TestRestoreOntoShrunkImage has more).
	if _, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{To: small}); err != nil {
		t.Fatalf("restore to a smaller file: %v", err)
	}
	if !bytes.Equal(u.read(small), want) {
		t.Fatal("restore to a smaller file differs")
	}
	if _, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{To: u.dir}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("restore to a directory: %v", err)
	}

	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	target := filepath.Join(u.dir, "attached.img")
	other := u.random(int(size))
	if err := os.WriteFile(target, other, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", target).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	if _, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{To: target}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), loop) {
		t.Fatalf("restore to a file attached to %s: %v, want ErrInUse naming it", loop, err)
	}
	if !bytes.Equal(u.read(target), other) {
		t.Fatal("refused restore changed the target")
	}
	if rs, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{To: target, Force: true}); err != nil || rs.ChunksWritten != size/testChunk {
		t.Fatalf("forced restore: %+v, %v", rs, err)
	}
	if !bytes.Equal(u.read(target), want) {
		t.Fatal("forced restore differs")
	}
	// The loop device itself is a block device nothing holds: restore writes it, only what differs.
	u.write(target, 5*testChunk, u.random(10))
	rs, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{To: loop})
	if err != nil || rs.ChunksWritten != 1 {
		t.Fatalf("restore to %s: %+v, %v", loop, rs, err)
	}
	f, err := os.Open(loop)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, size)
	if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("loop device after restore differs (%v)", err)
	}
}

// TestVerifyFindsCorruption damages one stored record: verify names every snapshot that reads it,
// and images, restores and clones of those snapshots fail rather than return wrong bytes.
func TestVerifyFindsCorruption(t *testing.T) {
	u := newUnit(t, Options{CacheBytes: 1})
	path := u.disk("vol", 1<<20)
	u.write(path, 0, u.random(1<<20))
	old7 := u.read(path)[7*testChunk : 8*testChunk]
	s1 := u.snap("vol", "s1")
	u.touch(path, 3)
	s2 := u.snap("vol", "s2")
	u.touch(path, 7) // s3 no longer reads s1's chunk 7
	s3 := u.snap("vol", "s3")
	if _, err := u.m.Clone(u.ctx, s2.Ref(), CloneOptions{To: filepath.Join(u.dir, "cl.img"), Volume: "cl"}); err != nil {
		t.Fatal(err)
	}
	u.verify()
	c := u.damageChunk(old7, 1000)

	rep, err := u.m.Verify(u.ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Faults) != 1 || rep.Faults[0].Chunk != c.ID {
		t.Fatalf("faults %+v, want one for chunk %d", rep.Faults, c.ID)
	}
	users := append([]string(nil), rep.Faults[0].Snapshots...)
	sort.Strings(users)
	if want := []string{"cl/s2", "vol/s1", "vol/s2"}; fmt.Sprint(users) != fmt.Sprint(want) {
		t.Fatalf("fault names %q, want %q", users, want)
	}
	if rep, err := u.m.Verify(u.ctx, []string{s3.Ref()}, nil); err != nil || len(rep.Faults) != 0 {
		t.Fatalf("verify of %s: %+v, %v", s3.Ref(), rep.Faults, err)
	}
	if rep, err := u.m.Verify(u.ctx, []string{s2.Ref()}, nil); err != nil || len(rep.Faults) != 1 {
		t.Fatalf("verify of %s: %+v, %v", s2.Ref(), rep.Faults, err)
	}
	im, err := u.m.OpenImage(u.ctx, s1.Ref())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, testChunk)
	if _, err := im.ReadAt(buf, 7*testChunk); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of the damaged chunk: %v", err)
	}
	if _, err := im.ReadAt(buf, 6*testChunk); err != nil {
		t.Fatalf("read of a sound chunk: %v", err)
	}
	im.Close()
	if _, err := u.m.Restore(u.ctx, s1.Ref(), RestoreOptions{To: filepath.Join(u.dir, "r.img")}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("restore: %v", err)
	}
	to := filepath.Join(u.dir, "c.img")
	if _, err := u.m.Clone(u.ctx, s2.Ref(), CloneOptions{To: to}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("clone: %v", err)
	}
	if _, err := os.Stat(to); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("failed clone left its file")
	}
	if !bytes.Equal(u.image(s3.Ref()), u.read(path)) {
		t.Fatal("s3 reads wrong")
	}
}

func TestVolumes(t *testing.T) {
	u := newUnit(t, Options{})
	path := filepath.Join(u.dir, "d.img")
	if err := os.WriteFile(path, make([]byte, 100000), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec VolumeSpec
		want error
	}{
		{VolumeSpec{Name: "bad/name", Source: path}, ErrInvalid},
		{VolumeSpec{Name: "v", Source: path, ChunkSize: 8 << 10}, ErrInvalid},
		{VolumeSpec{Name: "v", Source: path, ChunkSize: 48 << 10}, ErrInvalid},
		{VolumeSpec{Name: "v", Source: path, ChunkSize: 8 << 20}, ErrInvalid},
		{VolumeSpec{Name: "v", Source: path, Kind: "swap"}, ErrInvalid},
		{VolumeSpec{Name: "v", Source: path, Instance: ".x"}, ErrInvalid},
		{VolumeSpec{Name: "v", Source: u.dir}, ErrInvalid},
		{VolumeSpec{Name: "v", Source: filepath.Join(u.dir, "missing.img")}, os.ErrNotExist},
		{VolumeSpec{Name: "v", Source: "/dev/null"}, ErrInvalid},
	} {
		if _, err := u.m.AddVolume(u.ctx, tc.spec); !errors.Is(err, tc.want) {
			t.Errorf("AddVolume(%+v) = %v, want %v", tc.spec, err, tc.want)
		}
	}
	if vs, _ := u.m.Volumes(u.ctx); len(vs) != 0 {
		t.Fatalf("refused volumes registered: %+v", vs)
	}
	v, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: "sys", Source: path, Kind: KindSystem, Instance: "vm1"})
	if err != nil {
		t.Fatal(err)
	}
	if v.ChunkSize != DefaultChunkSize || v.Size != 100000 || v.Source != path || v.Chain != "" {
		t.Fatalf("volume %+v", v)
	}
	if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: "sys", Source: path}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate volume: %v", err)
	}
	other := filepath.Join(u.dir, "other.img")
	if err := os.WriteFile(other, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: "sys2", Source: other, Kind: KindSystem, Instance: "vm1"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second system disk of an instance: %v", err)
	}
	if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: "data1", Source: other, Instance: "vm1"}); err != nil {
		t.Fatal(err)
	}
	if sv, err := u.m.SystemVolume(u.ctx, "vm1"); err != nil || sv.Name != "sys" {
		t.Fatalf("system volume of vm1: %+v, %v", sv, err)
	}
	if _, err := u.m.SystemVolume(u.ctx, "vm2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("system volume of vm2: %v", err)
	}
	s := u.snap("sys", "s1")
	if _, err := u.m.Clone(u.ctx, s.Ref(), CloneOptions{To: filepath.Join(u.dir, "c.img"), Volume: "c", Kind: KindSystem, Instance: "vm1"}); !errors.Is(err, ErrExists) {
		t.Fatalf("clone as a second system disk: %v", err)
	}
	// Forgetting a volume keeps its chain; a new volume of the same name starts another chain.
	if err := u.m.RemoveVolume(u.ctx, "sys"); err != nil {
		t.Fatal(err)
	}
	if err := u.m.RemoveVolume(u.ctx, "sys"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if c, err := u.m.Chain(u.ctx, "sys"); err != nil || c.Volume != "" || c.Snapshots != 1 || c.Source != path {
		t.Fatalf("chain of the forgotten volume: %+v, %v", c, err)
	}
	path2 := u.disk("sys", 50000)
	s2 := u.snap("sys", "s1")
	if s2.Chain != "sys-2" {
		t.Fatalf("new volume's chain %q, want sys-2", s2.Chain)
	}
	if v, _ := u.m.Volume(u.ctx, "sys"); v.Chain != "sys-2" || v.Source != path2 {
		t.Fatalf("volume %+v", v)
	}
	if !bytes.Equal(u.image(s.Ref()), u.read(path)) || !bytes.Equal(u.image(s2.Ref()), u.read(path2)) {
		t.Fatal("snapshots read wrong")
	}
	// Restoring the old chain with no target goes to the disk it was made of.
	u.write(path, 10, []byte("changed"))
	if rs, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{}); err != nil || rs.Target != path || rs.ChunksWritten != 1 {
		t.Fatalf("restore of the forgotten volume's chain: %+v, %v", rs, err)
	}
}

// TestEmptyDisk snapshots a disk of no bytes, then grown.
func TestEmptyDisk(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("vol", 0)
	s := u.snap("vol", "empty")
	if s.Size != 0 || len(u.image(s.Ref())) != 0 {
		t.Fatalf("empty snapshot %+v", s)
	}
	im, err := u.m.OpenImage(u.ctx, s.Ref())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := im.ReadAt(make([]byte, 10), 0); n != 0 || err != io.EOF {
		t.Fatalf("read of an empty image: %d, %v", n, err)
	}
	if _, ok := im.SeekData(0); ok || im.SeekHole(0) != 0 {
		t.Fatal("seek in an empty image")
	}
	im.Close()
	u.write(path, 0, u.random(40000))
	s2 := u.snap("vol", "grown")
	if !bytes.Equal(u.image(s2.Ref()), u.read(path)) || !bytes.Equal(u.image(s.Ref()), nil) {
		t.Fatal("snapshots read wrong")
	}
	to := filepath.Join(u.dir, "r.img")
	if _, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{To: to}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(to); err != nil || fi.Size() != 0 {
		t.Fatalf("restore of an empty snapshot: %v", err)
	}
	if _, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Fatal("disk not cut to the empty snapshot")
	}
	u.verify()
}

// TestChunkSizes snapshots, changes, restores and clones disks with the smallest, the default and the
// largest chunk size.
func TestChunkSizes(t *testing.T) {
	u := newUnit(t, Options{})
	for _, cs := range []int64{MinChunkSize, DefaultChunkSize, MaxChunkSize} {
		name := fmt.Sprintf("c%d", cs>>10)
		size := 2*cs + cs/2 + 5
		path := filepath.Join(u.dir, name+".img")
		data := u.random(int(size))
		copy(data[cs/4:], make([]byte, cs)) // a zero run across a chunk boundary
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: name, Source: path, ChunkSize: cs}); err != nil {
			t.Fatal(err)
		}
		s1 := u.snap(name, "s1")
		before := u.stats()
		u.write(path, cs+7, []byte("changed"))
		changed := u.read(path)
		s2 := u.snap(name, "s2")
		if st := u.stats(); s2.Chunks != 1 || st.Chunks != before.Chunks+1 || s2.ChunkSize != cs {
			t.Fatalf("chunk size %d: %d deltas, %d new chunks", cs, s2.Chunks, st.Chunks-before.Chunks)
		}
		if !bytes.Equal(u.image(s1.Ref()), data) || !bytes.Equal(u.image(s2.Ref()), changed) {
			t.Fatalf("chunk size %d: images differ", cs)
		}
		rs, err := u.m.Restore(u.ctx, s1.Ref(), RestoreOptions{})
		if err != nil || rs.ChunksWritten != 1 || !bytes.Equal(u.read(path), data) {
			t.Fatalf("chunk size %d: restore %+v, %v", cs, rs, err)
		}
		to := filepath.Join(u.dir, name+"-clone.img")
		if _, err := u.m.Clone(u.ctx, s2.Ref(), CloneOptions{To: to, Volume: name + "-clone"}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(u.read(to), changed) {
			t.Fatalf("chunk size %d: clone differs", cs)
		}
		if s3 := u.snap(name+"-clone", "s3"); s3.Chunks != 0 || s3.ChunkSize != cs {
			t.Fatalf("chunk size %d: snapshot of the clone %+v", cs, s3)
		}
	}
	u.verify()
}

// TestFailedRestoreSaysWhatItLeft: a restore that fails part way removes the file it was creating,
// leaves a larger existing file its length (its tail is cut only once the restore succeeded), and
// says what state the target is in; once it succeeds the file is the snapshot's size.
func TestFailedRestoreSaysWhatItLeft(t *testing.T) {
	u := newUnit(t, Options{})
	size := int64(16 << 20) // several restore spans: the cancel lands part way
	path := u.disk("vol", size)
	u.write(path, 0, u.random(int(size)))
	want := u.read(path)
	s := u.snap("vol", "s1")
	cancelled := func() (context.Context, Progress) {
		ctx, cancel := context.WithCancel(u.ctx)
		return ctx, func(done, total int64) {
			if done > 0 {
				cancel()
			}
		}
	}

	fresh := filepath.Join(u.dir, "fresh.img")
	ctx, progress := cancelled()
	_, err := u.m.Restore(ctx, s.Ref(), RestoreOptions{To: fresh, Progress: progress})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("cancelled restore to a new file: %v, want canceled, saying the file is removed", err)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the file a failed restore was creating is still there: %v", err)
	}

	larger := filepath.Join(u.dir, "larger.img")
	old := u.random(int(size + 1<<20))
	if err := os.WriteFile(larger, old, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, progress = cancelled()
	st, err := u.m.Restore(ctx, s.Ref(), RestoreOptions{To: larger, Progress: progress})
	if !errors.Is(err, context.Canceled) || st.ChunksWritten == 0 || !strings.Contains(err.Error(), "partly restored") {
		t.Fatalf("cancelled restore onto a file: %+v, %v; want canceled after writing, saying it is partly restored", st, err)
	}
	got := u.read(larger)
	if !bytes.Equal(got[size:], old[size:]) {
		t.Fatalf("a failed restore cut the target's tail: %d bytes left of %d", len(got), len(old))
	}
	if _, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{To: larger}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(u.read(larger), want) {
		t.Fatal("restore onto a larger file: not the snapshot's bytes and size")
	}
}

// TestFailedRestoreAfterWritesSaysSo: a restore that has written part of a span and then fails on a
// damaged chunk of the same span says that the target is partly restored, not that nothing was
// written.
func TestFailedRestoreAfterWritesSaysSo(t *testing.T) {
	ctx := context.Background()
	u := newUnit(t, Options{})
	size := 1 << 20 // one restore span
	path := u.disk("vol", int64(size))
	data := u.random(size)
	u.write(path, 0, data)
	s := u.snap("vol", "s1")

	target := filepath.Join(u.dir, "target.img")
	changed := slices.Clone(data)
	copy(changed[0:], u.random(100))           // chunk 0 differs: written first
	copy(changed[2*testChunk:], u.random(100)) // chunk 2 differs: its record is damaged
	if err := os.WriteFile(target, changed, 0o600); err != nil {
		t.Fatal(err)
	}
	var c store.Chunk
	if err := u.m.st.View(ctx, func(tx *store.Tx) (err error) {
		c, err = tx.ChunkByHash(store.Sum(data[2*testChunk : 3*testChunk]))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	pack := filepath.Join(u.dir, "store", "packs", fmt.Sprintf("%010d.pack", c.Pack))
	f, err := os.OpenFile(pack, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damage"), c.Offset+100); err != nil { // in its payload, past the header
		t.Fatal(err)
	}
	f.Close()
	u.m.Close()
	m, err := Open(ctx, filepath.Join(u.dir, "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	_, err = m.Restore(ctx, s.Ref(), RestoreOptions{To: target})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "partly restored") {
		t.Fatalf("restore failing on a damaged chunk after a write: %v, want corrupt, saying partly restored", err)
	}
	if got := u.read(target); !bytes.Equal(got[:testChunk], data[:testChunk]) {
		t.Fatal("the test meant chunk 0 to be written before the damaged chunk was read")
	}
}
