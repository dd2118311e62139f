package chain

import (
	"bytes"
	"io"
	"testing"
)

// TestHugeSparseDisk checks that a big, mostly empty disk costs what its data costs, not what its
// size does: snapshots record rows only for data (and for holes that hide older data), and images
// read it with a chunk-map cache of two segments, which every walk overflows.
func TestHugeSparseDisk(t *testing.T) {
	u := newUnit(t, Options{MapCacheBytes: 1})
	const size = 16 << 30 // 1M chunks of 16 KiB: 128 segments of the chunk map
	path := u.disk("big", size)
	regions := []int64{0, 5<<30 + 7*testChunk, size - 3*testChunk}
	datas := map[int64][]byte{}
	for _, off := range regions {
		datas[off] = u.random(3 * testChunk)
		u.write(path, off, datas[off])
	}
	s1 := u.snap("big", "s1")
	if s1.Chunks != 9 {
		t.Fatalf("first snapshot of 9 data chunks: %d delta rows", s1.Chunks)
	}
	// The holes are handed on in spans, not 16,384 blocks of 1 MiB one by one.
	if spans := u.m.counts.holeSpans.Load(); spans == 0 || spans > 16384/16 {
		t.Errorf("first snapshot: %d hole spans", spans)
	}
	// The middle region is zeroed: three hole rows hide it; a new region appears.
	u.write(path, regions[1], make([]byte, 3*testChunk))
	delete(datas, regions[1])
	newOff := int64(9 << 30)
	datas[newOff] = u.random(testChunk)
	u.write(path, newOff, datas[newOff])
	s2 := u.snap("big", "s2")
	if s2.Chunks != 4 {
		t.Fatalf("incremental snapshot: %d delta rows, want 3 holes and 1 chunk", s2.Chunks)
	}

	im, err := u.m.OpenImage(u.ctx, s2.Ref())
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	// Walk the data as cp --sparse does, and read it.
	var found []int64
	for pos := int64(0); ; {
		d, ok := im.SeekData(pos)
		if !ok {
			break
		}
		h := im.SeekHole(d)
		found = append(found, d)
		got := make([]byte, h-d)
		if _, err := im.ReadAt(got, d); err != nil && err != io.EOF {
			t.Fatalf("read [%d, %d): %v", d, h, err)
		}
		if !bytes.Equal(got, datas[d]) {
			t.Errorf("data at %d (%d bytes) differs from what was written", d, len(got))
		}
		pos = h
	}
	if len(found) != len(datas) {
		t.Errorf("found data at %v, want %d regions", found, len(datas))
	}
	if used, limit := u.m.maps.used, u.m.maps.cap; used > limit {
		t.Errorf("chunk-map cache holds %d entries, capped at %d", used, limit)
	}
	if limit := u.m.maps.cap; limit != 2*segmentChunks {
		t.Errorf("chunk-map cache of %d entries, want the two-segment minimum", limit)
	}
}
