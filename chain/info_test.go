package chain

import "testing"

// TestSnapshotInfoParent: a snapshot's parent is the newest ready snapshot before it: not one
// deleted, nor one deleted while an image of it is open.
func TestSnapshotInfoParent(t *testing.T) {
	u := newUnit(t, Options{})
	disk := u.disk("v", 8*testChunk)
	a := u.snap("v", "a")
	u.touch(disk, 1)
	u.snap("v", "b")
	u.touch(disk, 2)
	c := u.snap("v", "c")
	parent := func() int64 {
		t.Helper()
		s, err := u.m.SnapshotInfo(u.ctx, c.Ref())
		if err != nil {
			t.Fatal(err)
		}
		return s.Parent
	}
	if _, err := u.m.DeleteSnapshot(u.ctx, "v/b"); err != nil {
		t.Fatal(err)
	}
	if p := parent(); p != a.ID {
		t.Errorf("parent once b is deleted: %d, want a (%d)", p, a.ID)
	}
	im, err := u.m.OpenImage(u.ctx, "v/a")
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if _, err := u.m.DeleteSnapshot(u.ctx, "v/a"); err != nil {
		t.Fatal(err)
	}
	if p := parent(); p != 0 {
		t.Errorf("parent once a is deleted, an image of it open: %d, want none", p)
	}
	if _, err := u.m.SnapshotInfo(u.ctx, "v/a"); err == nil {
		t.Error("a deleted snapshot open in an image is still described")
	}
}
