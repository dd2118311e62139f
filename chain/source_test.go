package chain

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/snapfs/snapfs/store"
	"golang.org/x/sys/unix"
)

// TestDiskReadCachedOrDirect checks that a disk opened for direct reads reads the same bytes whether
// the page cache holds them (read through it) or not (read directly), the short tail included, and
// that cached tells the two apart.
func TestDiskReadCachedOrDirect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	want := make([]byte, 3<<20+1000)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := openDisk(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.useDirect()
	if d.direct == nil {
		t.Skip("the filesystem of the test directory takes no direct I/O")
	}
	evict := func() {
		t.Helper()
		if err := d.f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fadvise(int(d.f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func() []byte {
		t.Helper()
		buf := store.AlignedBuf(1 << 20)
		var got []byte
		for off := int64(0); ; off += 1 << 20 {
			p := buf[:min(1<<20, max(0, int64(len(want))-off))]
			if len(p) == 0 {
				return got
			}
			n, err := d.readAt(p, off)
			if err != nil && err != io.EOF {
				t.Fatalf("read at %d: %v", off, err)
			}
			got = append(got, p[:n]...)
		}
	}
	for _, tc := range []struct {
		name   string
		cached bool
	}{{"uncached", false}, {"cached", true}, {"uncached again", false}} {
		if tc.cached {
			if _, err := io.Copy(io.Discard, io.NewSectionReader(d.f, 0, int64(len(want)))); err != nil {
				t.Fatal(err)
			}
		} else {
			evict()
		}
		if got := d.cached(0, 1<<20); got != tc.cached && !d.noCachestat.Load() {
			t.Errorf("%s: cached = %v", tc.name, got)
		}
		if got := readAll(); !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes, not the disk's %d", tc.name, len(got), len(want))
		}
	}
	// Direct reads leave nothing in the page cache.
	evict()
	readAll()
	if d.cached(0, int64(len(want))) {
		t.Error("a direct read of the whole disk left it in the page cache")
	}
}
