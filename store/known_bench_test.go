package store

import (
	"context"
	"encoding/binary"
	"testing"
)

// BenchmarkHeld is the look-up a snapshot makes once per MiB of changed disk: which of 16 chunks
// (half of them held) a store of 32768 chunks holds.
func BenchmarkHeld(b *testing.B) {
	s, err := Open(context.Background(), b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	chunk := make([]byte, 4096)
	var enc Encoder
	err = s.Update(context.Background(), func(tx *Tx) error {
		var items []NewChunk
		for i := range 32768 {
			binary.LittleEndian.PutUint64(chunk, uint64(i))
			sum := Sum(chunk)
			items = append(items, NewChunk{Hash: sum, Size: len(chunk), Rec: bytes32(enc.Encode(chunk, sum))})
		}
		_, err := tx.PutChunks(items)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	// Half of them held.
	var all [4096]Hash
	for i := range all {
		binary.LittleEndian.PutUint64(chunk, uint64(i*7919%65536))
		all[i] = Sum(chunk)
	}
	n := 0
	for b.Loop() {
		hashes := all[n%len(all):][:16]
		n += 16
		if _, err := s.Held(context.Background(), hashes); err != nil {
			b.Fatal(err)
		}
	}
}

func bytes32(b []byte) []byte { return append([]byte(nil), b...) }
