package chain

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Hot-path benchmarks of the engine on one disk: a synthetic 256 MiB one (a quarter random, half
// compressible text, a quarter holes), or the image SNAPFS_BENCH_DISK names (scripts/bench.sh leaves
// $BENCH_DIR/state1.img), e.g.
//
//	SNAPFS_BENCH_DISK=/tmp/snapfs-bench/state1.img go test -run - -bench Snapshot -cpuprofile cpu.out ./chain/
//
// MB/s figures are of the whole disk, holes included, as scripts/bench.sh reports them.

func benchDisk(b *testing.B) (path string, size int64) {
	b.Helper()
	if p := os.Getenv("SNAPFS_BENCH_DISK"); p != "" {
		st, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		return p, st.Size()
	}
	size = 256 << 20
	path = filepath.Join(b.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"snapfs ", "keeps ", "disk ", "snapshots ", "of ", "chains ", "\n", "0x", "lib", ".so ", "\x00\x00\x00\x00"}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		switch off / (size / 4) {
		case 0:
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
		case 1, 2:
			buf = buf[:0]
			for len(buf) < 1<<20 {
				buf = append(buf, words[rng.IntN(len(words))]...)
			}
			buf = buf[:1<<20]
		case 3:
			continue // hole
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	return path, size
}

func benchManager(b *testing.B, disk string, chunkSize int64) *Manager {
	b.Helper()
	m, err := Open(context.Background(), filepath.Join(b.TempDir(), "store"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	if _, err := m.AddVolume(context.Background(), VolumeSpec{Name: "d", Source: disk, ChunkSize: chunkSize}); err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkSnapshotFull stores the whole disk into an empty store each time.
func BenchmarkSnapshotFull(b *testing.B) {
	disk, size := benchDisk(b)
	b.SetBytes(size)
	for b.Loop() {
		b.StopTimer()
		m := benchManager(b, disk, 0)
		b.StartTimer()
		if _, err := m.CreateSnapshot(context.Background(), "d", CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		m.Close()
		b.StartTimer()
	}
}

// BenchmarkSnapshotUnchanged snapshots a disk that has not changed since its last snapshot: the disk
// is read and hashed whole, nothing is stored.
func BenchmarkSnapshotUnchanged(b *testing.B) {
	disk, size := benchDisk(b)
	m := benchManager(b, disk, 0)
	if _, err := m.CreateSnapshot(context.Background(), "d", CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	snapshotEach(b, m, "d")
}

// BenchmarkImageRead reads a snapshot's image sequentially in 1 MiB requests, as FUSE does, with a
// cold chunk cache.
func BenchmarkImageRead(b *testing.B) {
	disk, size := benchDisk(b)
	m := benchManager(b, disk, 0)
	s, err := m.CreateSnapshot(context.Background(), "d", CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	buf := make([]byte, 1<<20)
	for b.Loop() {
		m.cache = newChunkCache(64 << 20)
		im, err := m.OpenImage(context.Background(), s.Ref())
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); ; off += int64(len(buf)) {
			if _, err := im.ReadAt(buf, off); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		im.Close()
	}
}

// BenchmarkRestoreNew restores a snapshot to a new file.
func BenchmarkRestoreNew(b *testing.B) {
	disk, size := benchDisk(b)
	m := benchManager(b, disk, 0)
	s, err := m.CreateSnapshot(context.Background(), "d", CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	restoreEach(b, m, s.Ref())
}

// restoreEach restores ref to a new file each time round the benchmark's loop.
func restoreEach(b *testing.B, m *Manager, ref string) {
	dir := b.TempDir()
	for b.Loop() {
		to := filepath.Join(dir, "r.img")
		if _, err := m.Restore(context.Background(), ref, RestoreOptions{To: to}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(to)
		b.StartTimer()
	}
}

// BenchmarkSnapshotKnownData takes the first snapshot of a second disk whose data the store already
// holds (a copy of a disk already snapshotted, as a disk made from a golden image is): every chunk
// is hashed and found in the store, nothing is stored.
func BenchmarkSnapshotKnownData(b *testing.B) {
	disk, size := benchDisk(b)
	m := benchManager(b, disk, 0)
	if _, err := m.CreateSnapshot(context.Background(), "d", CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	copied := filepath.Join(b.TempDir(), "copy.img")
	if out, err := exec.Command("cp", "--sparse=always", disk, copied).CombinedOutput(); err != nil {
		b.Fatalf("copy the disk: %v\n%s", err, out)
	}
	if _, err := m.AddVolume(context.Background(), VolumeSpec{Name: "copy", Source: copied}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	snapshotEach(b, m, "copy")
}

// snapshotEach snapshots volume once per iteration, deleting each snapshot untimed.
func snapshotEach(b *testing.B, m *Manager, volume string) {
	for b.Loop() {
		s, err := m.CreateSnapshot(context.Background(), volume, CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := m.DeleteSnapshot(context.Background(), s.Ref()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// sparseTebibyte makes a sparse 1 TiB disk holding 32 pieces of 1 MiB of random data spread over it.
func sparseTebibyte(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "sparse.img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 40); err != nil {
		b.Skipf("no 1 TiB sparse file here: %v", err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 1<<20)
	for k := range int64(32) {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(buf, k<<35+k*4096); err != nil {
			b.Fatal(err)
		}
	}
	return path
}

// BenchmarkSparseSnapshot and BenchmarkSparseRestore snapshot a sparse 1 TiB disk holding 32 MiB,
// and restore it to a new file: work in proportion to the data and the chunk map, not to the
// terabyte of holes.
func BenchmarkSparseSnapshot(b *testing.B) {
	snapshotEach(b, benchManager(b, sparseTebibyte(b), 0), "d")
}

func BenchmarkSparseRestore(b *testing.B) {
	m := benchManager(b, sparseTebibyte(b), 0)
	s, err := m.CreateSnapshot(context.Background(), "d", CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	restoreEach(b, m, s.Ref())
}
