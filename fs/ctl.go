package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/snapfs/snapfs/chain"
)

// ctlUsage is what reading a ctl file returns.
const ctlUsage = "snapshot [NAME]\n"

// errBadCommand marks a command ctl does not understand.
var errBadCommand = errors.New(`unknown command: want "snapshot [NAME]"`)

// ctlNode is volumes/VOLUME/ctl: writing "snapshot [NAME]" to it starts a snapshot of the volume.
type ctlNode struct {
	gofs.Inode
	readOnly
	fsys   *FS
	volume string
}

var (
	_ gofs.NodeOpener    = (*ctlNode)(nil)
	_ gofs.NodeSetattrer = (*ctlNode)(nil)
)

func (f *FS) newCtl(volume string) *ctlNode { return &ctlNode{fsys: f, volume: volume} }

func (n *ctlNode) stable() gofs.StableAttr { return gofs.StableAttr{Mode: syscall.S_IFREG} }

func (n *ctlNode) sameAs(other node) bool {
	o, ok := other.(*ctlNode)
	return ok && o.volume == n.volume
}

func (n *ctlNode) fill(_ context.Context, out *fuse.Attr) syscall.Errno {
	n.fsys.setAttr(out, syscall.S_IFREG|0o600, 0, n.fsys.started)
	return 0
}

func (n *ctlNode) timeouts() (time.Duration, time.Duration) { return dirTimeout, fileTimeout }

// Getattr describes the file.
func (n *ctlNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return getattr(ctx, n, out)
}

// Setattr accepts the truncation to size 0 that opening with O_TRUNC (a shell's ">") or truncate -s 0
// asks for, which changes nothing: ctl holds nothing written to it. It refuses another size with
// EINVAL, and times, mode and owner, which ctl does not keep, with EROFS as every other file of the
// tree does.
func (n *ctlNode) Setattr(ctx context.Context, _ gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := ctlSetattr(in); errno != 0 {
		return errno
	}
	return getattr(ctx, n, out)
}

// truncation is what the kernel sends along with a truncation: the file handle and lock owner of an
// ftruncate; for a truncate(2) by path, an mtime of "now" (as for any write), never a time of its
// own; and, where killpriv_v2 is on, a request to clear set-id bits ctl never has.
const truncation = fuse.FATTR_SIZE | fuse.FATTR_FH | fuse.FATTR_LOCKOWNER | fuse.FATTR_MTIME |
	fuse.FATTR_MTIME_NOW | fuse.FATTR_CTIME | fuse.FATTR_KILL_SUIDGID

// ctlSetattr says whether a ctl file takes the change in (0), or the errno that refuses it.
func ctlSetattr(in *fuse.SetAttrIn) syscall.Errno {
	size, ok := in.GetSize()
	switch {
	case !ok || in.Valid&^truncation != 0:
		return syscall.EROFS // not a truncation (touch, chmod, chown), or times of its own
	case size != 0:
		return syscall.EINVAL
	case in.Valid&fuse.FATTR_MTIME != 0 && in.Valid&fuse.FATTR_MTIME_NOW == 0:
		return syscall.EROFS // an mtime of its own: not the kernel's "now"
	}
	return 0
}

// Open opens the file. Each open has its own buffer of what was written to it, so that a command
// may come in several writes.
func (n *ctlNode) Open(context.Context, uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &ctlHandle{n: n}, fuse.FOPEN_DIRECT_IO, 0
}

// maxCommand bounds a command, newline included. A command is a few dozen bytes; a writer that never
// ends its line must not make the daemon hold all it writes.
const maxCommand = 4 << 10

// ctlHandle is an open ctl file. A command runs when the write that ends its line comes, so that a
// command written in pieces ("snapshot " then "nightly\n") runs whole, once; a last line left
// without a newline runs when the file is closed: at the close of the process that wrote it, unless
// it ends in a space (a piece, more to come), else at the last close of the file. Closes by other
// processes sharing the file (a child forked by the writer, exiting) do not end the line.
type ctlHandle struct {
	n *ctlNode

	mu      sync.Mutex
	pending []byte // the start of a command whose newline has not been written yet
	writer  uint32 // the task that wrote the end of pending
}

var (
	_ gofs.FileWriter   = (*ctlHandle)(nil)
	_ gofs.FileReader   = (*ctlHandle)(nil)
	_ gofs.FileFlusher  = (*ctlHandle)(nil)
	_ gofs.FileFsyncer  = (*ctlHandle)(nil)
	_ gofs.FileReleaser = (*ctlHandle)(nil)
)

// Read returns the usage.
func (h *ctlHandle) Read(_ context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(ctlUsage)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData([]byte(ctlUsage[off:min(int64(len(ctlUsage)), off+int64(len(dest)))])), 0
}

// Write adds data to what was written before it. When data ends a line, the command on it runs:
// Write returns once the command is accepted, and fails with EINVAL (status saying why) when it is
// not, keeping nothing of data. A write may end one command only, and hold nothing after it but
// blank space; blank lines before a command are ignored.
func (h *ctlHandle) Write(ctx context.Context, data []byte, _ int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	written := uint32(len(data))
	if len(h.pending) == 0 {
		// Blank lines before a command (printf '\nsnapshot x\n'), or nothing but them (the print
		// of a command that ends in a newline).
		if data = skipBlankLines(data); len(bytes.TrimSpace(data)) == 0 {
			return written, 0
		}
	}
	end := bytes.IndexByte(data, '\n')
	if end < 0 {
		if errno := h.extend(ctx, data); errno != 0 {
			return 0, errno
		}
		return written, 0
	}
	cmd, rest := append(h.pending, data[:end+1]...), data[end+1:]
	h.pending = nil
	switch {
	case len(cmd) > maxCommand:
		return 0, h.refuse("", data, errTooLong)
	case len(bytes.TrimSpace(rest)) > 0:
		// Two commands at once cannot both start (one snapshot of a volume runs at a time), and
		// running the first would leave the caller unable to tell what failed: the second, even
		// unfinished, would fail at a close whose error a shell does not report.
		return 0, h.refuse("", data, fmt.Errorf("%w: one command per write", errBadCommand))
	}
	if errno := h.run(ctx, cmd); errno != 0 {
		return 0, errno
	}
	return written, 0
}

// extend adds data, which holds no newline, to the command being written. What no more writing
// could make a command is refused now, not at a close whose error a shell does not report.
func (h *ctlHandle) extend(ctx context.Context, data []byte) syscall.Errno {
	line := append(h.pending, data...) // a copy: data is go-fuse's buffer, used again once Write returns
	if len(line) > maxCommand {
		h.pending = nil
		return h.refuse("", data, errTooLong)
	}
	if name, err := commandPrefix(string(line)); err != nil {
		h.pending = nil
		return h.refuse(name, line, err)
	}
	h.pending, h.writer = line, callerProcess(ctx)
	return 0
}

// skipBlankLines drops the blank lines data starts with: each up to its newline, white space
// included, but not the white space starting the line that is not blank.
func skipBlankLines(data []byte) []byte {
	lead := len(data) - len(bytes.TrimLeftFunc(data, unicode.IsSpace))
	return data[bytes.LastIndexByte(data[:lead], '\n')+1:]
}

// Flush runs a last command written without its newline, when the process that wrote it closes
// the file, as that ends its line; its refusal fails the close with EINVAL, status saying why. A
// line ending in a space, or a close by another process (one the writer forked, exiting), leaves
// it for more writing or for Release.
func (h *ctlHandle) Flush(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.pending); n > 0 && (h.pending[n-1] == ' ' || h.pending[n-1] == '\t' || callerProcess(ctx) != h.writer) {
		return 0
	}
	return h.runPending(ctx)
}

// callerProcess is the process a FUSE request came from (0 when not known). The request names the
// thread: a program may write on one thread and close on another.
func callerProcess(ctx context.Context) uint32 {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return c.Pid
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			if tgid, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
				return uint32(tgid)
			}
		}
	}
	return c.Pid
}

// commandPrefix returns the error no more writing could save line (a command without its newline
// yet) from, with the name the status should show; nil when some continuation makes it a command.
func commandPrefix(line string) (name string, err error) {
	if tail := line[max(0, len(line)-utf8.UTFMax+1):]; !utf8.FullRuneInString(tail[lastRuneStart(tail):]) {
		return "", nil // a character cut in two (a space, for Fields, once whole): it may yet be anything
	}
	fields := strings.Fields(line)
	if len(fields) > 1 {
		name = fields[1]
	}
	more := len(line) > 0 && !strings.ContainsAny(line[len(line)-1:], " \t") // the last field may go on
	switch {
	case len(fields) == 0:
		return "", nil
	case len(fields) == 1 && more && strings.HasPrefix("snapshot", fields[0]):
		return "", nil
	case fields[0] != "snapshot":
		return name, fmt.Errorf("%w: %q", errBadCommand, fields[0])
	case len(fields) > 2:
		return name, fmt.Errorf("%w: too many arguments (end each command with a newline)", errBadCommand)
	case len(fields) == 2:
		// A bad character, a leading '.' or too long: more characters do not help.
		return name, chain.ValidateName(fields[1])
	}
	return "", nil
}

// lastRuneStart is where the last character of s begins: its last byte that is not a UTF-8
// continuation byte (0 when there is none).
func lastRuneStart(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if utf8.RuneStart(s[i]) {
			return i
		}
	}
	return 0
}

// Fsync succeeds, with nothing to write out: a command runs when its line ends. (Without it go-fuse
// answers ENOTSUP, and a program that writes a command, flushes and fsyncs would report a failure
// of a snapshot already started.)
func (h *ctlHandle) Fsync(context.Context, uint32) syscall.Errno { return 0 }

// Release runs a command left without its newline that no Flush ran. Nothing hears of a refusal
// then but status and the log.
func (h *ctlHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.runPending(ctx)
	return 0
}

// runPending runs the unterminated command, if any.
func (h *ctlHandle) runPending(ctx context.Context) syscall.Errno {
	if len(bytes.TrimSpace(h.pending)) == 0 {
		h.pending = nil
		return 0
	}
	cmd := h.pending
	h.pending = nil
	return h.run(ctx, cmd)
}

// errTooLong refuses a command longer than maxCommand.
var errTooLong = fmt.Errorf("%w: longer than %d bytes", errBadCommand, maxCommand)

// run runs one command.
func (h *ctlHandle) run(ctx context.Context, cmd []byte) syscall.Errno {
	name, err := parseCommand(string(cmd))
	if err == nil {
		name, err = h.n.fsys.startSnapshot(uninterrupted(ctx), h.n.volume, name)
	}
	if err != nil {
		return h.refuse(name, cmd, err)
	}
	return 0
}

// refuse records in status why cmd, which would have been called name, was refused, and returns
// the errno to fail the write or close with.
func (h *ctlHandle) refuse(name string, cmd []byte, err error) syscall.Errno {
	f, volume := h.n.fsys, h.n.volume
	f.jobs.refuse(volume, name, err, time.Now())
	f.logf("volumes/%s/ctl: %s refused: %v", volume, logged(cmd), err)
	if errors.Is(err, chain.ErrNotFound) {
		return syscall.ENOENT
	}
	return syscall.EINVAL
}

// logged is how a command shows in the log: quoted, and cut short when it is long.
func logged(cmd []byte) string {
	const most = 160
	if len(cmd) > most {
		return fmt.Sprintf("%q... (%d bytes)", cmd[:most], len(cmd))
	}
	return fmt.Sprintf("%q", bytes.TrimSpace(cmd))
}

// parseCommand parses "snapshot [NAME]", returning NAME ("" for a default name). On error the name
// is what the status line should name.
func parseCommand(cmd string) (string, error) {
	cmd = strings.TrimRight(cmd, "\r\n")
	fields := strings.Fields(cmd)
	switch {
	case len(fields) == 0:
		return "", fmt.Errorf("%w: empty command", errBadCommand)
	case strings.ContainsAny(cmd, "\r\n"):
		return "", fmt.Errorf("%w: one command per write", errBadCommand)
	case fields[0] != "snapshot":
		return fields[0], fmt.Errorf("%w: %q", errBadCommand, fields[0])
	case len(fields) > 2:
		return fields[1], fmt.Errorf("%w: too many arguments", errBadCommand)
	case len(fields) == 2:
		return fields[1], nil
	}
	return "", nil
}

// startSnapshot checks a snapshot command and starts the snapshot in the background. It returns the
// snapshot's name (the default one when name is "").
func (f *FS) startSnapshot(ctx context.Context, volume, name string) (string, error) {
	if name != "" {
		if err := chain.ValidateName(name); err != nil {
			return name, err
		}
	}
	if running := f.jobs.running(volume); running != "" {
		return name, fmt.Errorf("snapshot %s of volume %s is still being created", running, volume)
	}
	v, err := f.m.Volume(ctx, volume)
	if err != nil {
		return name, fmt.Errorf("volume %s: %w", volume, err)
	}
	taken, err := f.snapshotNames(ctx, v.Chain)
	if err != nil {
		return name, err
	}
	now := time.Now()
	if name == "" {
		name, _ = chain.DefaultSnapshotName(volume, now, func(n string) (bool, error) { return taken[n] != "", nil })
	} else if err := nameTaken(v.Chain, name, taken[name]); err != nil {
		return name, err
	}
	j, err := f.jobs.begin(volume, name, v.Size, now)
	if err != nil {
		return name, err
	}
	if !f.track(func() { f.runSnapshot(volume, j) }) {
		err := errors.New("the file system is being unmounted")
		f.jobs.finish(volume, j, err)
		return name, err
	}
	return name, nil
}

// snapshotNames maps the names of a chain's snapshots ("" for no chain yet) to their status.
func (f *FS) snapshotNames(ctx context.Context, chainName string) (map[string]string, error) {
	if chainName == "" {
		return map[string]string{}, nil
	}
	return f.m.HeldNames(ctx, chainName)
}

// nameTaken says why a snapshot of chainName cannot be called name, held by a snapshot with the given
// status ("" for none).
func nameTaken(chainName, name, status string) error {
	switch status {
	case "":
		return nil
	case chain.StatusDeleting:
		return fmt.Errorf("snapshot %s/%s: %w (being deleted: the name is free once the delete is "+
			"done, which waits for the last reader of its image)", chainName, name, chain.ErrExists)
	case chain.StatusCreating:
		return fmt.Errorf("snapshot %s/%s: %w (being created)", chainName, name, chain.ErrExists)
	}
	return fmt.Errorf("snapshot %s/%s: %w", chainName, name, chain.ErrExists)
}

// runSnapshot creates the snapshot a job describes and records how it ended.
func (f *FS) runSnapshot(volume string, j *job) {
	s, err := f.m.CreateSnapshot(f.ctx, volume, chain.CreateOptions{Name: j.name, Progress: j.progress})
	if err != nil {
		f.logf("snapshot %s of volume %s failed: %v", j.name, volume, err)
	} else {
		f.logf("snapshot %s of volume %s done in %s", s.Ref(), volume, time.Since(j.start).Round(time.Millisecond))
	}
	f.jobs.finish(volume, j, err)
}
