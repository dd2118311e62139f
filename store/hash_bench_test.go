package store

import (
	"crypto/rand"
	"crypto/sha256"
	"os"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// The content hash is on the critical path of every snapshot: these compare the candidates on one
// 64 KiB chunk (the default chunk size).

func benchChunk(b *testing.B) []byte {
	buf := make([]byte, 64<<10)
	rand.Read(buf)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	return buf
}

func BenchmarkHashBLAKE3(b *testing.B) {
	buf := benchChunk(b)
	for b.Loop() {
		Sum(buf)
	}
}

func BenchmarkHashSHA256(b *testing.B) {
	buf := benchChunk(b)
	for b.Loop() {
		sha256.Sum256(buf)
	}
}

func BenchmarkEncodeRandom(b *testing.B) {
	buf := benchChunk(b)
	var e Encoder
	sum := Sum(buf)
	for b.Loop() {
		e.Encode(buf, sum)
	}
}

func BenchmarkEncodeText(b *testing.B) {
	buf := benchChunk(b)
	for i := range buf {
		buf[i] = "snapfs keeps disk snapshots "[i%28]
	}
	var e Encoder
	sum := Sum(buf)
	for b.Loop() {
		e.Encode(buf, sum)
	}
}

func BenchmarkDecodeText(b *testing.B) {
	buf := benchChunk(b)
	for i := range buf {
		buf[i] = "snapfs keeps disk snapshots "[i%28]
	}
	var e Encoder
	sum := Sum(buf)
	rec := append([]byte(nil), e.Encode(buf, sum)...)
	dst := make([]byte, len(buf))
	for b.Loop() {
		if _, err := DecodeRecord(dst, rec, sum, len(buf)); err != nil {
			b.Fatal(err)
		}
	}
}

// binaryChunks returns 64 KiB chunks of real, moderately compressible data: the test binary itself.
func binaryChunks(b *testing.B) [][]byte {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		b.Fatal(err)
	}
	var chunks [][]byte
	for off := 0; off+64<<10 <= len(data) && len(chunks) < 128; off += 64 << 10 {
		chunks = append(chunks, data[off:off+64<<10])
	}
	b.SetBytes(int64(len(chunks) * 64 << 10))
	b.ResetTimer()
	return chunks
}

// BenchmarkCompressLibLZ4 and BenchmarkCompressPierrecLZ4 compare the two LZ4 block encoders on the
// same chunks: the reason chunks are compressed with liblz4.
func BenchmarkCompressLibLZ4(b *testing.B) {
	var c lz4Compressor
	benchCompress(b, func(src, dst []byte) { c.compress(src, dst) })
}

func BenchmarkCompressPierrecLZ4(b *testing.B) {
	var c lz4.Compressor
	benchCompress(b, func(src, dst []byte) { c.CompressBlock(src, dst) })
}

func benchCompress(b *testing.B, compress func(src, dst []byte)) {
	chunks := binaryChunks(b)
	dst := make([]byte, lz4.CompressBlockBound(64<<10))
	for b.Loop() {
		for _, ch := range chunks {
			compress(ch, dst)
		}
	}
}
