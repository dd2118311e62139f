package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations[i] brings the schema from version i to i+1. Never edit a released entry: append.
// Ids are AUTOINCREMENT: a snapshot id is a user-visible reference and must never name a different
// snapshot after a delete.
var migrations = []string{
	`
CREATE TABLE config (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE packs (
	id         INTEGER PRIMARY KEY,
	size       INTEGER NOT NULL DEFAULT 0,
	live_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE chunks (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	hash        BLOB    NOT NULL UNIQUE,
	size        INTEGER NOT NULL,
	stored_size INTEGER NOT NULL,
	pack_id     INTEGER NOT NULL REFERENCES packs(id),
	offset      INTEGER NOT NULL,
	refs        INTEGER NOT NULL CHECK (refs >= 0)
);
CREATE INDEX chunks_pack ON chunks(pack_id, offset);
CREATE INDEX chunks_unreferenced ON chunks(id) WHERE refs = 0;
CREATE TABLE volumes (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	name       TEXT    NOT NULL UNIQUE,
	kind       TEXT    NOT NULL,
	instance   TEXT    NOT NULL DEFAULT '',
	source     TEXT    NOT NULL,
	size       INTEGER NOT NULL,
	chunk_size INTEGER NOT NULL,
	managed    INTEGER NOT NULL DEFAULT 0,
	created    INTEGER NOT NULL
);
CREATE INDEX volumes_instance ON volumes(instance) WHERE instance <> '';
CREATE TABLE chains (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	name       TEXT    NOT NULL UNIQUE,
	volume_id  INTEGER UNIQUE REFERENCES volumes(id) ON DELETE SET NULL,
	source     TEXT    NOT NULL,
	region     TEXT    NOT NULL,
	chunk_size INTEGER NOT NULL,
	created    INTEGER NOT NULL,
	next_seq   INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE snapshots (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	chain_id INTEGER NOT NULL REFERENCES chains(id),
	seq      INTEGER NOT NULL,
	name     TEXT    NOT NULL,
	volume   TEXT    NOT NULL,
	size     INTEGER NOT NULL,
	created  INTEGER NOT NULL,
	status   TEXT    NOT NULL,
	origin   INTEGER NOT NULL DEFAULT 0,
	UNIQUE (chain_id, name),
	UNIQUE (chain_id, seq)
);
CREATE TABLE deltas (
	snapshot_id INTEGER NOT NULL REFERENCES snapshots(id),
	idx         INTEGER NOT NULL,
	chunk_id    INTEGER REFERENCES chunks(id),
	PRIMARY KEY (snapshot_id, idx)
) WITHOUT ROWID;
`,
	// Deleting a chunk row checks the foreign key of deltas.chunk_id: without an index each check
	// scanned every delta, which made freeing a snapshot's chunks quadratic.
	`CREATE INDEX deltas_chunk ON deltas(chunk_id);`,
	// The bytes of a snapshot's disk that hold data (its chunks that are not holes): images report
	// them as their blocks, as a sparse file does, so that du shows them and cp copies only them.
	// NULL for snapshots made before they were recorded.
	`ALTER TABLE snapshots ADD COLUMN data_bytes INTEGER;`,
	// What identifies a volume's disk beyond its path (see chain's diskIdent): a path can come to
	// name another disk (a device renumbered at boot, an image file replaced), whose snapshots must
	// not join this disk's chain, nor this disk's snapshots be restored onto it. '' = not known.
	`ALTER TABLE volumes ADD COLUMN ident TEXT NOT NULL DEFAULT '';`,
}

// SchemaVersion is the schema version this build writes.
var SchemaVersion = len(migrations)

// newerSchema is the error for a store of schema version v, written by a newer snapfs.
func newerSchema(v int) error {
	return fmt.Errorf("schema version %d is newer than this snapfs (%d): upgrade snapfs", v, SchemaVersion)
}

func migrate(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return newerSchema(v)
	}
	for ; v < len(migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, v+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
		}
	}
	return nil
}
