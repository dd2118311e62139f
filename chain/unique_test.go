package chain

import "testing"

// TestUniqueBytesBesideDeferredDelete lists a snapshot whose successor is deleted but still open:
// deleting the snapshot now merges it into that successor, not into the next ready one, and its
// unique bytes must be what that merge frees.
func TestUniqueBytesBesideDeferredDelete(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("v", 1<<20)
	u.write(path, 0, u.random(1<<20))
	u.snap("v", "s1")
	u.touch(path, 0) // s2 overrides s1's chunk 0; s3 changes nothing
	u.snap("v", "s2")
	u.snap("v", "s3")
	im, err := u.m.OpenImage(u.ctx, "v/s2")
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if st, err := u.m.DeleteSnapshot(u.ctx, "v/s2"); err != nil || !st.Deferred {
		t.Fatalf("delete of an open snapshot: %+v, %v", st, err)
	}
	info, err := u.m.Snapshot(u.ctx, "v/s1")
	if err != nil {
		t.Fatal(err)
	}
	list, err := u.m.Snapshots(u.ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "s1" || list[0].UniqueBytes != info.UniqueBytes {
		t.Fatalf("listed %+v; s1 alone: %+v", list, info)
	}
	st, err := u.m.DeleteSnapshot(u.ctx, "v/s1")
	if err != nil {
		t.Fatal(err)
	}
	if st.FreedBytes == 0 || st.FreedBytes != info.UniqueBytes {
		t.Fatalf("s1 listed %d unique bytes; deleting it freed %d", info.UniqueBytes, st.FreedBytes)
	}
}
