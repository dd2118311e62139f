package main

// How commands reach the store's writer while a mount daemon holds it.
//
// The daemon serving a store listens on the unix socket STORE/daemon.sock (mode 0600, in the 0700
// store directory; only the daemon's own user and root may connect, which SO_PEERCRED checks). A
// command that finds the store locked connects and sends one request: its op (ops.go) as one line of
// JSON. It then keeps its side of the connection open: closing or half-closing it cancels the op. The
// daemon applies the op with its own Manager and answers with lines of JSON, each an rpcMessage:
// progress reports, at most one per progressInterval, then one final message (done) with the op's
// result and error. The error keeps its text, its class (ErrNotFound, ErrExists, ...) and the
// snapshot reference it is about, so that the command prints the same line and exits with the same
// code as when it applies the op itself.

import (
	"bufio"
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
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snapfs/snapfs/chain"
	"github.com/snapfs/snapfs/store"
)

const (
	// daemonSockName is the daemon's socket, in the store directory.
	daemonSockName = "daemon.sock"
	// progressInterval is the least time between two progress reports of one op.
	progressInterval = 100 * time.Millisecond
	// maxRequest bounds the length of a request: above what a command line can hold (Linux's
	// ARG_MAX is a quarter of the stack limit, 2 MiB by default), so that every command a shell
	// can run can be forwarded; a longer one is refused by the client, saying so.
	maxRequest = 64 << 20
	// requestWait bounds how long the daemon waits for a request once connected.
	requestWait = 10 * time.Second
	// writeWait bounds how long the daemon waits for a client to take one message.
	writeWait = 30 * time.Second
	// cancelWait bounds how long a cancelled command waits for the daemon to confirm the cancel.
	cancelWait = time.Minute
	// notifyWait bounds how long the daemon waits for the kernel to forget a deleted entry before it
	// answers.
	notifyWait = time.Second
	// maxSockPath is the longest path a unix socket address holds.
	maxSockPath = len(unix.RawSockaddrUnix{}.Path) - 1
)

// errNoDaemon: no daemon listens on the store's socket.
var errNoDaemon = errors.New("no daemon is listening")

// rpcMessage is one message from the daemon: a progress report, or the final answer (Done).
type rpcMessage struct {
	Progress *rpcProgress    `json:"progress,omitempty"`
	Done     bool            `json:"done,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    *rpcError       `json:"error,omitempty"`
}

// rpcProgress is one call of the op's progress callback.
type rpcProgress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
}

// rpcError is an op's error as it travels: its text, its class (see errorClasses) and, for ops on
// several snapshots, the reference it is about.
type rpcError struct {
	Message string `json:"message"`
	Class   string `json:"class,omitempty"`
	Ref     string `json:"ref,omitempty"`
}

// errorClass names an error callers test for with errors.Is.
type errorClass struct {
	name string
	err  error
}

// errorClasses are the errors whose class survives the trip from the daemon, most specific first.
func errorClasses() []errorClass {
	return []errorClass{
		{"not_found", chain.ErrNotFound},
		{"exists", chain.ErrExists},
		{"invalid", chain.ErrInvalid},
		{"in_use", chain.ErrInUse},
		{"other_disk", chain.ErrOtherDisk},
		{"locked", chain.ErrLocked},
		{"corrupt", chain.ErrCorrupt},
		{"no_store", store.ErrNoStore},
		{"canceled", context.Canceled},
		{"deadline", context.DeadlineExceeded},
		{"permission", iofs.ErrPermission},
		{"not_exist", iofs.ErrNotExist},
	}
}

// encodeError describes err for the wire; nil for none.
func encodeError(err error) *rpcError {
	if err == nil {
		return nil
	}
	e := &rpcError{Message: err.Error()}
	for _, c := range errorClasses() {
		if errors.Is(err, c.err) {
			e.Class = c.name
			break
		}
	}
	if ref, ok := failedRef(err); ok {
		e.Ref = ref
	}
	return e
}

// decodeError rebuilds an error encodeError described: same text, and errors.Is and failedRef see
// what they saw in the daemon.
func decodeError(e *rpcError) error {
	if e == nil {
		return nil
	}
	re := &remoteError{msg: e.Message}
	for _, c := range errorClasses() {
		if c.name == e.Class {
			re.class = c.err
			break
		}
	}
	if e.Ref != "" {
		return &refError{ref: e.Ref, err: re}
	}
	return re
}

// remoteError is an error the daemon met: its text, wrapping the sentinel of its class.
type remoteError struct {
	msg   string
	class error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.class }

// --- the daemon's side ---

// treeNotifier is told of changes the mounted tree must show at once (snapfs.FS).
type treeNotifier interface {
	SnapshotDeleted(chainName, name string) <-chan struct{}
	VolumeRemoved(name string) <-chan struct{}
}

// rpcServer applies the ops that commands forward to the daemon. Create it with listenRPC, start it
// with serve and stop it with Close.
type rpcServer struct {
	ln   *net.UnixListener
	path string
	m    *chain.Manager
	tree treeNotifier // nil: nothing to tell
	log  *log.Logger
	uid  uint32

	ctx    context.Context // parent of every op; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every op running

	stopOnce sync.Once
	stopErr  error
}

// listenRPC listens on the socket of the store in storeDir, whose writer m is. A socket file already
// there is a killed daemon's: the caller holds the writer lock, so no other daemon can be serving.
func listenRPC(storeDir string, m *chain.Manager, logger *log.Logger) (*rpcServer, error) {
	path := filepath.Join(storeDir, daemonSockName)
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	addr, release, err := sockAddr(path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	release()
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // Close removes it by its real path
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &rpcServer{ln: ln, path: path, m: m, log: logger, uid: uint32(os.Geteuid()), ctx: ctx, cancel: cancel}, nil
}

// removeStaleSocket removes the socket file at path, if any; it refuses to remove anything else.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("stale socket: %w", err)
	case fi.Mode().Type() != iofs.ModeSocket:
		return fmt.Errorf("%s is in the way of the daemon's socket: remove it", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// sockAddr is an address for the socket at path that fits in a socket address: path itself, or
// /proc/self/fd/N/NAME through a descriptor of its directory, which release closes once the caller
// has bound or connected.
func sockAddr(path string) (addr string, release func(), err error) {
	if len(path) <= maxSockPath {
		return path, func() {}, nil
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open %s: %w", filepath.Dir(path), err)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path)), func() { unix.Close(fd) }, nil
}

// serve accepts connections in the background, telling tree (which may be nil) what ops changed.
func (s *rpcServer) serve(tree treeNotifier) {
	s.tree = tree
	s.wg.Add(1)
	go s.acceptLoop()
}

// stopAccepting closes the socket to new ops; those running go on.
func (s *rpcServer) stopAccepting() error {
	s.stopOnce.Do(func() { s.stopErr = s.ln.Close() })
	return s.stopErr
}

// cancelOps stops taking ops and cancels those running, without waiting for them to end.
func (s *rpcServer) cancelOps() {
	s.stopAccepting()
	s.cancel()
}

// Close stops accepting, cancels the ops still running, waits for them and removes the socket.
func (s *rpcServer) Close() error {
	err := s.stopAccepting()
	s.cancel()
	s.wg.Wait()
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, iofs.ErrNotExist) && err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("close %s: %w", s.path, err)
	}
	return nil
}

func (s *rpcServer) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			s.log.Printf("rpc: accept: %v", err)
			time.Sleep(progressInterval) // e.g. out of descriptors: let some close
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(conn)
		}()
	}
}

// handle serves one connection: one op.
func (s *rpcServer) handle(conn *net.UnixConn) {
	defer conn.Close()
	w := &msgWriter{conn: conn}
	uid, err := peerUID(conn)
	if err == nil && uid != 0 && uid != s.uid {
		err = fmt.Errorf("uid %d may not use the daemon of uid %d: %w", uid, s.uid, iofs.ErrPermission)
	}
	var o op
	if err == nil {
		o, err = readRequest(conn)
	}
	if err != nil {
		s.log.Printf("rpc: refused a request: %v", err)
		w.send(rpcMessage{Done: true, Error: encodeError(err)})
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go func() {
		// The client sends nothing more: the read ends when it closes or half-closes its side.
		io.Copy(io.Discard, conn)
		cancel()
	}()
	s.log.Printf("rpc: uid %d: %s started", uid, o.Kind)
	start := time.Now()
	res, err := s.run(ctx, o, w)
	if err != nil {
		s.log.Printf("rpc: uid %d: %s failed after %s: %v", uid, o.Kind, time.Since(start).Round(time.Millisecond), err)
	} else {
		s.log.Printf("rpc: uid %d: %s done in %s", uid, o.Kind, time.Since(start).Round(time.Millisecond))
	}
	if err := s.answer(w, res, err); err != nil {
		s.log.Printf("rpc: uid %d: %s: answer: %v", uid, o.Kind, err)
	}
}

// run applies o, passing its progress on to w, and tells the tree what it changed.
func (s *rpcServer) run(ctx context.Context, o op, w *msgWriter) (any, error) {
	pump := &progressPump{}
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		pump.send(w, stop)
	}()
	res, err := o.apply(ctx, s.m, pump.update)
	close(stop)
	<-sent
	s.notifyTree(o, res, err)
	if p, ok := pump.take(); ok {
		w.send(rpcMessage{Progress: p})
	}
	return res, err
}

// answer sends the final message.
func (s *rpcServer) answer(w *msgWriter, res any, opErr error) error {
	raw, err := json.Marshal(res)
	if err != nil {
		raw = nil
		opErr = errors.Join(opErr, fmt.Errorf("encode result: %w", err))
	}
	return w.send(rpcMessage{Done: true, Result: raw, Error: encodeError(opErr)})
}

// notifyTree tells the mounted tree which entries o removed, and waits (a little) until the kernel
// knows, so that they are gone from the mount when the command returns.
func (s *rpcServer) notifyTree(o op, res any, opErr error) {
	if s.tree == nil {
		return
	}
	var waits []<-chan struct{}
	switch o.Kind {
	case opSnapshotDelete:
		done, _ := res.([]deleted) // those deleted, even when a later one failed
		for _, d := range done {
			waits = append(waits, s.tree.SnapshotDeleted(d.Snapshot.Chain, d.Snapshot.Name))
		}
	case opVolumeRemove:
		if opErr == nil {
			waits = append(waits, s.tree.VolumeRemoved(o.Args.Volume))
		}
	}
	timeout := time.NewTimer(notifyWait)
	defer timeout.Stop()
	for _, done := range waits {
		select {
		case <-done:
		case <-timeout.C:
			s.log.Printf("rpc: %s: the kernel was not told within %s", o.Kind, notifyWait)
			return
		}
	}
}

// peerUID is the user id of the process at the other end of conn.
func peerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return 0, fmt.Errorf("peer credentials: %w", credErr)
	}
	return cred.Uid, nil
}

// readRequest reads the op a client sends.
func readRequest(conn *net.UnixConn) (op, error) {
	if err := conn.SetReadDeadline(time.Now().Add(requestWait)); err != nil {
		return op{}, fmt.Errorf("read request: %w", err)
	}
	// The client sends nothing after its request, so nothing is lost past the newline.
	line, err := bufio.NewReader(io.LimitReader(conn, maxRequest)).ReadBytes('\n')
	if err != nil {
		return op{}, fmt.Errorf("read request: %w", err)
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return op{}, fmt.Errorf("read request: %w", err)
	}
	var o op
	if err := json.Unmarshal(line, &o); err != nil {
		return op{}, fmt.Errorf("read request: %w", err)
	}
	// The client makes paths absolute: a relative one would name a file under the daemon's
	// working directory, not the client's.
	for _, p := range []string{o.Args.Source, o.Args.To, o.Args.Freeze} {
		if p != "" && !filepath.IsAbs(p) {
			return op{}, fmt.Errorf("read request: %w: relative path %q", chain.ErrInvalid, p)
		}
	}
	return o, nil
}

// msgWriter sends messages on a connection, one at a time.
type msgWriter struct {
	mu   sync.Mutex
	conn *net.UnixConn
}

// send writes one message; a client that does not take it within writeWait is given up on.
func (w *msgWriter) send(msg rpcMessage) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.conn.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if _, err := w.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// progressPump hands an op's progress to the client at most once per progressInterval, from its own
// goroutine, so that the op never waits on the connection.
type progressPump struct {
	mu    sync.Mutex
	last  rpcProgress
	fresh bool
}

// update is the op's progress callback.
func (p *progressPump) update(done, total int64) {
	p.mu.Lock()
	p.last, p.fresh = rpcProgress{Done: done, Total: total}, true
	p.mu.Unlock()
}

// take returns the progress not sent yet, if any.
func (p *progressPump) take() (*rpcProgress, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.fresh {
		return nil, false
	}
	p.fresh = false
	last := p.last
	return &last, true
}

// send passes progress on to w until stop is closed or the client stops taking it.
func (p *progressPump) send(w *msgWriter, stop <-chan struct{}) {
	t := time.NewTicker(progressInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if pr, ok := p.take(); ok {
				if err := w.send(rpcMessage{Progress: pr}); err != nil {
					return
				}
			}
		}
	}
}

// --- the command's side ---

// dialDaemon connects to the daemon of the store in storeDir; errNoDaemon when none listens.
func dialDaemon(storeDir string) (*net.UnixConn, error) {
	path := filepath.Join(storeDir, daemonSockName)
	addr, release, err := sockAddr(path)
	if err != nil {
		return nil, fmt.Errorf("connect to the daemon: %w", err)
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: addr, Net: "unix"})
	release()
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil, errNoDaemon
	}
	if err != nil {
		return nil, fmt.Errorf("connect to the daemon at %s: %w", path, err)
	}
	return conn, nil
}

// checkRequestLen refuses a request of n bytes (its newline left out) that the daemon would cut off.
func checkRequestLen(n int) error {
	if n >= maxRequest {
		return fmt.Errorf("the command is too long for the daemon to take (%d MiB, at most %d MiB): split it",
			n>>20, maxRequest>>20)
	}
	return nil
}

// forwardOp has the daemon at the other end of conn apply o, passing its progress reports to
// progress, and returns the op's result and error as apply would. Cancelling ctx cancels the op; the
// daemon's answer, which says how the op ended, is still waited for (up to cancelWait).
func forwardOp(ctx context.Context, conn *net.UnixConn, o op, progress chain.Progress) (any, error) {
	defer conn.Close()
	req, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	if err := checkRequestLen(len(req)); err != nil {
		return nil, err
	}
	if _, err := conn.Write(append(req, '\n')); err != nil {
		return nil, refusal(conn, fmt.Errorf("send to the daemon: %w", err))
	}
	stop := context.AfterFunc(ctx, func() {
		conn.CloseWrite() // the daemon cancels the op
		conn.SetReadDeadline(time.Now().Add(cancelWait))
	})
	defer stop()
	dec := json.NewDecoder(conn)
	for {
		var msg rpcMessage
		if err := dec.Decode(&msg); err != nil {
			return nil, lostDaemon(ctx, err)
		}
		if msg.Progress != nil {
			progress(msg.Progress.Done, msg.Progress.Total)
		}
		if msg.Done {
			res, err := decodeResult(o.Kind, msg.Result)
			if err != nil {
				return nil, fmt.Errorf("decode the daemon's answer: %w", err)
			}
			return res, decodeError(msg.Error)
		}
	}
}

// refusal is why the daemon refused a connection that failed while the request was sent: a daemon
// that refuses a peer answers and closes without reading the request. It is sendErr when the daemon
// left no answer.
func refusal(conn *net.UnixConn, sendErr error) error {
	if err := conn.SetReadDeadline(time.Now().Add(requestWait)); err != nil {
		return sendErr
	}
	var msg rpcMessage
	if err := json.NewDecoder(conn).Decode(&msg); err != nil || !msg.Done || msg.Error == nil {
		return sendErr
	}
	return decodeError(msg.Error)
}

// lostDaemon explains a connection that ended without an answer.
func lostDaemon(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
		return fmt.Errorf("%w (the daemon did not confirm within %s)", ctx.Err(), cancelWait)
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("the daemon did not answer (see %s in the store): %w", daemonLogName, err)
}

// decodeResult decodes the result of an op of the given kind into the type apply returns for it.
func decodeResult(kind string, raw json.RawMessage) (any, error) {
	switch kind {
	case opInit:
		return decodeAs[string](raw)
	case opVolumeAdd:
		return decodeAs(raw, func(v *chain.Volume) { v.Created = v.Created.Local() })
	case opVolumeRemove:
		return nil, nil
	case opSnapshotCreate:
		return decodeAs(raw, func(s *chain.Snapshot) { s.Created = s.Created.Local() })
	case opSnapshotDelete:
		return decodeAs(raw, func(ds *[]deleted) {
			for i := range *ds {
				(*ds)[i].Snapshot.Created = (*ds)[i].Snapshot.Created.Local()
			}
		})
	case opRestore:
		return decodeAs[chain.RestoreStats](raw)
	case opClone:
		return decodeAs(raw, func(r *chain.CloneResult) {
			if r.Volume != nil {
				r.Volume.Created = r.Volume.Created.Local()
			}
		})
	case opVerify:
		return decodeAs[chain.VerifyReport](raw)
	case opGC:
		return decodeAs[chain.GCStats](raw)
	}
	return nil, fmt.Errorf("unknown operation %q", kind)
}

// decodeAs decodes raw (nothing: the zero value) as a T, then has fix set its times in this
// process's time zone, as the command shows them when it runs without a daemon (the daemon's may
// differ).
func decodeAs[T any](raw json.RawMessage, fix ...func(*T)) (any, error) {
	var v T
	if len(raw) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	for _, f := range fix {
		f(&v)
	}
	return v, nil
}
