package chain

import (
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"

	_ "github.com/mattn/go-sqlite3"

	"github.com/snapfs/snapfs/store"
)

// TestGCRecordsDataBytesOfOldSnapshots: snapshots made before snapfs recorded their data bytes (the
// column empty, as a store from before schema 3 has it) get the figure a new snapshot of the same
// disk records, from gc, once; a delete merged into one meanwhile does not change it.
func TestGCRecordsDataBytesOfOldSnapshots(t *testing.T) {
	u := newUnit(t, Options{})
	disk := u.disk("a", 40*testChunk+5000) // a short last chunk
	u.write(disk, 0, u.random(3*testChunk))
	u.write(disk, 39*testChunk, u.random(testChunk+5000))
	s1 := u.snap("a", "s1")
	u.touch(disk, 10, 11)
	u.write(disk, 0, make([]byte, testChunk)) // a chunk of zeros holds no data
	s2 := u.snap("a", "s2")
	u.touch(disk, 20)
	s3 := u.snap("a", "s3")
	want := map[int64]int64{s2.ID: s2.DataBytes, s3.ID: s3.DataBytes}
	if s1.DataBytes != 4*testChunk+5000 || s2.DataBytes != 5*testChunk+5000 || s3.DataBytes != 6*testChunk+5000 {
		t.Fatalf("data bytes as recorded: %d %d %d", s1.DataBytes, s2.DataBytes, s3.DataBytes)
	}

	db, err := sql.Open("sqlite3", "file:"+filepath.Join(u.dir, "store", "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE snapshots SET data_bytes = NULL`); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.DeleteSnapshot(u.ctx, "a/s1"); err != nil { // its deltas merge into s2
		t.Fatal(err)
	}
	for id := range want {
		if got := u.snapshotByID(id).DataBytes; got != store.UnknownDataBytes {
			t.Fatalf("snapshot %d before gc: data bytes %d, want unknown", id, got)
		}
	}

	st, err := u.m.GC(u.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DataBytesRecorded != 2 {
		t.Errorf("gc recorded %d snapshots' data bytes, want 2", st.DataBytesRecorded)
	}
	for id, w := range want {
		if got := u.snapshotByID(id).DataBytes; got != w {
			t.Errorf("snapshot %d after gc: data bytes %d, want %d", id, got, w)
		}
	}
	if st, err := u.m.GC(u.ctx); err != nil || st.DataBytesRecorded != 0 {
		t.Errorf("second gc: %+v, %v; want nothing recorded", st, err)
	}
}

func (u *unit) snapshotByID(id int64) Snapshot {
	u.t.Helper()
	s, err := u.m.Snapshot(u.ctx, strconv.FormatInt(id, 10))
	if err != nil {
		u.t.Fatal(err)
	}
	return s
}
