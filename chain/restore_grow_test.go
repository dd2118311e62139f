package chain

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

// TestRestoreOntoShrunkImage: an image file shrunk since its snapshot is restored whole, grown back
// to the snapshot's size; a restore that fails leaves the file's length as it was; a block device
// smaller than the snapshot, which cannot grow, is refused with nothing written.
func TestRestoreOntoShrunkImage(t *testing.T) {
	u := newUnit(t, Options{})
	const size = 20 * testChunk
	path := u.disk("v", size)
	u.write(path, 0, u.random(size))
	want := u.read(path)
	u.snap("v", "s1")

	shrink := func() {
		t.Helper()
		if err := os.Truncate(path, 8*testChunk); err != nil {
			t.Fatal(err)
		}
		u.write(path, 0, u.random(testChunk))
	}
	shrink()
	st, err := u.m.Restore(u.ctx, "v/s1", RestoreOptions{})
	if err != nil {
		t.Fatalf("restore onto the shrunk image: %v", err)
	}
	if got := u.read(path); !bytes.Equal(got, want) {
		t.Errorf("restored image: %d bytes, want the snapshot's %d, bit-exact", len(got), len(want))
	}
	if st.Size != size {
		t.Errorf("restore stats: %+v", st)
	}

	shrink()
	before := u.read(path)
	ctx, cancel := context.WithCancel(u.ctx)
	defer cancel()
	_, err = u.m.Restore(ctx, "v/s1", RestoreOptions{Progress: func(done, total int64) { cancel() }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled restore onto the shrunk image: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != int64(len(before)) {
		t.Errorf("after a failed restore the image is %v bytes (%v), want its %d", fi.Size(), err, len(before))
	}

	requireRoot(t, "losetup")
	dev := attachLoop(t, sparseImage(t, t.TempDir(), "small.img", 8*testChunk))
	head := readHead(t, dev, 8*testChunk)
	_, err = u.m.Restore(u.ctx, "v/s1", RestoreOptions{To: dev, Force: true})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "too small") {
		t.Errorf("restore onto a smaller block device: %v, want it refused as too small", err)
	}
	if !bytes.Equal(readHead(t, dev, 8*testChunk), head) {
		t.Error("the refused restore wrote the device")
	}
}
