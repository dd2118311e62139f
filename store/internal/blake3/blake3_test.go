package blake3

import (
	"encoding/hex"
	"math/rand/v2"
	"testing"

	zeebo "github.com/zeebo/blake3"
)

// TestKnownAnswers checks the BLAKE3 paper's test input (bytes 0, 1, …, 250, 0, 1, … of each
// length) against hashes published with the reference implementation (test_vectors.json).
func TestKnownAnswers(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		{1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
		{1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
		{1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
		{1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
		{2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
		{102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
	} {
		in := make([]byte, tc.n)
		for i := range in {
			in[i] = byte(i % 251)
		}
		if got := Sum256(in); hex.EncodeToString(got[:]) != tc.want {
			t.Errorf("%d bytes: %x, want %s", tc.n, got, tc.want)
		}
	}
}

// TestSameAsGo checks the C implementation against an independent one on lengths around every
// boundary the SIMD paths split at (blocks of 64 bytes, chunks of 1 KiB, 16 chunks at a time).
func TestSameAsGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20+3)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	lengths := []int{0, 1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 4096, 16383, 16384, 16385, 65535, 65536, 65537, 1 << 20, len(buf)}
	for range 200 {
		lengths = append(lengths, rng.IntN(len(buf)+1))
	}
	for _, n := range lengths {
		off := rng.IntN(len(buf) - n + 1) // unaligned starts too
		in := buf[off : off+n]
		if got, want := Sum256(in), zeebo.Sum256(in); got != want {
			t.Fatalf("%d bytes at %d: %x, want %x", n, off, got, want)
		}
	}
}

func BenchmarkSum256(b *testing.B) {
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Sum256(buf)
	}
}
