package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"strconv"
	"testing"
)

// randBytes returns n pseudo-random bytes from rng.
func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(b[i:], w[:])
	}
	return b
}

// testChunks are the chunk contents the codec tests encode, with the codec each must get.
func testChunks() []struct {
	name  string
	data  []byte
	codec Codec
} {
	rng := rand.New(rand.NewPCG(7, 11))
	text := bytes.Repeat([]byte("snapfs keeps incremental snapshot chains of disks. "), 400)[:16<<10]
	half := append(randBytes(rng, 8<<10), make([]byte, 8<<10)...)
	oneByte := make([]byte, 64<<10)
	oneByte[12345] = 1
	return []struct {
		name  string
		data  []byte
		codec Codec
	}{
		{"1 byte", []byte{42}, CodecRaw},
		{"100 random bytes", randBytes(rng, 100), CodecRaw},
		{"4032 random bytes (record fills one block)", randBytes(rng, RecordAlign-HeaderSize), CodecRaw},
		{"4033 random bytes (record spills into a second block)", randBytes(rng, RecordAlign-HeaderSize+1), CodecRaw},
		{"16 KiB random", randBytes(rng, 16<<10), CodecRaw},
		{"16 KiB text", text, CodecLZ4},
		{"16 KiB half random half zero", half, CodecLZ4},
		{"64 KiB one non-zero byte", oneByte, CodecLZ4},
		{"64 KiB random", randBytes(rng, 64<<10), CodecRaw},
		{"4 MiB random (largest chunk)", randBytes(rng, MaxChunkSize), CodecRaw},
		{"4 MiB text (largest chunk)", bytes.Repeat(text, MaxChunkSize/len(text)), CodecLZ4},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	var enc Encoder
	for _, tc := range testChunks() {
		t.Run(tc.name, func(t *testing.T) {
			sum := Sum(tc.data)
			rec := enc.Encode(tc.data, sum)
			if len(rec)%RecordAlign != 0 {
				t.Fatalf("record length %d is not a multiple of %d", len(rec), RecordAlign)
			}
			h, err := decodeHeader(rec)
			if err != nil {
				t.Fatal(err)
			}
			if h.Codec != tc.codec {
				t.Errorf("codec %d, want %d", h.Codec, tc.codec)
			}
			if h.RawSize != len(tc.data) || h.Hash != sum {
				t.Errorf("header %+v does not describe the chunk", h)
			}
			if int64(len(rec)) != RecordLen(h.StoredSize) {
				t.Errorf("record is %d bytes, RecordLen(%d) = %d", len(rec), h.StoredSize, RecordLen(h.StoredSize))
			}
			if h.Codec == CodecLZ4 && RecordLen(h.StoredSize) >= RecordLen(len(tc.data)) {
				t.Errorf("kept an LZ4 payload that saves no block")
			}
			if !allZeroBytes(rec[HeaderSize+h.StoredSize:]) || !allZeroBytes(rec[56:HeaderSize]) {
				t.Errorf("padding is not zeroed")
			}
			if h.Version != recordV2 || h.PayloadCRC != crc32.Checksum(rec[HeaderSize:HeaderSize+h.StoredSize], crcTable) {
				t.Errorf("version %d record with payload CRC %08x: want version 2 and the payload's CRC32C", h.Version, h.PayloadCRC)
			}
			for _, dst := range [][]byte{nil, make([]byte, 3), make([]byte, 0, len(tc.data)+100), bytes.Repeat([]byte{0xff}, len(tc.data))} {
				for _, deep := range []bool{true, false} {
					got, err := decodeRecord(dst, rec, sum, len(tc.data), deep)
					if err != nil {
						t.Fatalf("decode (dst cap %d, deep %v): %v", cap(dst), deep, err)
					}
					if !bytes.Equal(got, tc.data) {
						t.Fatalf("decode (dst cap %d, deep %v) returned other bytes", cap(dst), deep)
					}
				}
			}
		})
	}
}

// TestEncoderReuse checks that an encoder's buffer, reused from a large chunk for a small one, leaves
// no stale bytes in the smaller record.
func TestEncoderReuse(t *testing.T) {
	var enc Encoder
	rng := rand.New(rand.NewPCG(1, 1))
	big := randBytes(rng, 1<<20)
	enc.Encode(big, Sum(big))
	small := []byte("tiny")
	rec := enc.Encode(small, Sum(small))
	if len(rec) != RecordAlign {
		t.Fatalf("record of 4 bytes is %d long", len(rec))
	}
	if !allZeroBytes(rec[HeaderSize+len(small):]) {
		t.Fatal("stale bytes of the previous record in the padding")
	}
}

func allZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// reseal recomputes a header's checksum, as a corruption that also hit the checksum would.
func reseal(rec []byte) {
	binary.LittleEndian.PutUint32(rec[48:52], crc32.Checksum(rec[0:48], crcTable))
}

// expectCorrupt decodes rec and fails unless that is ErrCorrupt with no bytes returned.
func expectCorrupt(t *testing.T, what string, rec []byte, want Hash, size int) {
	t.Helper()
	expectCorruptOr(t, what, rec, want, size, nil)
}

// expectCorruptOr is expectCorrupt that also accepts the exact bytes orig: a flipped payload bit
// need not change what an LZ4 block decodes to (a match offset inside a run of equal bytes), and
// the rule is only that wrong bytes are never returned.
//
// Both checks are tried: the deep one (the content hash) and the one reads use (the payload CRC).
func expectCorruptOr(t *testing.T, what string, rec []byte, want Hash, size int, orig []byte) {
	t.Helper()
	for _, deep := range []bool{true, false} {
		got, err := decodeRecord(nil, rec, want, size, deep)
		if err == nil && orig != nil && bytes.Equal(got, orig) {
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s (deep %v): err = %v, want ErrCorrupt", what, deep, err)
		}
		if got != nil {
			t.Errorf("%s (deep %v): returned %d bytes along with the error", what, deep, len(got))
		}
	}
}

func TestRecordCorruption(t *testing.T) {
	var enc Encoder
	for _, tc := range testChunks() {
		if len(tc.data) > 64<<10 {
			continue // the 4 MiB chunks add nothing here but time
		}
		t.Run(tc.name, func(t *testing.T) {
			sum := Sum(tc.data)
			good := append([]byte(nil), enc.Encode(tc.data, sum)...)
			h, err := decodeHeader(good)
			if err != nil {
				t.Fatal(err)
			}
			payloadEnd := HeaderSize + h.StoredSize
			mutate := func(f func(rec []byte)) []byte {
				rec := append([]byte(nil), good...)
				f(rec)
				return rec
			}

			// Every bit of the checksummed header: magic, version, codec, pad, sizes, hash, checksum.
			for i := 0; i < 52; i++ {
				for bit := range 8 {
					rec := mutate(func(r []byte) { r[i] ^= 1 << bit })
					expectCorrupt(t, "header byte "+strconv.Itoa(i)+" bit "+strconv.Itoa(bit), rec, sum, len(tc.data))
				}
			}
			// Payload bits: first, last and a spread in between.
			for _, i := range spread(HeaderSize, payloadEnd, 40) {
				for _, bit := range []int{0, 3, 7} {
					rec := mutate(func(r []byte) { r[i] ^= 1 << bit })
					expectCorruptOr(t, "payload byte "+strconv.Itoa(i)+" bit "+strconv.Itoa(bit), rec, sum, len(tc.data), tc.data)
				}
			}
			// Several payload bytes at once.
			rng := rand.New(rand.NewPCG(uint64(len(tc.data)), 3))
			for range 50 {
				rec := mutate(func(r []byte) {
					for range 1 + rng.IntN(8) {
						r[HeaderSize+rng.IntN(h.StoredSize)] = byte(rng.Uint32())
					}
				})
				if bytes.Equal(rec, good) {
					continue
				}
				expectCorruptOr(t, "random payload bytes", rec, sum, len(tc.data), tc.data)
			}
			// Corruptions whose header checksum was recomputed: only the content checks are left.
			resealed := []struct {
				what string
				f    func(r []byte)
			}{
				{"raw size +1", func(r []byte) { binary.LittleEndian.PutUint32(r[8:12], uint32(h.RawSize+1)) }},
				{"raw size -1", func(r []byte) { binary.LittleEndian.PutUint32(r[8:12], uint32(h.RawSize-1)) }},
				{"raw size 0", func(r []byte) { binary.LittleEndian.PutUint32(r[8:12], 0) }},
				{"raw size huge", func(r []byte) { binary.LittleEndian.PutUint32(r[8:12], MaxChunkSize+1) }},
				{"stored size 0", func(r []byte) { binary.LittleEndian.PutUint32(r[12:16], 0) }},
				{"stored size -1", func(r []byte) { binary.LittleEndian.PutUint32(r[12:16], uint32(h.StoredSize-1)) }},
				{"stored size past the record", func(r []byte) { binary.LittleEndian.PutUint32(r[12:16], uint32(len(r))) }},
				{"other codec", func(r []byte) { r[5] ^= 1 }},
				{"unknown codec", func(r []byte) { r[5] = 7 }},
				{"version 3", func(r []byte) { r[4] = 3 }},
				{"version 1 (no payload CRC)", func(r []byte) { r[4] = 1; r[HeaderSize+h.StoredSize/2] ^= 0x10 }},
				{"payload CRC", func(r []byte) { r[53] ^= 0x01 }},
				{"payload flipped", func(r []byte) { r[HeaderSize+h.StoredSize/2] ^= 0x10 }},
			}
			for _, c := range resealed {
				rec := mutate(func(r []byte) { c.f(r); reseal(r) })
				if c.what == "raw size -1" && h.RawSize == 1 {
					continue // raw size 0 is tested on its own
				}
				// The caller wants what the metadata says, which the corruption did not change...
				expectCorrupt(t, c.what, rec, sum, len(tc.data))
				// ...and a corrupted record must not decode as what its own header claims either.
				hh, err := decodeHeader(rec)
				if err == nil && c.what != "stored size past the record" {
					expectCorrupt(t, c.what+" (header's own size)", rec, sum, hh.RawSize)
				}
			}
			// A record that names another chunk, with a valid checksum: the hash in the header is the
			// wanted one but the payload is another chunk's.
			other := append([]byte(nil), tc.data...)
			other[len(other)-1] ^= 0x80
			forged := append([]byte(nil), enc.Encode(other, Sum(other))...)
			copy(forged[16:48], sum[:])
			reseal(forged)
			// Only the deep check catches this forgery: it recomputed the header's checksum, which no
			// accidental corruption does, and carries the other payload's valid CRC.
			if got, err := DecodeRecord(nil, forged, sum, len(tc.data)); !errors.Is(err, ErrCorrupt) || got != nil {
				t.Errorf("payload of another chunk: %d bytes, %v; want ErrCorrupt", len(got), err)
			}

			// Truncations.
			for _, n := range []int{0, 1, 4, 47, 51, HeaderSize - 1, HeaderSize, payloadEnd - 1} {
				if n < 0 || n >= payloadEnd {
					continue
				}
				expectCorrupt(t, "truncated to "+strconv.Itoa(n), good[:n], sum, len(tc.data))
			}
			// Wrong hash, wrong size.
			wrong := sum
			wrong[0] ^= 1
			expectCorrupt(t, "wrong hash", good, wrong, len(tc.data))
			expectCorrupt(t, "wrong size +1", good, sum, len(tc.data)+1)
			expectCorrupt(t, "wrong size -1", good, sum, len(tc.data)-1)
			expectCorrupt(t, "wrong size 0", good, sum, 0)

			// The header's trailing pad and the record's trailing pad carry no information: a flip there
			// must still decode to the right bytes (or fail), never to other bytes.
			for _, i := range append(spread(52, HeaderSize, 4), spread(payloadEnd, len(good), 4)...) {
				rec := mutate(func(r []byte) { r[i] ^= 0xff })
				for _, deep := range []bool{true, false} {
					got, err := decodeRecord(nil, rec, sum, len(tc.data), deep)
					if err == nil && !bytes.Equal(got, tc.data) {
						t.Errorf("pad byte %d flipped (deep %v): wrong bytes returned", i, deep)
					}
				}
			}
			// The good record still decodes: the mutations worked on copies.
			if got, err := DecodeRecord(nil, good, sum, len(tc.data)); err != nil || !bytes.Equal(got, tc.data) {
				t.Fatalf("good record: %v", err)
			}
		})
	}
}

// spread returns up to n offsets from [lo, hi), always including both ends.
func spread(lo, hi, n int) []int {
	if hi <= lo {
		return nil
	}
	out := []int{lo}
	step := max(1, (hi-lo)/n)
	for i := lo + step; i < hi-1; i += step {
		out = append(out, i)
	}
	if hi-1 > lo {
		out = append(out, hi-1)
	}
	return out
}

// FuzzDecodeRecord feeds DecodeRecord arbitrary records. With resealHeader the header checksum is
// recomputed first, so that the fuzzer gets past it to the size, codec and payload checks. The wanted
// hash and size are the ones the record's header names, or, with otherWant, derived from the input.
// DecodeRecord must never panic, must fail with ErrCorrupt and no bytes, or return exactly wantSize
// bytes whose hash is the wanted one.
func FuzzDecodeRecord(f *testing.F) {
	var enc Encoder
	rng := rand.New(rand.NewPCG(5, 5))
	for _, data := range [][]byte{
		[]byte("x"),
		bytes.Repeat([]byte("abc"), 3000),
		randBytes(rng, 300),
		append(make([]byte, 1000), 1),
	} {
		rec := append([]byte(nil), enc.Encode(data, Sum(data))...)
		f.Add(rec, false, false)
		f.Add(rec[:HeaderSize+20], true, false)
		bad := append([]byte(nil), rec...)
		bad[HeaderSize+3] ^= 4
		f.Add(bad, true, false)
		f.Add(rec, false, true)
	}
	f.Add([]byte{}, false, false)
	f.Add([]byte("SNFC\x01\x01\x00\x00"), true, false)
	f.Fuzz(func(t *testing.T, rec []byte, resealHeader, otherWant bool) {
		if len(rec) > 2*MaxChunkSize {
			return
		}
		rec = append([]byte(nil), rec...)
		if resealHeader && len(rec) >= 52 {
			reseal(rec)
		}
		var want Hash
		var size int
		if len(rec) >= 48 {
			copy(want[:], rec[16:48])
			size = int(binary.LittleEndian.Uint32(rec[8:12]))
		}
		if otherWant {
			want = Sum(rec)
			size = len(rec)
		}
		orig := append([]byte(nil), rec...)
		for _, dst := range [][]byte{nil, make([]byte, 0, 64<<10)} {
			got, err := DecodeRecord(dst, rec, want, size)
			if !bytes.Equal(rec, orig) {
				t.Fatal("DecodeRecord modified the record")
			}
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error %v is not ErrCorrupt", err)
				}
				if got != nil {
					t.Fatalf("%d bytes returned with error %v", len(got), err)
				}
				continue
			}
			if len(got) != size {
				t.Fatalf("returned %d bytes, want %d", len(got), size)
			}
			if Sum(got) != want {
				t.Fatal("returned bytes whose hash is not the wanted one")
			}
		}
	})
}

// TestVersion1Records checks that records written before payload checksums (version 1: zero bytes
// where the CRC now is) still decode, checked by their hash in both modes.
func TestVersion1Records(t *testing.T) {
	var enc Encoder
	for _, tc := range testChunks() {
		sum := Sum(tc.data)
		rec := append([]byte(nil), enc.Encode(tc.data, sum)...)
		rec[4] = recordV1
		clear(rec[52:56])
		reseal(rec)
		for _, deep := range []bool{true, false} {
			got, err := decodeRecord(nil, rec, sum, len(tc.data), deep)
			if err != nil || !bytes.Equal(got, tc.data) {
				t.Errorf("%s: version 1 record (deep %v): %d bytes, %v", tc.name, deep, len(got), err)
			}
		}
	}
}
