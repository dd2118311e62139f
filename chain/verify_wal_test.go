package chain

import (
	"database/sql"
	"path/filepath"
	"sync"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

// TestVerifyLetsTheWALCheckpoint: a verify, which can run for hours, holds no read transaction
// for its whole run: a checkpoint of the metadata's WAL started while it runs, after a write,
// completes. (One long read kept SQLite from checkpointing, and the WAL grew with every snapshot
// made meanwhile.)
func TestVerifyLetsTheWALCheckpoint(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("v", 1<<20)
	u.write(path, 0, u.random(1<<20))
	u.snap("v", "s1")
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(u.dir, "store", "meta.db")+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	var once sync.Once
	var busy, frames, done int
	var ckptErr error
	_, err = u.m.Verify(u.ctx, nil, func(int64, int64) {
		once.Do(func() {
			u.disk("w", 1<<20) // a write while the verify runs
			ckptErr = db.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &done)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if ckptErr != nil || busy != 0 {
		t.Errorf("checkpoint during verify: busy %d (%d of %d frames), %v; want it done", busy, done, frames, ckptErr)
	}
}
