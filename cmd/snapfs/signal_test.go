package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapfs/snapfs/chain"
	"github.com/snapfs/snapfs/store"
)

// startBin starts snapfs in the background.
func (e *env) startBin(args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	e.t.Helper()
	cmd := exec.Command(snapfsBin, append([]string{"--store", e.store}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return cmd, &stdout, &stderr
}

// interrupt sends sig to a running snapfs after delay and returns how it ended. finished is true
// when it succeeded before the signal arrived.
func interrupt(t *testing.T, cmd *exec.Cmd, sig os.Signal, delay time.Duration) (r result, finished bool) {
	t.Helper()
	time.Sleep(delay)
	return signalAndWait(t, cmd, sig)
}

// interruptCreating sends sig once the store has a snapshot being created (so the command is past
// its start-up, where a signal would just kill it), then waits for the command.
func interruptCreating(t *testing.T, cmd *exec.Cmd, sig os.Signal, storeDir string) (r result, finished bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if creatingSnapshots(storeDir) > 0 {
			break
		}
	}
	return signalAndWait(t, cmd, sig)
}

// creatingSnapshots counts the store's snapshots still being created, read without the writer lock.
func creatingSnapshots(storeDir string) int {
	st, err := store.Open(context.Background(), storeDir, store.Options{ReadOnly: true})
	if err != nil {
		return 0
	}
	defer st.Close()
	var n int
	st.View(context.Background(), func(tx *store.Tx) error {
		ss, err := tx.SnapshotsWithStatus(chain.StatusCreating)
		n = len(ss)
		return err
	})
	return n
}

func signalAndWait(t *testing.T, cmd *exec.Cmd, sig os.Signal) (r result, finished bool) {
	t.Helper()
	_ = cmd.Process.Signal(sig)
	err := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return result{}, true
	case errors.As(err, &ee):
		return result{code: ee.ExitCode()}, false
	}
	t.Fatal(err)
	return result{}, false
}

// TestInterruptedSnapshot: SIGINT or SIGTERM during snapshot create cancels it cleanly: exit 1 with
// one error line, no snapshot left, the lock released.
func TestInterruptedSnapshot(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	imageVolume(e, "big", 128<<20)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, _, stderr := e.startBin("snapshot", "create", "big")
			r, finished := interruptCreating(t, cmd, sig, e.store)
			if finished {
				t.Skip("the snapshot was done before the signal")
			}
			r.stderr = stderr.String()
			checkFailure(t, r, 1, "snapshot create big: ", []string{"snapshot", "create", "big"})
			if !strings.Contains(r.stderr, "canceled") {
				t.Errorf("stderr %q does not say the snapshot was canceled", r.stderr)
			}
			if out := strings.TrimSpace(e.ok("snapshot", "ls", "--json")); out != "[]" {
				t.Errorf("an interrupted snapshot is listed: %s", out)
			}
		})
	}
	e.ok("snapshot", "create", "big", "--name", "after")
	e.ok("verify")
}

// TestFreezeThawedOnInterrupt: snapshot create --freeze freezes the filesystem only while it reads
// the disk, and thaws it when interrupted.
func TestFreezeThawedOnInterrupt(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a filesystem needs root")
	}
	for _, tool := range []string{"mkfs.ext4", "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	e := newEnv(t)
	img, mnt := e.path("fs.img"), e.path("mnt")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd("mkfs.ext4", "-q", "-F", img); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	out, err := runCmd("losetup", "-f", "--show", img)
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(out)
	t.Cleanup(func() { runCmd("losetup", "-d", dev) })
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd("mount", dev, mnt); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		runCmd("fsfreeze", "-u", mnt) // in case a failed test left it frozen
		runCmd("umount", mnt)
	})
	makeImage(t, filepath.Join(mnt, "data"), 128<<20)
	if out, err := runCmd("sync", "-f", mnt); err != nil { // this filesystem only
		t.Fatalf("sync: %v: %s", err, out)
	}

	e.ok("volume", "add", "fs", "--source", dev)
	// SIGHUP is what a closed terminal or SSH session sends, SIGQUIT Ctrl-\.
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT} {
		// The first snapshot stores every chunk: slow enough to be interrupted.
		cmd, stdout, stderr := e.startBin("snapshot", "create", "fs", "--freeze", mnt)
		r, finished := interruptCreating(t, cmd, sig, e.store)
		checkWritable(t, mnt)
		if finished {
			t.Logf("%v: the snapshot was done before the signal", sig)
			e.ok("snapshot", "delete", strings.TrimSpace(stdout.String())) // it prints CHAIN/NAME
			continue
		}
		r.stderr = stderr.String()
		checkFailure(t, r, 1, "snapshot create fs: ", []string{"snapshot", "create", "fs", "--freeze", mnt})
	}

	e.ok("snapshot", "create", "fs", "--freeze", mnt, "--name", "frozen")
	checkWritable(t, mnt)
}

// checkWritable fails the test if a file cannot be written and synced on the filesystem at mnt
// within a few seconds, as when it is left frozen.
func checkWritable(t *testing.T, mnt string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(filepath.Join(mnt, "probe"))
		if err == nil {
			_, err = f.WriteString("probe")
			if serr := f.Sync(); err == nil {
				err = serr
			}
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write to %s: %v", mnt, err)
		}
	case <-time.After(10 * time.Second):
		runCmd("fsfreeze", "-u", mnt)
		t.Fatalf("%s stayed frozen", mnt)
	}
}
