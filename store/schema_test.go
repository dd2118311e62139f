package store

import (
	"context"
	"database/sql"
	"path/filepath"
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
