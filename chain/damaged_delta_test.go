package chain

import (
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

// TestDamagedDeltaFailsRead: a delta row damaged to name another, sound chunk of the wrong length
// (a 4 KiB disk tail where the image has a 16 KiB chunk) makes a read there fail as corrupt, as
// restore does, instead of spinning on a chunk it cannot advance past or serving a wrong length.
func TestDamagedDeltaFailsRead(t *testing.T) {
	u := newUnit(t, Options{CacheBytes: 1})
	a := u.disk("a", 4*testChunk)
	u.write(a, 0, u.random(4*testChunk))
	s1 := u.snap("a", "s1")
	b := u.disk("b", testChunk+4096)
	u.write(b, 0, u.random(testChunk+4096))
	u.snap("b", "s1")

	db, err := sql.Open("sqlite3", "file:"+filepath.Join(u.dir, "store", "meta.db")+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(`UPDATE deltas SET chunk_id = (SELECT id FROM chunks WHERE size = 4096)
		WHERE snapshot_id = ? AND idx = 0`, s1.ID)
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("damage the delta: %v (%d rows)", err, n)
	}

	im, err := u.m.OpenImage(u.ctx, s1.Ref())
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for _, tc := range []struct {
		name string
		len  int
		off  int64
	}{
		{"part of the chunk", 8192, 0},
		{"into the chunk past its damaged length", 4096, 6144},
		{"the whole chunk", testChunk, 0},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := im.ReadAt(make([]byte, tc.len), tc.off)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("read of %s: %v, want corrupt", tc.name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("read of %s still running after 10 s", tc.name)
		}
	}
	buf := make([]byte, testChunk)
	if _, err := im.ReadAt(buf, testChunk); err != nil {
		t.Errorf("read of a sound chunk: %v", err)
	}
}
