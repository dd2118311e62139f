package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataBytesMigration opens a store whose schema predates snapshots' data bytes and volumes'
// disk identities: its snapshots say their data bytes are not known, snapshots recorded after the
// upgrade keep theirs, and its volumes' identities are not known.
func TestDataBytesMigration(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := newSnapshotRow(t, s, "old")
	s.Close()

	// Back to the schema before the column, as a store made by an earlier snapfs has it.
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`ALTER TABLE volumes DROP COLUMN ident`, `ALTER TABLE snapshots DROP COLUMN data_bytes`,
		`PRAGMA user_version = 2`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s = openStore(t, dir, Options{})
	var fresh int64
	err = s.Update(ctx, func(tx *Tx) error {
		o, err := tx.SnapshotByID(old)
		if err != nil {
			return err
		}
		seq, err := tx.TakeSeq(o.ChainID)
		if err != nil {
			return err
		}
		fresh, err = tx.InsertSnapshot(Snapshot{ChainID: o.ChainID, Seq: seq, Name: "s2", Volume: "old", Size: 1 << 20,
			Status: "ready", DataBytes: UnknownDataBytes})
		if err != nil {
			return err
		}
		return tx.SetSnapshotDataBytes(fresh, 12345)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(ctx, func(tx *Tx) error {
		if v, err := tx.VolumeByName("old"); err != nil || v.Ident != "" {
			t.Errorf("volume from before the upgrade: %+v, %v; want no identity", v, err)
		}
		for id, want := range map[int64]int64{old: UnknownDataBytes, fresh: 12345} {
			got, err := tx.SnapshotByID(id)
			if err != nil {
				return err
			}
			if got.DataBytes != want {
				t.Errorf("snapshot %d: DataBytes %d, want %d", id, got.DataBytes, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReaderOfAnotherSchema: a reader of a store on an older schema says which command upgrades
// it, and reads it once that has run; one of a newer schema says to upgrade snapfs.
func TestReaderOfAnotherSchema(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	s.Close()
	setVersion := func(v int) {
		t.Helper()
		db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "meta.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, v)); err != nil {
			t.Fatal(err)
		}
	}

	setVersion(SchemaVersion + 1)
	if _, err := Open(ctx, dir, Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "upgrade snapfs") {
		t.Errorf("reader of a newer store: %v, want to be told to upgrade snapfs", err)
	}

	// Back to the schema before the last migration, whose statements can run again.
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`ALTER TABLE volumes DROP COLUMN ident`, `ALTER TABLE snapshots DROP COLUMN data_bytes`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	setVersion(2)
	if _, err := Open(ctx, dir, Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "snapfs gc") {
		t.Errorf("reader of an older store: %v, want to be told which command upgrades it", err)
	}
	openStore(t, dir, Options{}).Close() // a writer, as gc opens it
	r, err := Open(ctx, dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reader once a writer upgraded the store: %v", err)
	}
	r.Close()
}
