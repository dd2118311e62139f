package chain

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A disk that grows, vanishes or is detached while it is being read: the snapshot either completes
// correctly or fails cleanly (no snapshot, no stored chunk, the earlier snapshots intact). Which of
// the two happens is pinned down here.

// TestSourceUnlinkedDuringSnapshot: an image file unlinked mid-snapshot still reads through the open
// descriptor, so the snapshot completes, bit-exact.
func TestSourceUnlinkedDuringSnapshot(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("vol", 8<<20)
	u.write(path, 0, u.random(8<<20))
	want := u.read(path)
	calls := 0
	s, err := u.m.CreateSnapshot(u.ctx, "vol", CreateOptions{Name: "gone", Progress: func(done, total int64) {
		if calls++; calls == 1 {
			if err := os.Remove(path); err != nil {
				t.Error(err)
			}
		}
	}})
	if err != nil {
		t.Fatalf("snapshot of an unlinked source: %v", err)
	}
	if !bytes.Equal(u.image(s.Ref()), want) {
		t.Fatal("snapshot of a source unlinked mid-read differs from it")
	}
	u.verify()
	// The next snapshot fails cleanly: the source is gone.
	if _, err := u.m.CreateSnapshot(u.ctx, "vol", CreateOptions{Name: "after"}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("snapshot of a vanished source: %v", err)
	}
	if names := u.names(""); len(names) != 1 {
		t.Fatalf("snapshots after the failure: %v", names)
	}
}

// TestSourceGrowsDuringSnapshot: a disk that grows while it is read is snapshotted at the size it
// had when the snapshot started, and that prefix reads bit-exact.
func TestSourceGrowsDuringSnapshot(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("vol", 4<<20)
	u.write(path, 0, u.random(4<<20))
	want := u.read(path)
	calls := 0
	s, err := u.m.CreateSnapshot(u.ctx, "vol", CreateOptions{Name: "grown", Progress: func(done, total int64) {
		if calls++; calls == 1 {
			u.write(path, 4<<20, u.random(2<<20))
		}
	}})
	if err != nil {
		// Failing cleanly would do too; say so if it ever changes.
		t.Fatalf("snapshot of a growing disk: %v", err)
	}
	if got := u.image(s.Ref()); s.Size != 4<<20 || !bytes.Equal(got, want) {
		t.Fatalf("snapshot of a disk that grew: size %d, same bytes %v", s.Size, bytes.Equal(got, want))
	}
	u.verify()
	if next := u.snap("vol", "next"); next.Size != 6<<20 || !bytes.Equal(u.image(next.Ref()), u.read(path)) {
		t.Fatalf("next snapshot of the grown disk: size %d", next.Size)
	}
}

// TestLoopDetachedDuringSnapshot: `losetup -d` on a loop device being read is a lazy detach (the
// kernel clears it at the last close), so the snapshot completes from the open descriptor, bit-exact;
// the next one fails cleanly: the device node is still there, but reads as a disk of size 0.
func TestLoopDetachedDuringSnapshot(t *testing.T) {
	requireRoot(t, "losetup")
	u := newUnit(t, Options{})
	backing := u.dir + "/backing.img"
	data := u.random(8 << 20)
	if err := os.WriteFile(backing, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dev := sh(t, "losetup", "--find", "--show", backing)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: "loop", Source: dev, ChunkSize: testChunk}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	s, err := u.m.CreateSnapshot(u.ctx, "loop", CreateOptions{Name: "detached", Progress: func(done, total int64) {
		if calls++; calls == 1 {
			sh(t, "losetup", "-d", dev)
		}
	}})
	if err != nil {
		t.Fatalf("snapshot of a loop device detached mid-read: %v", err)
	}
	if !bytes.Equal(u.image(s.Ref()), data) {
		t.Fatal("snapshot of a loop device detached mid-read differs from its backing file")
	}
	u.verify()
	before := u.stats()
	_, err = u.m.CreateSnapshot(u.ctx, "loop", CreateOptions{Name: "after"})
	if err == nil || !strings.Contains(err.Error(), "size 0") {
		t.Fatalf("snapshot of the detached device: %v, want a size 0 error", err)
	}
	if names := u.names(""); len(names) != 1 || u.stats() != before {
		t.Fatalf("a failed snapshot of a detached device left %v, %+v", names, u.stats())
	}
}
