package chain

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// testEnv is a store and a disk image in a temporary directory.
type testEnv struct {
	t    *testing.T
	dir  string
	m    *Manager
	disk string
}

func newEnv(t *testing.T, size int64) *testEnv {
	t.Helper()
	dir := t.TempDir()
	m, err := Open(context.Background(), filepath.Join(dir, "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, size); err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, dir: dir, m: m, disk: disk}
}

// scribble writes n random runs of up to maxLen random bytes into the disk.
func (e *testEnv) scribble(rng *rand.Rand, n int, maxLen int) {
	e.t.Helper()
	f, err := os.OpenFile(e.disk, os.O_RDWR, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	for range n {
		l := 1 + rng.IntN(maxLen)
		off := rng.Int64N(fi.Size() - int64(l) + 1)
		buf := make([]byte, l)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *testEnv) diskBytes() []byte {
	e.t.Helper()
	b, err := os.ReadFile(e.disk)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *testEnv) imageBytes(ref string) []byte {
	e.t.Helper()
	im, err := e.m.OpenImage(context.Background(), ref)
	if err != nil {
		e.t.Fatalf("open %s: %v", ref, err)
	}
	defer im.Close()
	b, err := io.ReadAll(io.NewSectionReader(im, 0, im.Size()))
	if err != nil {
		e.t.Fatalf("read %s: %v", ref, err)
	}
	return b
}

func TestSnapshotDeleteRestoreClone(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 8<<20+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	if _, err := e.m.AddVolume(ctx, VolumeSpec{Name: "vol", Source: e.disk}); err != nil {
		t.Fatal(err)
	}
	var states [][]byte
	var refs []string
	for i := range 3 {
		e.scribble(rng, 20, 100000)
		states = append(states, e.diskBytes())
		s, err := e.m.CreateSnapshot(ctx, "vol", CreateOptions{Name: "s" + string(rune('1'+i))})
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, s.Ref())
	}
	for i, ref := range refs {
		if got := e.imageBytes(ref); !bytes.Equal(got, states[i]) {
			t.Fatalf("%s differs from the disk at snapshot time", ref)
		}
	}
	st, err := e.m.DeleteSnapshot(ctx, refs[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("delete freed %+v", st)
	for _, i := range []int{0, 2} {
		if got := e.imageBytes(refs[i]); !bytes.Equal(got, states[i]) {
			t.Fatalf("%s differs after deleting the middle snapshot", refs[i])
		}
	}
	// Restore the first snapshot onto the disk.
	rs, err := e.m.Restore(ctx, refs[0], RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.diskBytes(), states[0]) {
		t.Fatal("restored disk differs")
	}
	t.Logf("restore %+v", rs)
	cl := filepath.Join(e.dir, "clone.img")
	if _, err := e.m.Clone(ctx, refs[2], CloneOptions{To: cl, Volume: "clone"}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(cl)
	if sha256.Sum256(got) != sha256.Sum256(states[2]) {
		t.Fatal("clone differs")
	}
	rep, err := e.m.Verify(ctx, nil, nil)
	if err != nil || len(rep.Faults) > 0 {
		t.Fatalf("verify: %v %+v", err, rep.Faults)
	}
	if _, err := e.m.DeleteSnapshot(ctx, refs[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
}
