package store

import (
	"crypto/rand"
	"crypto/sha256"
	"testing"
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
