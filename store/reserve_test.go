package store

import (
	"os"
	"path/filepath"
	"testing"
)

// TestEmptyReserveIsFilled: a reserve file left empty (a crash between creating and allocating it)
// is no reserve: releasing it says there was nothing to free, and EnsureReserve allocates it.
func TestEmptyReserveIsFilled(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	path := filepath.Join(dir, "reserve")
	s.EnsureReserve()
	if s.reserveBytes() == 0 {
		t.Fatal("no reserve after EnsureReserve")
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if s.ReleaseReserve() {
		t.Error("releasing an empty reserve file said it freed space")
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil { // as the crash left it
		t.Fatal(err)
	}
	s.EnsureReserve()
	if got, want := s.reserveBytes(), s.reserveSize(); got < want {
		t.Fatalf("reserve after EnsureReserve: %d bytes allocated, want %d", got, want)
	}
	if _, err := os.Stat(path + ".new"); !os.IsNotExist(err) {
		t.Errorf("the reserve's temporary file is left: %v", err)
	}
	if !s.ReleaseReserve() {
		t.Error("releasing the reserve said there was nothing to free")
	}
}
