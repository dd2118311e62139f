package chain

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestShrinkGrowBackZeros snapshots a disk full of data, the disk shrunk, then the disk grown back
// with zeros where the data was: the third snapshot must read those zeros, not the first
// snapshot's data showing through. The second snapshot, being smaller, has no entry there: only a
// hole row, written because an older snapshot of the chain has rows past its end, hides the data.
// The zeros come as a hole (the file truncated longer) or written out, the shrink cuts at a chunk
// boundary or inside a chunk, and both a 16 KiB and a 64 KiB chunk are tried. Deleting the smaller
// snapshot, then the first, merges them into the third, which must still read the same.
func TestShrinkGrowBackZeros(t *testing.T) {
	for _, cs := range []int64{MinChunkSize, DefaultChunkSize} {
		for _, cut := range []int64{0, 100} {
			for _, written := range []bool{false, true} {
				zeros := "a hole"
				if written {
					zeros = "written zeros"
				}
				t.Run(fmt.Sprintf("chunk %dK, shrink %d+%d, %s", cs>>10, 2*cs, cut, zeros), func(t *testing.T) {
					testShrinkGrowBack(t, cs, 2*cs+cut, written)
				})
			}
		}
	}
}

func testShrinkGrowBack(t *testing.T, cs, small int64, written bool) {
	u := newUnit(t, Options{CacheBytes: 1}) // no cache: every read goes to the packs
	size := 8*cs + 1000
	path := filepath.Join(u.dir, "v.img")
	if err := os.WriteFile(path, u.random(int(size)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: "v", Source: path, ChunkSize: cs}); err != nil {
		t.Fatal(err)
	}
	full := u.snap("v", "full")
	fullData := u.read(path)
	if err := os.Truncate(path, small); err != nil {
		t.Fatal(err)
	}
	shrunk := u.snap("v", "shrunk")
	shrunkData := u.read(path)
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	if written {
		u.write(path, small, make([]byte, size-small))
	}
	// One chunk of data among the zeros, so that the snapshot has more than holes past the cut.
	u.write(path, 6*cs+10, u.random(100))
	grown := u.snap("v", "grown")
	grownData := u.read(path)
	if bytes.Equal(grownData[3*cs:4*cs], fullData[3*cs:4*cs]) {
		t.Fatal("the test's disk holds no zeros where the data was")
	}
	check := func(when string) {
		t.Helper()
		got := u.image(grown.Ref())
		if len(got) != len(grownData) {
			t.Fatalf("%s: grown snapshot is %d bytes, want %d", when, len(got), len(grownData))
		}
		for off := int64(0); off < size; off += cs {
			end := min(off+cs, size)
			if !bytes.Equal(got[off:end], grownData[off:end]) {
				what := "other data"
				if bytes.Equal(got[off:end], fullData[off:end]) {
					what = "the first snapshot's data"
				}
				t.Fatalf("%s: chunk %d of the grown snapshot reads %s, not what the disk held", when, off/cs, what)
			}
		}
		to := filepath.Join(u.dir, "restored.img")
		os.Remove(to)
		if _, err := u.m.Restore(u.ctx, grown.Ref(), RestoreOptions{To: to}); err != nil {
			t.Fatalf("%s: restore: %v", when, err)
		}
		if !bytes.Equal(u.read(to), grownData) {
			t.Fatalf("%s: the grown snapshot restores other bytes", when)
		}
	}
	check("beside the older snapshots")
	if !bytes.Equal(u.image(full.Ref()), fullData) || !bytes.Equal(u.image(shrunk.Ref()), shrunkData) {
		t.Fatal("the older snapshots read wrong")
	}
	// A snapshot of the unchanged disk after it reads the same.
	again := u.snap("v", "again")
	if again.Chunks != 0 || !bytes.Equal(u.image(again.Ref()), grownData) {
		t.Fatalf("snapshot of the unchanged disk: %d deltas, or other bytes", again.Chunks)
	}
	if _, err := u.m.DeleteSnapshot(u.ctx, shrunk.Ref()); err != nil {
		t.Fatal(err)
	}
	check("after deleting the shrunk snapshot")
	if _, err := u.m.DeleteSnapshot(u.ctx, full.Ref()); err != nil {
		t.Fatal(err)
	}
	check("after deleting the first snapshot")
	u.verify()
}
