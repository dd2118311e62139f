package chain

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snapfs/snapfs/store"
)

func TestAddVolumeRefusesADiskTwice(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 1<<20)
	if _, err := e.m.AddVolume(ctx, VolumeSpec{Name: "a", Source: e.disk}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(e.dir, "link.img")
	if err := os.Symlink(e.disk, link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(e.dir, "hard.img")
	if err := os.Link(e.disk, hard); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{e.disk, link, hard} {
		if _, err := e.m.AddVolume(ctx, VolumeSpec{Name: "b", Source: src}); !errors.Is(err, ErrExists) {
			t.Errorf("second volume of %s: %v, want ErrExists", src, err)
		}
	}
	if vs, _ := e.m.Volumes(ctx); len(vs) != 1 {
		t.Fatalf("%d volumes after refusals, want 1", len(vs))
	}
}

func TestForgottenVolumeChain(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 1<<20)
	e.m.AddVolume(ctx, VolumeSpec{Name: "a", Source: e.disk})
	s, err := e.m.CreateSnapshot(ctx, "a", CreateOptions{Name: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.RemoveVolume(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	c, err := e.m.Chain(ctx, "a")
	if err != nil || c.Volume != "" || c.Snapshots != 1 {
		t.Fatalf("chain after volume rm: %+v, %v", c, err)
	}
	if _, err := e.m.DeleteSnapshot(ctx, s.Ref()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Chain(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty chain of a forgotten volume: %v, want gone", err)
	}
	// A volume without snapshots leaves no chain behind either.
	e.m.AddVolume(ctx, VolumeSpec{Name: "b", Source: e.disk})
	e.m.CreateSnapshot(ctx, "b", CreateOptions{Name: "x"})
	e.m.DeleteSnapshot(ctx, "b/x")
	if c, err := e.m.Chain(ctx, "b"); err != nil || c.Snapshots != 0 {
		t.Fatalf("a volume's empty chain stays while the volume does: %+v, %v", c, err)
	}
	e.m.RemoveVolume(ctx, "b")
	if _, err := e.m.Chain(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty chain after volume rm: %v, want gone", err)
	}
}

func TestParseMountInfo(t *testing.T) {
	e, ok := ParseMountInfo(`42 26 0:38 / /tmp/my\040mnt rw,nosuid,nodev,relatime shared:1 - fuse.snapfs /var/lib/snap\134fs rw,user_id=0`)
	if !ok || e.Dir != "/tmp/my mnt" || e.Type != "fuse.snapfs" || e.Source != `/var/lib/snap\fs` || e.Dev != "0:38" {
		t.Errorf("ParseMountInfo = %+v, %v", e, ok)
	}
	ov, ok := ParseMountInfo(`50 27 0:42 / /m rw - overlay overlay rw,lowerdir=/l\0541:/l2,upperdir=/u,workdir=/w,lowerdir+=/l3,lowerdir+=/l4`)
	if got := overlayLayers(ov); !ok || !slices.Equal(got, []string{"/u", "/l,1", "/l2", "/l3", "/l4"}) {
		t.Errorf("overlay layers of %+v: %q", ov, got)
	}
	if _, ok := ParseMountInfo("garbage"); ok {
		t.Error("parsed garbage")
	}
	if got := unescapeMount(`a\04`); got != `a\04` {
		t.Errorf("unescapeMount of a short escape = %q", got)
	}
}

func TestDefaultSnapshotName(t *testing.T) {
	now := time.Date(2026, 11, 25, 3, 4, 5, 0, time.Local)
	taken := map[string]bool{"v-20261125-030405": true, "v-20261125-030405-2": true}
	free := func(n string) (bool, error) { return taken[n], nil }
	if got, _ := DefaultSnapshotName("v", now, free); got != "v-20261125-030405-3" {
		t.Errorf("with two taken: %q", got)
	}
	long := strings.Repeat("x", 128)
	got, _ := DefaultSnapshotName(long, now, func(n string) (bool, error) { return n == long[:112]+"-20261125-030405", nil })
	if len(got) != 128 || !strings.HasSuffix(got, "-20261125-030405-2") || ValidateName(got) != nil {
		t.Errorf("long volume: %q", got)
	}
}

// TestVolumeKeepsToItsDisk: a volume's path that comes to name another disk (an image file replaced
// by another) is refused, for snapshots and as the default restore target, until the user says it
// is the volume's disk now; a disk rewritten in place is the same disk; a volume from before disk
// identities were kept learns its disk's at its next snapshot.
func TestVolumeKeepsToItsDisk(t *testing.T) {
	ctx := context.Background()
	u := newUnit(t, Options{})
	size := 1 << 20
	path := u.disk("v", int64(size))
	u.write(path, 0, u.random(size))
	first := u.read(path)
	s1 := u.snap("v", "s1")
	u.write(path, 0, u.random(size)) // in place: the same disk
	u.snap("v", "s2")

	other := u.random(size)
	replacement := path + ".new"
	if err := os.WriteFile(replacement, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(replacement, path); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.CreateSnapshot(ctx, "v", CreateOptions{Name: "s3"}); !errors.Is(err, ErrOtherDisk) ||
		!strings.Contains(err.Error(), "--new-disk") {
		t.Fatalf("snapshot of another disk at the volume's path: %v, want ErrOtherDisk saying --new-disk", err)
	}
	if _, err := u.m.Restore(ctx, s1.Ref(), RestoreOptions{}); !errors.Is(err, ErrOtherDisk) {
		t.Fatalf("restore onto another disk at the volume's path: %v, want ErrOtherDisk", err)
	}
	if !bytes.Equal(u.read(path), other) {
		t.Fatal("a refused restore changed the other disk")
	}
	if names := u.names("v"); !slices.Equal(names, []string{"s1", "s2"}) {
		t.Fatalf("snapshots after the refusals: %v", names)
	}

	// The user says it is the volume's disk now: the snapshot is taken, and the next ones too.
	if _, err := u.m.CreateSnapshot(ctx, "v", CreateOptions{Name: "s3", NewDisk: true}); err != nil {
		t.Fatal(err)
	}
	u.snap("v", "s4")
	if _, err := u.m.Restore(ctx, s1.Ref(), RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(u.read(path), first) {
		t.Fatal("restore onto the adopted disk differs")
	}

	// Replaced again: --force (which is about disks in use) does not pass, --new-disk restores onto
	// it and adopts it.
	if err := os.WriteFile(replacement, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(replacement, path); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.Restore(ctx, s1.Ref(), RestoreOptions{Force: true}); !errors.Is(err, ErrOtherDisk) ||
		!strings.Contains(err.Error(), "--new-disk") {
		t.Fatalf("forced restore onto another disk: %v, want ErrOtherDisk saying --new-disk", err)
	}
	if _, err := u.m.Restore(ctx, s1.Ref(), RestoreOptions{NewDisk: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(u.read(path), first) {
		t.Fatal("restore with --new-disk differs")
	}
	u.snap("v", "s4b")

	// A volume from before identities were kept: its next snapshot records its disk's.
	if err := u.m.st.Update(ctx, func(tx *store.Tx) error {
		v, err := tx.VolumeByName("v")
		if err != nil {
			return err
		}
		return tx.SetVolumeIdent(v.ID, "")
	}); err != nil {
		t.Fatal(err)
	}
	u.snap("v", "s5")
	var ident string
	u.m.st.View(ctx, func(tx *store.Tx) error {
		v, err := tx.VolumeByName("v")
		ident = v.Ident
		return err
	})
	if ident == "" || !strings.HasPrefix(ident, "file ino ") {
		t.Fatalf("identity recorded at the snapshot: %q", ident)
	}

	// The image file deleted and restored from a snapshot: the file made is the volume's disk.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.Restore(ctx, s1.Ref(), RestoreOptions{}); err != nil {
		t.Fatalf("restore onto the volume's deleted image file: %v", err)
	}
	u.snap("v", "s6")
}

// TestOtherDiskRefusalNamesVolume: a restore to a volume's path that now holds another disk is
// refused naming the volume (not its chain, which is named otherwise once the name was reused) and
// the path as the restore's target.
func TestOtherDiskRefusalNamesVolume(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("r", 4*testChunk)
	u.write(path, 0, u.random(4*testChunk))
	u.snap("r", "old")
	if err := u.m.RemoveVolume(u.ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: "r", Source: path, ChunkSize: testChunk}); err != nil {
		t.Fatal(err)
	}
	s := u.snap("r", "s1")
	if s.Chain == "r" {
		t.Fatalf("the re-added volume's chain is %q: want a chain named apart from the first", s.Chain)
	}
	other := path + ".new"
	if err := os.WriteFile(other, u.random(4*testChunk), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	_, err := u.m.Restore(u.ctx, s.Ref(), RestoreOptions{})
	if !errors.Is(err, ErrOtherDisk) || !strings.Contains(err.Error(), "target "+path+": another disk than volume r was added with") {
		t.Errorf("restore onto the replaced disk: %v, want refused naming target %s and volume r", err, path)
	}
}
