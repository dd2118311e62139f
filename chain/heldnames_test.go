package chain

import (
	"maps"
	"testing"
)

// TestHeldNames: the names a chain's snapshots hold are those of ready snapshots and of one deleted
// while an image of it is open, which CreateSnapshot refuses until the image closes.
func TestHeldNames(t *testing.T) {
	u := newUnit(t, Options{})
	disk := u.disk("v", 8*testChunk)
	if held, err := u.m.HeldNames(u.ctx, "v"); err != nil || len(held) != 0 {
		t.Fatalf("names held before the chain exists: %v, %v", held, err)
	}
	u.snap("v", "a")
	u.touch(disk, 1)
	u.snap("v", "b")
	im, err := u.m.OpenImage(u.ctx, "v/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.DeleteSnapshot(u.ctx, "v/a"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": StatusDeleting, "b": StatusReady}
	if held, err := u.m.HeldNames(u.ctx, "v"); err != nil || !maps.Equal(held, want) {
		t.Errorf("names held with a deleted snapshot open: %v, %v; want %v", held, err, want)
	}
	if _, err := u.m.CreateSnapshot(u.ctx, "v", CreateOptions{Name: "a"}); err == nil {
		t.Error("a snapshot took the name of a deleted one still open")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	want = map[string]string{"b": StatusReady}
	if held, err := u.m.HeldNames(u.ctx, "v"); err != nil || !maps.Equal(held, want) {
		t.Errorf("names held once the image closed: %v, %v; want %v", held, err, want)
	}
}
