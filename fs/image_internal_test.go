package fs

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	_ "github.com/mattn/go-sqlite3"

	"github.com/snapfs/snapfs/chain"
)

// getxattr returns the value of an image's attribute.
func getxattr(ctx context.Context, n *imageNode, name string) (string, syscall.Errno) {
	buf := make([]byte, 64)
	size, errno := n.Getxattr(ctx, name, buf)
	if errno != 0 {
		return "", errno
	}
	return string(buf[:size]), 0
}

// TestImageInterrupted: an open or a getxattr whose FUSE request was interrupted (its context
// cancelled: the kernel does that when the caller gets a signal, and Go programs get SIGURG all the
// time) is answered as if it had not been, not with EINTR nor with a value made up.
func TestImageInterrupted(t *testing.T) {
	f, m := newTestFS(t)
	ctx := context.Background()
	if _, err := m.CreateSnapshot(ctx, "v", chain.CreateOptions{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	d, err := m.Volume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	// Change half the disk, so that s1 has bytes of its own.
	if err := os.WriteFile(d.Source, make([]byte, 1<<19), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateSnapshot(ctx, "v", chain.CreateOptions{Name: "s2"}); err != nil {
		t.Fatal(err)
	}
	s1, err := m.Snapshot(ctx, "v/s1")
	if err != nil {
		t.Fatal(err)
	}
	if s1.UniqueBytes == 0 {
		t.Fatal("s1 has no unique bytes: the test shows nothing")
	}
	listed, err := m.SnapshotNames(ctx, "v") // what a directory listing makes its images from
	if err != nil {
		t.Fatal(err)
	}
	n := f.newImage(listed[0])

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if got, errno := getxattr(cancelled, n, xattrUniqueBytes); errno != 0 || got != strconv.FormatInt(s1.UniqueBytes, 10) {
		t.Errorf("interrupted getxattr %s: %q, %v; want %d", xattrUniqueBytes, got, errno, s1.UniqueBytes)
	}
	if got, errno := getxattr(cancelled, n, xattrParent); errno != 0 || got != "0" {
		t.Errorf("interrupted getxattr %s: %q, %v; want 0", xattrParent, got, errno)
	}
	fh, _, errno := n.Open(cancelled, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatalf("interrupted open: %v", errno)
	}
	fh.(*imageHandle).Release(ctx)

	// s2 deleted: its parent is still the one it had; its unique bytes are no more.
	n2 := f.newImage(listed[1])
	if _, err := m.DeleteSnapshot(ctx, "v/s2"); err != nil {
		t.Fatal(err)
	}
	if got, errno := getxattr(ctx, n2, xattrParent); errno != 0 || got != strconv.FormatInt(s1.ID, 10) {
		t.Errorf("getxattr %s of a deleted snapshot: %q, %v; want %d", xattrParent, got, errno, s1.ID)
	}
	if got, errno := getxattr(ctx, n2, xattrUniqueBytes); errno != syscall.ENODATA {
		t.Errorf("getxattr %s of a deleted snapshot: %q, %v; want ENODATA", xattrUniqueBytes, got, errno)
	}

	// When the engine cannot answer, getxattr fails: it does not make a value up. Without its
	// snapshots table, the store fails every lookup of a snapshot with another error than "not
	// found".
	db, err := sql.Open("sqlite3", filepath.Join(m.Store().Dir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE snapshots RENAME TO snapshots_gone`); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{xattrUniqueBytes, xattrParent} {
		if got, errno := getxattr(ctx, n, name); errno != syscall.EIO {
			t.Errorf("getxattr %s with the store broken: %q, %v; want EIO", name, got, errno)
		}
	}
	if got, errno := getxattr(ctx, n, xattrID); errno != 0 || got != strconv.FormatInt(s1.ID, 10) {
		t.Errorf("getxattr %s with the store broken: %q, %v; want %d, known without asking", xattrID, got, errno, s1.ID)
	}
}
