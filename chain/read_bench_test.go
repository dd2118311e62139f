package chain

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/pierrec/lz4/v4"

	"github.com/snapfs/snapfs/store"
)

// BenchmarkVerifiedRead measures what verification costs a read: Image.ReadAt (header CRC, sizes,
// hash named in the metadata, BLAKE3 of the decoded bytes; chunk cache off) against reading the same
// records from the pack and decoding them with no check at all. 64 KiB chunks, 64 MiB
// of random (stored raw) or text-like (stored LZ4) data, read in 1 MiB requests.
//
//	go test -run '^$' -bench VerifiedRead -benchtime 20x ./chain/
func BenchmarkVerifiedRead(b *testing.B) {
	for _, kind := range []string{"random", "text"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			data := benchData(kind, 64<<20)
			disk := filepath.Join(dir, "disk.img")
			if err := os.WriteFile(disk, data, 0o600); err != nil {
				b.Fatal(err)
			}
			m, err := Open(ctx, filepath.Join(dir, "store"), Options{CacheBytes: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			if _, err := m.AddVolume(ctx, VolumeSpec{Name: "v", Source: disk}); err != nil {
				b.Fatal(err)
			}
			s, err := m.CreateSnapshot(ctx, "v", CreateOptions{Name: "s"})
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			b.Run("verified", func(b *testing.B) {
				im, err := m.OpenImage(ctx, s.Ref())
				if err != nil {
					b.Fatal(err)
				}
				defer im.Close()
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					for off := int64(0); off < im.Size(); off += int64(len(buf)) {
						if _, err := im.ReadAt(buf, off); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
			b.Run("unchecked-decode", func(b *testing.B) {
				var chunks []store.Chunk
				m.Store().View(ctx, func(tx *store.Tx) error {
					return tx.EachChunk(func(c store.Chunk) error { chunks = append(chunks, c); return nil })
				})
				sort.Slice(chunks, func(i, j int) bool { return chunks[i].Offset < chunks[j].Offset })
				packs := map[int64]*os.File{}
				for _, c := range chunks {
					if packs[c.Pack] == nil {
						f, err := os.Open(filepath.Join(m.Store().Dir(), "packs", fmt.Sprintf("%010d.pack", c.Pack)))
						if err != nil {
							b.Fatal(err)
						}
						defer f.Close()
						packs[c.Pack] = f
					}
				}
				rec, raw := make([]byte, store.MaxChunkSize+store.HeaderSize), make([]byte, store.MaxChunkSize)
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					for _, c := range chunks {
						r := rec[:c.StoredSize]
						if _, err := packs[c.Pack].ReadAt(r, c.Offset); err != nil {
							b.Fatal(err)
						}
						payload := r[store.HeaderSize : store.HeaderSize+int(binary.LittleEndian.Uint32(r[12:16]))]
						if store.Codec(r[5]) == store.CodecLZ4 {
							if _, err := lz4.UncompressBlock(payload, raw[:c.Size]); err != nil {
								b.Fatal(err)
							}
						} else {
							copy(raw, payload[:c.Size])
						}
					}
				}
			})
		})
	}
}

// benchData is n bytes of random data, or of text that LZ4 compresses about 2:1.
func benchData(kind string, n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	if kind == "random" {
		rand.NewChaCha8([32]byte{3}).Read(b)
		return b
	}
	words := []string{"snapshot ", "chain ", "volume ", "the ", "of ", "disk ", "block\n", "chunk ", "store ", "pack "}
	for i := 0; i < n; {
		w := words[rng.IntN(len(words))]
		if rng.IntN(4) == 0 {
			w = fmt.Sprintf("%d ", rng.Uint32())
		}
		i += copy(b[i:], w)
	}
	return b
}
