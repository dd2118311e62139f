package main

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapfs/snapfs/chain"
)

// TestGCRecordsOldDataSizes: a snapshot from a store made before snapshots' data sizes were recorded
// shows "-" as its data size until `snapfs gc`, which says so and records what a snapshot made now
// would show.
func TestGCRecordsOldDataSizes(t *testing.T) {
	e := newEnv(t)
	imageVolume(e, "d", 3<<20)
	e.ok("snapshot", "create", "d", "--name", "s1")
	want := okJSON[chain.Snapshot](e, "snapshot", "show", "d/s1", "--json").DataBytes
	if want != 3<<20 {
		t.Fatalf("data bytes recorded: %d", want)
	}

	db, err := sql.Open("sqlite3", filepath.Join(e.store, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE snapshots SET data_bytes = NULL`); err != nil {
		t.Fatal(err)
	}
	if out := e.ok("snapshot", "show", "d/s1"); !hasRow(out, "Data:", "-") {
		t.Errorf("show before gc:\n%s", out)
	}
	if out := e.ok("gc"); !strings.Contains(out, "recorded the data size of 1 snapshots") {
		t.Errorf("gc printed %q", out)
	}
	if got := okJSON[chain.Snapshot](e, "snapshot", "show", "d/s1", "--json").DataBytes; got != want {
		t.Errorf("data bytes after gc: %d, want %d", got, want)
	}
	if out := e.ok("snapshot", "show", "d/s1"); !hasRow(out, "Data:", "3.0 MiB") {
		t.Errorf("show after gc:\n%s", out)
	}
	if out := e.ok("gc"); strings.Contains(out, "recorded") {
		t.Errorf("second gc printed %q", out)
	}
}

// hasRow reports whether out has a line whose fields are label and value.
func hasRow(out, label, value string) bool {
	for line := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), label); ok && strings.TrimSpace(rest) == value {
			return true
		}
	}
	return false
}

// TestUpgradeAnOldStore: a store from a snapfs before schema 3 is not read by listings, which say
// which command upgrades it; gc does, and records the data sizes that store did not keep.
func TestUpgradeAnOldStore(t *testing.T) {
	e := newEnv(t)
	imageVolume(e, "d", 2<<20)
	e.ok("snapshot", "create", "d", "--name", "s1")
	db, err := sql.Open("sqlite3", filepath.Join(e.store, "meta.db"))
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
	e.fails(1, "any command that changes the store upgrades it first (snapfs gc, for one)", "snapshot", "ls")
	if out := e.ok("gc"); !strings.Contains(out, "recorded the data size of 1 snapshots") {
		t.Errorf("gc of the old store printed %q", out)
	}
	if got := okJSON[chain.Snapshot](e, "snapshot", "show", "d/s1", "--json").DataBytes; got != 2<<20 {
		t.Errorf("data bytes after the upgrade: %d, want %d", got, 2<<20)
	}
	e.ok("verify")
}
