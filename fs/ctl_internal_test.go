package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/snapfs/snapfs/chain"
)

// newTestFS is a file system over a new store with volume "v" (a 1 MiB file), not mounted: tests
// call the handlers themselves.
func newTestFS(t *testing.T) (*FS, *chain.Manager) {
	t.Helper()
	return newTestFSWithDisk(t, "v.img")
}

// newTestFSWithDisk is newTestFS with volume v's file named name.
func newTestFSWithDisk(t *testing.T, name string) (*FS, *chain.Manager) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	m, err := chain.Open(ctx, filepath.Join(dir, "store"), chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	disk := filepath.Join(dir, name)
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AddVolume(ctx, chain.VolumeSpec{Name: "v", Source: disk}); err != nil {
		t.Fatal(err)
	}
	f := New(m, Options{})
	t.Cleanup(func() { f.Close() })
	return f, m
}

// snapshotNames lists the names of chain v's snapshots.
func snapshotNames(t *testing.T, m *chain.Manager) []string {
	t.Helper()
	snaps, err := m.SnapshotNames(context.Background(), "v")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	return names
}

// TestCtlCommandInPieces writes commands to ctl handles the ways programs do: in pieces, without a
// newline (ending at close), several at once, too long.
func TestCtlCommandInPieces(t *testing.T) {
	f, m := newTestFS(t)
	ctx := context.Background()
	ctl := f.newCtl("v")
	write := func(h *ctlHandle, s string) syscall.Errno {
		t.Helper()
		n, errno := h.Write(ctx, []byte(s), 0)
		if errno == 0 && int(n) != len(s) {
			t.Fatalf("write %q: %d bytes", s, n)
		}
		return errno
	}
	status := func() string { return f.jobs.status("v", time.Now()) }

	// A command split across two writes runs once, whole, when its line ends.
	h := &ctlHandle{n: ctl}
	if errno := write(h, "snapshot "); errno != 0 {
		t.Fatalf("write the start of a command: %v", errno)
	}
	if running := f.jobs.running("v"); running != "" {
		t.Fatalf("the start of a command started snapshot %s", running)
	}
	if errno := write(h, "split-name\n"); errno != 0 {
		t.Fatalf("write the end of the command: %v (status %q)", errno, status())
	}
	if errno := h.Flush(ctx); errno != 0 {
		t.Errorf("close after a whole command: %v", errno)
	}
	f.Wait()
	if got := snapshotNames(t, m); !slices.Equal(got, []string{"split-name"}) {
		t.Errorf("snapshots after a command in two writes: %q, want [split-name]", got)
	}
	if st := status(); st != "done split-name" {
		t.Errorf("status %q, want done split-name", st)
	}

	// A last line without its newline runs when the file is closed.
	h = &ctlHandle{n: ctl}
	if errno := write(h, "snapshot"); errno != 0 {
		t.Fatal(errno)
	}
	if errno := write(h, " unterminated"); errno != 0 {
		t.Fatal(errno)
	}
	if running := f.jobs.running("v"); running != "" {
		t.Fatalf("a command without its newline started snapshot %s before the close", running)
	}
	if errno := h.Flush(ctx); errno != 0 {
		t.Fatalf("close ending the command: %v (status %q)", errno, status())
	}
	if errno := h.Flush(ctx); errno != 0 { // a second close (of a dup) has nothing left to run
		t.Errorf("second flush: %v", errno)
	}
	f.Wait()
	if got := snapshotNames(t, m); !slices.Equal(got, []string{"split-name", "unterminated"}) {
		t.Errorf("snapshots: %q, want [split-name unterminated]", got)
	}

	// A bad command left unterminated is refused as soon as no more writing could save it; one
	// that could still become a command fails the close, status saying why.
	h = &ctlHandle{n: ctl}
	if errno := write(h, "snapshot bad/name"); errno != syscall.EINVAL {
		t.Errorf("write of a bad command without its newline: %v, want EINVAL", errno)
	}
	if st := status(); !strings.HasPrefix(st, "failed bad/name: ") {
		t.Errorf("status after a bad command without its newline: %q", st)
	}
	if errno := write(h, "snapshot a"); errno != 0 { // nothing kept of the refused write
		t.Fatal(errno)
	}
	if errno := write(h, "snapshot b"); errno != syscall.EINVAL {
		t.Errorf("a second command written before the first's newline: %v, want EINVAL", errno)
	}
	h = &ctlHandle{n: ctl}
	if errno := write(h, "snap"); errno != 0 {
		t.Fatal(errno)
	}
	if errno := h.Flush(ctx); errno != syscall.EINVAL {
		t.Errorf("close ending an unfinished command: %v, want EINVAL", errno)
	}
	if st := status(); !strings.HasPrefix(st, "failed snap: ") {
		t.Errorf("status after an unfinished command at close: %q", st)
	}

	// A close by another process sharing the file (a child the writer forked, exiting), or of a
	// line ending in a space, does not end the line: more may come, and the last close ends it.
	writer := fuse.NewContext(ctx, &fuse.Caller{Pid: 100})
	child := fuse.NewContext(ctx, &fuse.Caller{Pid: 200})
	h = &ctlHandle{n: ctl}
	if _, errno := h.Write(writer, []byte("snapshot"), 0); errno != 0 {
		t.Fatal(errno)
	}
	if errno := h.Flush(child); errno != 0 {
		t.Fatalf("flush by another process: %v", errno)
	}
	if _, errno := h.Write(writer, []byte(" "), 0); errno != 0 {
		t.Fatal(errno)
	}
	if errno := h.Flush(writer); errno != 0 {
		t.Fatalf("flush of a line ending in a space: %v", errno)
	}
	if running := f.jobs.running("v"); running != "" {
		t.Fatalf("a close that does not end the line started snapshot %s", running)
	}
	if _, errno := h.Write(writer, []byte("forked"), 0); errno != 0 {
		t.Fatal(errno)
	}
	if errno := h.Flush(child); errno != 0 {
		t.Fatalf("flush by another process: %v", errno)
	}
	if errno := h.Release(ctx); errno != 0 { // the last close
		t.Fatal(errno)
	}
	f.Wait()
	if got := snapshotNames(t, m); !slices.Contains(got, "forked") || slices.ContainsFunc(got, func(n string) bool { return strings.HasPrefix(n, "v-") }) {
		t.Errorf("snapshots: %q, want forked and no default-named one", got)
	}

	// What follows a command's newline in the same write, blank space aside, is refused with the
	// command (see TestCtlCommandThenMore).
	h = &ctlHandle{n: ctl}
	if errno := write(h, "snapshot after-a\nbogus"); errno != syscall.EINVAL {
		t.Errorf("a command and a line that cannot be one: %v, want EINVAL", errno)
	}
	if running := f.jobs.running("v"); running != "" {
		t.Fatalf("snapshot %s started by a refused write", running)
	}

	// Two commands in one write: neither runs.
	h = &ctlHandle{n: ctl}
	if errno := write(h, "snapshot two-a\nsnapshot two-b\n"); errno != syscall.EINVAL {
		t.Errorf("two commands in one write: %v, want EINVAL", errno)
	}
	if st := status(); !strings.HasPrefix(st, "failed -: ") || !strings.Contains(st, "one command") {
		t.Errorf("status after two commands in one write: %q", st)
	}

	// A line that never ends is refused once it is longer than a command can be, and forgotten.
	h = &ctlHandle{n: ctl}
	if errno := write(h, "snapshot "+strings.Repeat("x", maxCommand)); errno != syscall.EINVAL {
		t.Errorf("a command of %d bytes: %v, want EINVAL", maxCommand+9, errno)
	}
	if st := status(); !strings.HasPrefix(st, "failed -: ") || !strings.Contains(st, "longer than") {
		t.Errorf("status after a command too long: %q", st)
	}
	if errno := write(h, "snapshot"); errno != 0 {
		t.Fatal(errno)
	}
	if errno := write(h, strings.Repeat(" ", maxCommand-len("snapshot"))); errno != 0 {
		t.Fatalf("write up to %d bytes: %v", maxCommand, errno)
	}
	if errno := write(h, " "); errno != syscall.EINVAL {
		t.Errorf("%d bytes written without a newline: %v, want EINVAL", maxCommand+1, errno)
	}
	if errno := h.Flush(ctx); errno != 0 {
		t.Errorf("close after the refusal: %v, want nothing left to run", errno)
	}

	// A command whose close sent no flush runs at release.
	h = &ctlHandle{n: ctl}
	if errno := write(h, "snapshot at-release"); errno != 0 {
		t.Fatal(errno)
	}
	h.Release(ctx)
	f.Wait()
	if got := snapshotNames(t, m); !slices.Contains(got, "at-release") {
		t.Errorf("snapshots after a release ending a command: %q", got)
	}
	if got := snapshotNames(t, m); slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "v-") }) {
		t.Errorf("a default-named snapshot was made: %q", got)
	}
}

// TestCtlNameOfDeletedOpenSnapshot: a snapshot deleted while an image of it is open keeps its name
// until the image is closed. A command for that name is refused when it is written, status saying
// why, rather than accepted and failing later; once the image is closed, the name is free.
func TestCtlNameOfDeletedOpenSnapshot(t *testing.T) {
	f, m := newTestFS(t)
	ctx := context.Background()
	s1, err := m.CreateSnapshot(ctx, "v", chain.CreateOptions{Name: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	img, _, errno := f.newImage(s1).Open(ctx, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatal(errno)
	}
	if st, err := m.DeleteSnapshot(ctx, "v/s1"); err != nil || !st.Deferred {
		t.Fatalf("delete s1 with its image open: %+v, %v; want a deferred delete", st, err)
	}
	h := &ctlHandle{n: f.newCtl("v")}
	cmd := []byte("snapshot s1\n")
	if _, errno := h.Write(ctx, cmd, 0); errno != syscall.EINVAL {
		t.Errorf("snapshot s1 while the deleted s1 is open: %v, want EINVAL", errno)
	}
	if st := f.jobs.status("v", time.Now()); !strings.HasPrefix(st, "failed s1: ") || !strings.Contains(st, "being deleted") {
		t.Errorf("status: %q, want failed s1: … being deleted …", st)
	}
	if running := f.jobs.running("v"); running != "" {
		t.Errorf("snapshot %s started", running)
	}

	img.(*imageHandle).Release(ctx)
	f.Wait() // the delete finishes once the image is closed
	if n, errno := h.Write(ctx, cmd, 0); errno != 0 || int(n) != len(cmd) {
		t.Fatalf("snapshot s1 once the image is closed: %d, %v (status %q)", n, errno, f.jobs.status("v", time.Now()))
	}
	f.Wait()
	if got := snapshotNames(t, m); !slices.Equal(got, []string{"s1"}) {
		t.Errorf("snapshots: %q, want [s1]", got)
	}
	if s, err := m.Snapshot(ctx, "v/s1"); err != nil || s.ID == s1.ID {
		t.Errorf("v/s1: %+v, %v; want a new snapshot", s, err)
	}
}

// TestCtlBlankLinesAroundCommand: blank lines before and after the one command of a write are
// ignored (printf '\nsnapshot x\n' > ctl writes them at once), as the README promises.
func TestCtlBlankLinesAroundCommand(t *testing.T) {
	f, m := newTestFS(t)
	ctx := context.Background()
	ctl := f.newCtl("v")
	for i, cmd := range []string{
		"\nsnapshot before\n",
		"\n \r\n\t\nsnapshot around\n\n \n",
		"\n\nsnapshot unterminated",
	} {
		h := &ctlHandle{n: ctl}
		if n, errno := h.Write(ctx, []byte(cmd), 0); errno != 0 || int(n) != len(cmd) {
			t.Fatalf("write %q: %d bytes, %v (status %q)", cmd, n, errno, f.jobs.status("v", time.Now()))
		}
		if errno := h.Flush(ctx); errno != 0 {
			t.Fatalf("close after %q: %v (status %q)", cmd, errno, f.jobs.status("v", time.Now()))
		}
		f.Wait()
		if got := snapshotNames(t, m); len(got) != i+1 {
			t.Errorf("snapshots after %q: %q", cmd, got)
		}
	}
	if got, want := snapshotNames(t, m), []string{"before", "around", "unterminated"}; !slices.Equal(got, want) {
		t.Errorf("snapshots: %q, want %q", got, want)
	}
}

// TestCtlCommandThenMore: a write that ends a command and goes on with more than blank space is
// refused whole, with nothing started, whether what follows ends its line or not: running the first
// command would leave the second to fail later, where the writer hears nothing of it.
func TestCtlCommandThenMore(t *testing.T) {
	f, m := newTestFS(t)
	ctx := context.Background()
	ctl := f.newCtl("v")
	for _, c := range []struct{ pending, data string }{
		{"", "snapshot a\nsnapshot b"},
		{"", "snapshot a\nsnapshot b\n"},
		{"", "snapshot a\n\nsnapshot b"},
		{"", "snapshot a\nsnap"},
		{"snapshot ", "a\nsnapshot b"},
	} {
		h := &ctlHandle{n: ctl}
		if c.pending != "" {
			if _, errno := h.Write(ctx, []byte(c.pending), 0); errno != 0 {
				t.Fatal(errno)
			}
		}
		if _, errno := h.Write(ctx, []byte(c.data), 0); errno != syscall.EINVAL {
			t.Errorf("write %q after %q: %v, want EINVAL", c.data, c.pending, errno)
		}
		if running := f.jobs.running("v"); running != "" {
			t.Errorf("write %q after %q started snapshot %s", c.data, c.pending, running)
		}
		if st := f.jobs.status("v", time.Now()); !strings.Contains(st, "one command per write") {
			t.Errorf("status after %q: %q", c.data, st)
		}
		if errno := h.Flush(ctx); errno != 0 {
			t.Errorf("close after the refused %q: %v, want nothing left to run", c.data, errno)
		}
		h.Release(ctx)
		f.Wait()
		for _, ref := range []string{"v/a", "v/b"} {
			if s, err := m.Snapshot(ctx, ref); !errors.Is(err, chain.ErrNotFound) {
				t.Fatalf("snapshot %s after the refused %q: %+v, %v; want none", ref, c.data, s, err)
			}
		}
	}
}

// TestRefusedCommandEscaped: a refused command's name and words show escaped in status and the
// log, so that control characters and bytes that are not UTF-8 neither reach the terminal of
// whoever reads them nor forge lines.
func TestRefusedCommandEscaped(t *testing.T) {
	f, _ := newTestFS(t)
	var logged lockedBuffer
	f.log = log.New(&logged, "", 0)
	ctx := context.Background()
	for _, c := range []struct{ cmd, status string }{
		{"snapshot nul\x00x\n", `failed "nul\x00x": `},
		{"snapshot \x1b[2Jclear\n", `failed "\x1b[2Jclear": `},
		{"\x1b]0;title\x07 a\n", `failed "\x1b]0;title\a": `},
		{"snapshot \xff\xfe\n", `failed "\xff\xfe": `},
		{"snapshot a\\b\n", `failed "a\\b": `},
		{"snapshot a\x00b", `failed "a\x00b": `}, // refused before its newline
	} {
		h := &ctlHandle{n: f.newCtl("v")}
		if _, errno := h.Write(ctx, []byte(c.cmd), 0); errno != syscall.EINVAL {
			t.Errorf("write %q: %v, want EINVAL", c.cmd, errno)
		}
		st := f.jobs.status("v", time.Now())
		if !strings.HasPrefix(st, c.status) {
			t.Errorf("status after %q: %q, want it to start with %q", c.cmd, st, c.status)
		}
		if bad := unprintable(st); bad != "" {
			t.Errorf("status after %q holds %s: %q", c.cmd, bad, st)
		}
	}
	for line := range strings.Lines(logged.String()) {
		if bad := unprintable(strings.TrimSuffix(line, "\n")); bad != "" {
			t.Errorf("log line holds %s: %q", bad, line)
		}
	}
}

// unprintable describes the first character of s a terminal should not be sent raw ("" for none).
func unprintable(s string) string {
	for i, r := range s {
		if r == utf8.RuneError {
			return fmt.Sprintf("a byte that is not UTF-8 at %d", i)
		}
		if !unicode.IsPrint(r) {
			return fmt.Sprintf("%U at %d", r, i)
		}
	}
	return ""
}

// lockedBuffer is a buffer a logger may write to while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
