package fs_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCtlWrites writes commands to ctl through the kernel the ways programs do: in two writes, with
// an fsync after (Python's print then flush and fsync, say), and without a newline, ended by close.
func TestCtlWrites(t *testing.T) {
	needFUSE(t)
	s := oneSnapshot(t)
	mnt := mountStore(t, s.dir)
	ctl := filepath.Join(mnt, "volumes", "d", "ctl")
	status := filepath.Join(mnt, "volumes", "d", "status")

	f, err := os.OpenFile(ctl, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, piece := range []string{"snapshot ", "split-name\n"} {
		if _, err := f.WriteString(piece); err != nil {
			t.Fatalf("write %q: %v (status %q)", piece, err, readStatus(t, status))
		}
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync ctl: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close ctl: %v", err)
	}
	waitStatus(t, status, regexp.MustCompile(`^done split-name$`), "split-name:")

	f, err = os.OpenFile(ctl, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("snapshot at-close"); err != nil {
		t.Fatalf("write a command without its newline: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close ending the command: %v (status %q)", err, readStatus(t, status))
	}
	waitStatus(t, status, regexp.MustCompile(`^done at-close$`), "at-close:")

	// A blank line after a command (printf 'snapshot x\n\n') is nothing more to run.
	if err := os.WriteFile(ctl, []byte("snapshot blank-after\n\n"), 0); err != nil {
		t.Fatalf("a command and a blank line: %v (status %q)", err, readStatus(t, status))
	}
	waitStatus(t, status, regexp.MustCompile(`^done blank-after$`), "blank-after:")

	f, err = os.OpenFile(ctl, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A line no more writing could make a command is refused at once, not at a close whose error a
	// shell would not report (echo -n 'snapshot bad/name' > ctl).
	if _, err := f.WriteString("snapshot bad/name"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("write a bad command without its newline: %v, want EINVAL", err)
	}
	if st := readStatus(t, status); !strings.HasPrefix(st, "failed bad/name: ") {
		t.Errorf("status after a bad command without its newline: %q", st)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close after a refused write: %v", err)
	}
	// One that may yet become a command is refused at close when it does not.
	f, err = os.OpenFile(ctl, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("snap"); err != nil {
		t.Fatalf("write the start of a command: %v", err)
	}
	if err := f.Close(); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("close ending an unfinished command: %v, want EINVAL", err)
	}
	if st := readStatus(t, status); !strings.HasPrefix(st, "failed snap: ") {
		t.Errorf("status after an unfinished command ended by close: %q", st)
	}

	entries, err := os.ReadDir(filepath.Join(mnt, "chains", "d"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"at-close.img", "blank-after.img", "info", "s1.img", "split-name.img"}; !slices.Equal(names, want) {
		t.Errorf("chains/d = %q, want %q", names, want)
	}
}

// TestFsync: fsync and fdatasync succeed on every kind of file, and on directories. Programs fsync
// what they are done with, and go-fuse fails what a file system does not implement with ENOTSUP.
func TestFsync(t *testing.T) {
	needFUSE(t)
	s := oneSnapshot(t)
	mnt := mountStore(t, s.dir)
	for _, c := range []struct {
		path string
		flag int
	}{
		{"volumes/d/ctl", os.O_WRONLY},
		{"volumes/d/ctl", os.O_RDONLY},
		{"volumes/d/status", os.O_RDONLY},
		{"volumes/d/info", os.O_RDONLY},
		{"chains/d/info", os.O_RDONLY},
		{"chains/d/s1.img", os.O_RDONLY},
		{"chains/d", os.O_RDONLY},
		{".", os.O_RDONLY},
	} {
		f, err := os.OpenFile(filepath.Join(mnt, c.path), c.flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Errorf("fsync %s: %v", c.path, err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			t.Errorf("fdatasync %s: %v", c.path, err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close %s: %v", c.path, err)
		}
	}
}

// TestCtlCloseOnAnotherThread: a program that writes a command without its newline on one thread
// and closes the file on another (Go, Java) ends the line at that close, as one thread would: the
// close fails when the command is refused.
func TestCtlCloseOnAnotherThread(t *testing.T) {
	needFUSE(t)
	s := oneSnapshot(t)
	mnt := mountStore(t, s.dir)
	ctl := filepath.Join(mnt, "volumes", "d", "ctl")
	f, err := os.OpenFile(ctl, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var werr, cerr error
	onThread(func() { _, werr = f.WriteString("snap") })
	onThread(func() { cerr = f.Close() })
	if werr != nil || !errors.Is(cerr, syscall.EINVAL) {
		t.Errorf("write %v, close on another thread %v; want the close to fail with EINVAL", werr, cerr)
	}
}

// onThread runs fn on a goroutine locked to an OS thread of its own, which exits with it.
func onThread(fn func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fn()
		close(done)
	}()
	<-done
}

// TestCtlSetattr: ctl takes the truncation to size 0 that a shell's "> ctl" (O_TRUNC) or
// truncate -s 0 asks for, and refuses every other change: another size with EINVAL, times, mode
// and owner with EROFS, as every other file of the tree does.
func TestCtlSetattr(t *testing.T) {
	needFUSE(t)
	s := oneSnapshot(t)
	mnt := mountStore(t, s.dir)
	ctl := filepath.Join(mnt, "volumes", "d", "ctl")
	before, err := os.Stat(ctl)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(ctl, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	past := time.Now().Add(-time.Hour)
	for what, c := range map[string]struct {
		err  error
		want syscall.Errno
	}{
		"truncate to 5":         {os.Truncate(ctl, 5), syscall.EINVAL},
		"ftruncate to 5":        {f.Truncate(5), syscall.EINVAL},
		"touch":                 {unix.UtimesNanoAt(unix.AT_FDCWD, ctl, nil, 0), syscall.EROFS},
		"set times":             {os.Chtimes(ctl, past, past), syscall.EROFS},
		"chmod":                 {os.Chmod(ctl, 0o644), syscall.EROFS},
		"chown":                 {os.Chown(ctl, 1, 1), syscall.EROFS},
		"truncate to 0":         {os.Truncate(ctl, 0), 0},
		"ftruncate to 0":        {f.Truncate(0), 0},
		"open with O_TRUNC":     {openTrunc(ctl), 0},
		"write through O_TRUNC": {writeCtl(ctl, "snapshot s2"), 0},
		"write a blank line":    {writeCtl(ctl, ""), 0},
	} {
		if c.want == 0 && c.err != nil || c.want != 0 && !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", what, c.err, c.want)
		}
	}
	after, err := os.Stat(ctl)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != 0 || after.Mode() != before.Mode() || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("ctl after the changes: size %d, mode %v, mtime %v; want 0, %v, %v",
			after.Size(), after.Mode(), after.ModTime(), before.Mode(), before.ModTime())
	}
}

// openTrunc opens path for writing with O_TRUNC, as a shell's ">" does, and closes it.
func openTrunc(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// TestStatusOfRemovedVolume: a volume removed and added again under its name starts with status
// "idle", not the old volume's last outcome.
func TestStatusOfRemovedVolume(t *testing.T) {
	needFUSE(t)
	s := oneSnapshot(t)
	mnt := mountStore(t, s.dir)
	status := filepath.Join(mnt, "volumes", "d", "status")
	if err := writeCtl(filepath.Join(mnt, "volumes", "d", "ctl"), "snapshot s2"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, status, regexp.MustCompile(`^done s2$`), "s2:")
	if out, err := run(t, s.dir, "volume", "rm", "d"); err != nil {
		t.Fatalf("volume rm d: %v\n%s", err, out)
	}
	disk := newDisk(t, filepath.Dir(s.dir), "new.img", 4*mib)
	if out, err := run(t, s.dir, "volume", "add", "d", "--source", disk.path); err != nil {
		t.Fatalf("volume add d: %v\n%s", err, out)
	}
	if st := readStatus(t, status); st != "idle" {
		t.Errorf("status of the new volume d: %q, want idle", st)
	}
}
