package chain

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreRefusesDeviceUnderLoop: a loop device over a block device makes no holder link and
// takes no exclusive claim on it, so a filesystem mounted from the upper device shows in neither.
// A restore onto the lower device is refused all the same, naming the loop device over it (and,
// while it is mounted, where), and written with force once that is wanted.
func TestRestoreRefusesDeviceUnderLoop(t *testing.T) {
	requireRoot(t, "losetup", "mkfs.ext4", "mount", "umount")
	u := newUnit(t, Options{})
	const size = 8 << 20
	path := u.disk("vol", size)
	u.write(path, 0, u.random(size))
	want := u.read(path)
	u.snap("vol", "s1")

	stack := filepath.Join(u.dir, "stack.img")
	if err := os.WriteFile(stack, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(stack, 2*size); err != nil {
		t.Fatal(err)
	}
	lower := sh(t, "losetup", "-f", "--show", stack)
	t.Cleanup(func() { exec.Command("losetup", "-d", lower).Run() })
	upper := sh(t, "losetup", "-f", "--show", lower)
	upperAttached := true
	t.Cleanup(func() {
		if upperAttached { // not once detached: the number may be another's by then
			exec.Command("losetup", "-d", upper).Run()
		}
	})
	sh(t, "mkfs.ext4", "-q", "-F", upper)
	mnt := filepath.Join(u.dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", upper, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("on the stacked device"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "sync", "-f", mnt) // this filesystem only: a global sync waits on every other one
	held := readDevice(t, lower)

	st, err := u.m.Restore(u.ctx, "vol/s1", RestoreOptions{To: lower})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "in use by "+upper) || !strings.Contains(err.Error(), "mounted at "+mnt) {
		t.Fatalf("restore onto %s under mounted %s: %v, want in use by %s, mounted at %s", lower, upper, err, upper, mnt)
	}
	if st.ChunksWritten != 0 || !bytes.Equal(readDevice(t, lower), held) {
		t.Fatalf("refused restore wrote %d chunks", st.ChunksWritten)
	}
	if data, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(data) != "on the stacked device" {
		t.Fatalf("file on the stacked device: %q, %v", data, err)
	}

	// Unmounted, the loop device over it still reads it.
	sh(t, "umount", mnt)
	if _, err := u.m.Restore(u.ctx, "vol/s1", RestoreOptions{To: lower}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), upper) {
		t.Fatalf("restore onto %s under attached %s: %v, want in use by it", lower, upper, err)
	}
	// The image file under both is refused too, and the message follows the stack.
	_, err = u.m.Restore(u.ctx, "vol/s1", RestoreOptions{To: stack})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "attached to "+lower+", which is in use by "+upper) {
		t.Fatalf("restore onto %s under %s and %s: %v", stack, lower, upper, err)
	}
	if rs, err := u.m.Restore(u.ctx, "vol/s1", RestoreOptions{To: lower, Force: true}); err != nil || rs.ChunksWritten == 0 {
		t.Fatalf("forced restore onto %s: %+v, %v", lower, rs, err)
	}
	if got := readDevice(t, lower)[:size]; !bytes.Equal(got, want) {
		t.Fatal("forced restore differs from the snapshot")
	}

	// Once the upper device is gone, the lower one is free.
	sh(t, "losetup", "-d", upper)
	upperAttached = false
	if _, err := u.m.Restore(u.ctx, "vol/s1", RestoreOptions{To: lower}); err != nil {
		t.Fatalf("restore onto %s with nothing over it: %v", lower, err)
	}
}

// readDevice reads all of a block device.
func readDevice(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
