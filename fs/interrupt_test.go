package fs

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/snapfs/snapfs/chain"
)

// TestCtlWriteInterrupted checks that a ctl command whose FUSE request was interrupted (its context
// cancelled: the kernel does that when the writer gets a signal, and Go programs get SIGURG all
// the time) is still carried out, not refused.
func TestCtlWriteInterrupted(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	m, err := chain.Open(ctx, filepath.Join(dir, "store"), chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	disk := filepath.Join(dir, "v.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AddVolume(ctx, chain.VolumeSpec{Name: "v", Source: disk}); err != nil {
		t.Fatal(err)
	}
	// A chain already there, so that the command lists its snapshots' names first.
	if _, err := m.CreateSnapshot(ctx, "v", chain.CreateOptions{Name: "first"}); err != nil {
		t.Fatal(err)
	}
	f := New(m, Options{})
	defer f.Close()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	cmd := []byte("snapshot second\n")
	h := &ctlHandle{n: f.newCtl("v")}
	if n, errno := h.Write(cancelled, cmd, 0); errno != 0 || int(n) != len(cmd) {
		t.Fatalf("interrupted ctl write: %d bytes, errno %v", n, errno)
	}
	f.Wait()
	if _, err := m.Snapshot(ctx, "v/second"); err != nil {
		t.Errorf("snapshot of the interrupted command: %v", err)
	}
}
