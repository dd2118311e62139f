package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snapfs/snapfs/chain"
	"github.com/snapfs/snapfs/store"
)

// TestRPCErrorRoundTrip: an error keeps its text, its class and its snapshot reference on the way
// from the daemon.
func TestRPCErrorRoundTrip(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("snapshot v/x: %w", chain.ErrNotFound),
		&refError{ref: "v/b", err: fmt.Errorf("snapshot v/b: %w", chain.ErrNotFound)},
		fmt.Errorf("volume v: %w", chain.ErrExists),
		fmt.Errorf("%w: bad name", chain.ErrInvalid),
		fmt.Errorf("target /dev/x is mounted: %w", chain.ErrInUse),
		chain.ErrLocked,
		fmt.Errorf("chunk 7: %w", chain.ErrCorrupt),
		store.ErrNoStore,
		fmt.Errorf("read disk: %w", context.Canceled),
		fmt.Errorf("open /x: %w", syscall.EACCES),
		errors.New("plain\nand long"),
	} {
		b, jerr := json.Marshal(encodeError(err))
		if jerr != nil {
			t.Fatal(jerr)
		}
		var wire *rpcError
		if jerr := json.Unmarshal(b, &wire); jerr != nil {
			t.Fatal(jerr)
		}
		back := decodeError(wire)
		if back.Error() != err.Error() {
			t.Errorf("%q came back as %q", err, back)
		}
		for _, c := range errorClasses() {
			if errors.Is(back, c.err) != errors.Is(err, c.err) {
				t.Errorf("%q: errors.Is(%v) is %v after the trip, %v before", err, c.err, errors.Is(back, c.err), errors.Is(err, c.err))
			}
		}
		ref, ok := failedRef(err)
		if gotRef, gotOK := failedRef(back); gotRef != ref || gotOK != ok {
			t.Errorf("%q: reference %q, %v after the trip, %q, %v before", err, gotRef, gotOK, ref, ok)
		}
	}
	if decodeError(encodeError(nil)) != nil {
		t.Error("no error came back as one")
	}
}

// rpcStore is a store whose writer this process holds, served on its socket, as a daemon does.
type rpcStore struct {
	t   *testing.T
	dir string
	img string // volume v's source
	m   *chain.Manager
	rpc *rpcServer
}

// newRPCStore makes a store with a volume "v" of size random bytes, and serves it.
func newRPCStore(t *testing.T, size int) *rpcStore {
	t.Helper()
	dir := t.TempDir()
	s := &rpcStore{t: t, dir: filepath.Join(dir, "store"), img: filepath.Join(dir, "v.img")}
	var err error
	if s.m, err = chain.Open(t.Context(), s.dir, chain.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.m.Close() })
	makeImage(t, s.img, size)
	if _, err := s.m.AddVolume(t.Context(), chain.VolumeSpec{Name: "v", Source: s.img}); err != nil {
		t.Fatal(err)
	}
	s.serve()
	return s
}

// serve listens on the store's socket until the test ends (or stop).
func (s *rpcStore) serve() {
	s.t.Helper()
	rpc, err := listenRPC(s.dir, s.m, log.New(io.Discard, "", 0))
	if err != nil {
		s.t.Fatal(err)
	}
	rpc.serve(nil)
	s.rpc = rpc
	s.t.Cleanup(s.stop)
}

// stop stops serving.
func (s *rpcStore) stop() {
	if s.rpc != nil {
		if err := s.rpc.Close(); err != nil {
			s.t.Errorf("close rpc: %v", err)
		}
		s.rpc = nil
	}
}

// progressLog records progress callbacks.
type progressLog struct {
	mu    sync.Mutex
	calls []rpcProgress
}

func (p *progressLog) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, rpcProgress{Done: done, Total: total})
}

// TestRPCForward: a command that finds the store locked by a daemon has the daemon apply its op, and
// sees the op's progress, result and errors as if it had applied it itself.
func TestRPCForward(t *testing.T) {
	t.Parallel()
	const size = 32 << 20
	s := newRPCStore(t, size)
	ctx := t.Context()

	var p progressLog
	start := time.Now()
	res, err := runWriterOp(ctx, s.dir, op{Kind: opSnapshotCreate, Args: opArgs{Volume: "v", Name: "a"}}, p.update)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("forwarded snapshot create: %v", err)
	}
	if snap, ok := res.(chain.Snapshot); !ok || snap.Ref() != "v/a" || snap.Size != size {
		t.Errorf("forwarded snapshot create returned %#v", res)
	}
	if n := len(p.calls); n == 0 || n > int(elapsed/progressInterval)+2 {
		t.Errorf("%d progress reports in %s, want 1 to one per %s", n, elapsed, progressInterval)
	} else if last := p.calls[n-1]; last.Done != size || last.Total != size {
		t.Errorf("last progress report %+v, want %d of %d", last, size, size)
	}

	res, err = runWriterOp(ctx, s.dir, op{Kind: opSnapshotDelete, Args: opArgs{Refs: []string{"v/a", "v/nope"}}}, noProgress)
	if !errors.Is(err, chain.ErrNotFound) || err.Error() != "snapshot v/nope: not found" {
		t.Errorf("forwarded delete of v/nope: %v, want not found", err)
	}
	if ref, _ := failedRef(err); ref != "v/nope" {
		t.Errorf("forwarded delete of v/nope: the error is about %q", ref)
	}
	if done, ok := res.([]deleted); !ok || len(done) != 0 {
		t.Errorf("forwarded delete of v/nope returned %#v", res)
	}
	_, err = runWriterOp(ctx, s.dir, op{Kind: opVolumeAdd, Args: opArgs{Volume: "v", Source: s.img}}, noProgress)
	if !errors.Is(err, chain.ErrExists) {
		t.Errorf("forwarded volume add of an existing name: %v, want ErrExists", err)
	}
	if res, err := runWriterOp(ctx, s.dir, op{Kind: opVolumeRemove, Args: opArgs{Volume: "v"}}, noProgress); res != nil || err != nil {
		t.Errorf("forwarded volume rm: %#v, %v", res, err)
	}
	rep, err := runOp[chain.VerifyReport](ctx, s.dir, op{Kind: opVerify}, noProgress)
	if err != nil || rep.Chunks == 0 || len(rep.Faults) != 0 {
		t.Errorf("forwarded verify: %+v, %v", rep, err)
	}
}

// TestRPCCancel: a command cancelled while the daemon runs its op cancels the op there, and hears how
// it ended.
func TestRPCCancel(t *testing.T) {
	t.Parallel()
	s := newRPCStore(t, 4<<20)
	conn, err := dialDaemon(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = forwardOp(ctx, conn, op{Kind: opSnapshotCreate, Args: opArgs{Volume: "v", Name: "a"}}, noProgress)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled forwarded snapshot create: %v, want context.Canceled", err)
	}
	if strings.Contains(err.Error(), "did not") {
		t.Errorf("the daemon did not answer the cancelled op: %v", err)
	}
	snaps, err := s.m.Snapshots(t.Context(), "")
	if err != nil || len(snaps) != 0 {
		t.Errorf("snapshots after the cancelled create: %v, %v", snaps, err)
	}
}

// TestRPCNoDaemon: with the store locked and no daemon listening (no socket, or a stale one),
// commands fail on the lock; a daemon replaces a stale socket.
func TestRPCNoDaemon(t *testing.T) {
	t.Parallel()
	s := newRPCStore(t, 1<<20)
	s.stop()
	sock := filepath.Join(s.dir, daemonSockName)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Close: %v", err)
	}
	_, locked := chain.Open(t.Context(), s.dir, chain.Options{})
	if !errors.Is(locked, chain.ErrLocked) {
		t.Fatalf("open a locked store: %v", locked)
	}
	gc := op{Kind: opGC}
	if _, err := runWriterOp(t.Context(), s.dir, gc, noProgress); err == nil || err.Error() != locked.Error() {
		t.Errorf("no socket: %v, want %v", err, locked)
	}

	// A stale socket: bound, never listened on. (A listener closed at once is not enough: a test
	// running in parallel may fork meanwhile, and its child holds the listening socket until it
	// execs, so that a connection gets in and is then reset.)
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	if _, err := runWriterOp(t.Context(), s.dir, gc, noProgress); err == nil || err.Error() != locked.Error() {
		t.Errorf("stale socket: %v, want %v", err, locked)
	}

	s.serve()
	if _, err := runWriterOp(t.Context(), s.dir, gc, noProgress); err != nil {
		t.Errorf("gc through a daemon that replaced a stale socket: %v", err)
	}
	if st, err := os.Lstat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v, %v, want mode 0600", st, err)
	}

	// Something else in the socket's place is left alone.
	s.stop()
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenRPC(s.dir, s.m, log.New(io.Discard, "", 0)); err == nil || !strings.Contains(err.Error(), "in the way") {
		t.Errorf("listen with a file in the socket's place: %v", err)
	}
}

// TestRPCBadRequest: a request that is no op is answered with an error.
func TestRPCBadRequest(t *testing.T) {
	t.Parallel()
	s := newRPCStore(t, 1<<20)
	for _, req := range []string{"not json\n", `{"kind":"format.disk"}` + "\n"} {
		conn, err := dialDaemon(s.dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		var msg rpcMessage
		err = json.NewDecoder(conn).Decode(&msg)
		conn.Close()
		if err != nil || !msg.Done || msg.Error == nil {
			t.Errorf("request %q: answer %+v, %v; want an error", req, msg, err)
		}
	}
}

// TestRPCLongSocketPath: a store directory too long for a socket address still gets its socket.
func TestRPCLongSocketPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for len(dir) <= maxSockPath {
		dir = filepath.Join(dir, strings.Repeat("d", 40))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	rpc, err := listenRPC(dir, nil, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	rpc.serve(nil)
	sock := filepath.Join(dir, daemonSockName)
	if st, err := os.Lstat(sock); err != nil || st.Mode().Type() != iofs.ModeSocket {
		t.Errorf("socket at %s: %v, %v", sock, st, err)
	}
	conn, err := dialDaemon(dir)
	if err != nil {
		t.Fatalf("connect through a long path: %v", err)
	}
	conn.Close()
	if err := rpc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: %v", err)
	}
}

// TestRPCPeerCredentials: the daemon refuses users other than its own (and root).
func TestRPCPeerCredentials(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		msg := "needs root, to connect as another user"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := newRPCStore(t, 1<<20)
	sock := filepath.Join(s.dir, daemonSockName)
	// Let the other user reach the socket, which the store directory's modes normally prevent.
	for dir := s.dir; strings.HasPrefix(dir, os.TempDir()+"/"); dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	conn, err := dialAs(sock, nobody)
	if err != nil {
		t.Fatalf("connect as uid %d: %v", nobody, err)
	}
	_, err = forwardOp(t.Context(), conn, op{Kind: opVolumeRemove, Args: opArgs{Volume: "v"}}, noProgress)
	if !errors.Is(err, iofs.ErrPermission) || !strings.Contains(err.Error(), fmt.Sprintf("uid %d may not", nobody)) {
		t.Errorf("op from uid %d: %v, want it refused", nobody, err)
	}
	if _, err := s.m.Volume(t.Context(), "v"); err != nil {
		t.Errorf("the refused op ran: %v", err)
	}
}

// dialAs connects to the socket at path from a thread whose effective uid is uid, which is what the
// daemon then sees as its peer's.
func dialAs(path string, uid int) (*net.UnixConn, error) {
	type dialed struct {
		conn *net.UnixConn
		err  error
	}
	ch := make(chan dialed, 1)
	go func() {
		// Never unlocked: the thread, with its changed credentials, ends with the goroutine. The raw
		// system call changes this thread only, where syscall.Setresuid would change them all.
		runtime.LockOSThread()
		const unchanged = ^uintptr(0)
		if _, _, errno := syscall.RawSyscall(syscall.SYS_SETRESUID, unchanged, uintptr(uid), unchanged); errno != 0 {
			ch <- dialed{err: fmt.Errorf("setresuid: %w", errno)}
			return
		}
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		ch <- dialed{conn, err}
	}()
	d := <-ch
	return d.conn, d.err
}
