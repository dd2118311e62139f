package chain

import (
	"path/filepath"
	"slices"
	"testing"
)

// TestVerifyNamesUsersFromTheirDeltas: verify names the snapshots a damaged chunk hurts by looking
// at the map entries where deltas name it, not by scanning whole maps: with the chunk at the end of
// a large sparse disk, it loads one segment of each later snapshot's map, and names the same
// snapshots, in the same order, as a scan would.
func TestVerifyNamesUsersFromTheirDeltas(t *testing.T) {
	u := newUnit(t, Options{CacheBytes: 1})
	u.m.segChunks = 4
	const size = 4 << 20 // 256 chunks: 64 segments a map
	last := int64(size/testChunk - 1)
	path := u.disk("vol", size)
	u.touch(path, 0, last)
	old := u.read(path)[last*testChunk:]
	u.snap("vol", "s1")
	u.touch(path, 3)
	s2 := u.snap("vol", "s2")
	u.touch(path, 5)
	u.snap("vol", "s3")
	u.touch(path, last) // s4 no longer reads the chunk
	u.snap("vol", "s4")
	if _, err := u.m.Clone(u.ctx, s2.Ref(), CloneOptions{To: filepath.Join(u.dir, "cl.img"), Volume: "cl"}); err != nil {
		t.Fatal(err)
	}
	c := u.damageChunk(old, 10)

	// A fresh cache that keeps everything loaded: what is in it after verify is what verify loaded.
	u.m.maps = newMapCache(1<<30, u.m.segChunks)
	rep, err := u.m.Verify(u.ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Faults) != 1 || rep.Faults[0].Chunk != c.ID {
		t.Fatalf("faults %+v, want one for chunk %d", rep.Faults, c.ID)
	}
	if got, want := rep.Faults[0].Snapshots, []string{"vol/s1", "vol/s2", "vol/s3", "cl/s2"}; !slices.Equal(got, want) {
		t.Fatalf("fault names %q, want %q", got, want)
	}
	u.m.maps.mu.Lock()
	loaded := len(u.m.maps.items)
	u.m.maps.mu.Unlock()
	// s1 to s4 and cl/s2, one segment each: the one holding the chunk's index.
	if loaded > 5 {
		t.Fatalf("verify loaded %d segments of chunk maps to name the snapshots of one chunk, want at most 5", loaded)
	}
}
