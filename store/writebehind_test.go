package store

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWriteBehindFailure fills the store's filesystem in the middle of a transaction's records,
// which are written in the background: the transaction must fail with the disk's error at its
// sync and commit nothing, the failure must not leak into the next transaction, and what was
// committed before must read back.
func TestWriteBehindFailure(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to mount a tmpfs (CI=true: end-to-end tests must run)")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=6m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	s := openStore(t, dir, Options{})
	rng := rand.New(rand.NewPCG(4, 2))
	keep := randBytes(rng, 64<<10)
	c := putChunks(t, s, keep)[0]

	// 8 MiB of incompressible records: more than the filesystem holds, more than one stage.
	var enc Encoder
	var items []NewChunk
	for range 128 {
		d := randBytes(rng, 64<<10)
		items = append(items, NewChunk{Hash: Sum(d), Size: len(d), Rec: append([]byte(nil), enc.Encode(d, Sum(d))...)})
	}
	err := s.Update(context.Background(), func(tx *Tx) error {
		_, err := tx.PutChunks(items)
		return err
	})
	if err == nil || !IsFull(err) {
		t.Fatalf("transaction past the end of the disk: %v, want a full-disk error", err)
	}
	if st := stats(t, s); st.Chunks != 1 {
		t.Errorf("the failed transaction left chunks: %+v", st)
	}
	// The next transaction neither sees that failure nor fails for want of the space it took.
	small := randBytes(rng, 20000)
	c2 := putChunks(t, s, small)[0]
	readBack(t, s, c, keep)
	readBack(t, s, c2, small)
	checkMetadata(t, s)
}
