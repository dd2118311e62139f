package chain

import (
	"bytes"
	"testing"
)

// TestDataInLastChunkAfterLongHole snapshots sparse disks whose data starts part way into the last
// chunk before a block boundary, or into the disk's last chunk, after a hole longer than a block:
// the reader, handing the hole on whole, must stop before the chunk that holds the data.
func TestDataInLastChunkAfterLongHole(t *testing.T) {
	per := int64(readBlock / testChunk)
	for _, tc := range []struct {
		name       string
		size, at   int64
		dataLength int
	}{
		// The second half of block 1's last chunk.
		{"block end", 3 << 20, (2*per-1)*testChunk + testChunk/2, testChunk / 2},
		// The second half of the disk's last chunk.
		{"disk end", 3 << 20, (3*per-1)*testChunk + testChunk/2, testChunk / 2},
		// A short last chunk, alone in its block, from 8 KiB into it.
		{"short last chunk", 3<<20 + 12000, 3<<20 + 9000, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnit(t, Options{})
			path := u.disk("v", tc.size)
			u.write(path, tc.at, u.random(tc.dataLength))
			s := u.snap("v", "s")
			if !bytes.Equal(u.image(s.Ref()), u.read(path)) {
				t.Fatal("the snapshot misses the data after the hole")
			}
			if s.DataBytes == 0 {
				t.Fatal("the snapshot counts no data")
			}
		})
	}
}
