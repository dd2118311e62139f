package chain

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
