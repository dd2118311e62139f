package main

// The mount daemon: `snapfs mount DIR` re-runs itself as `snapfs mount --foreground DIR` in a new
// session, with its output going to STORE/daemon.log, and returns once the child says (through a pipe
// passed as fd 3) that the mount is ready, or why it failed. The daemon holds the store's writer lock
// and applies the ops other commands forward to it (daemon_rpc.go).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/snapfs/snapfs/chain"
	snapfs "github.com/snapfs/snapfs/fs"
)

const (
	// daemonLogName is the daemon's log, in the store directory.
	daemonLogName = "daemon.log"
	// daemonPIDName holds the running daemon's pid, in the store directory.
	daemonPIDName = "daemon.pid"
	// readyFDEnv names the fd a daemon reports readiness on.
	readyFDEnv = "SNAPFS_READY_FD"
	// readyOK is what a daemon writes on its ready fd once the mount is up; anything else is an error.
	readyOK = "ready"
	// mountWait bounds how long mount waits for the daemon (opening a store may finish an
	// interrupted delete first).
	mountWait = 10 * time.Minute
)

// startDaemon starts the daemon and waits until it has mounted, or failed to.
func startDaemon(ctx context.Context, o mountOpts) error {
	if err := checkStoreExists(ctx, o.store); err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	logPath := filepath.Join(o.store, daemonLogName)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("mount: daemon log: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	defer r.Close()
	if ctx.Err() != nil {
		w.Close()
		return fmt.Errorf("mount %s: interrupted", o.dir)
	}
	cmd, err := daemonCommand(o, logf, w)
	if err == nil {
		err = cmd.Start()
	}
	w.Close()
	if err != nil {
		return fmt.Errorf("mount: start daemon: %w", err)
	}
	msg, err := readReady(ctx, r, mountWait)
	if err == nil && msg == readyOK {
		return cmd.Process.Release()
	}
	if ctx.Err() != nil {
		// Interrupted: no mount is wanted any more. SIGTERM unmounts a daemon that got as far as
		// mounting; one still opening the store leaves it consistent either way.
		cmd.Process.Signal(syscall.SIGTERM)
		if !waitChild(cmd, 10*time.Second) {
			cmd.Process.Kill()
		}
		return fmt.Errorf("mount %s: interrupted; the daemon was stopped", o.dir)
	}
	if err != nil {
		cmd.Process.Kill()
		msg = err.Error()
	}
	if msg == "" {
		cmd.Wait()
		msg = fmt.Sprintf("daemon exited (%s): %s", cmd.ProcessState, lastLine(logPath))
	}
	return errors.New(msg)
}

// waitChild waits up to d for cmd to exit and reports whether it did.
func waitChild(cmd *exec.Cmd, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// daemonCommand is the command line that runs the daemon, in its own session, logging to logf and
// reporting readiness on ready.
func daemonCommand(o mountOpts, logf, ready *os.File) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"--store", o.store, "mount", "--foreground"}
	if o.allowOther {
		args = append(args, "--allow-other")
	}
	if o.debug {
		args = append(args, "--debug")
	}
	cmd := exec.Command(exe, append(args, "--", o.dir)...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{ready} // fd 3
	cmd.Env = append(os.Environ(), readyFDEnv+"=3", "SNAPFS_STORE="+o.store)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd, nil
}

// readReady reads the daemon's one-line report; "" means it closed the pipe without one (it died).
// It gives up when ctx ends.
func readReady(ctx context.Context, r *os.File, timeout time.Duration) (string, error) {
	if err := r.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	// After the deadline above, which would otherwise undo the one set here.
	stop := context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Now()) })
	defer stop()
	b, err := io.ReadAll(r)
	if ctx.Err() != nil {
		return "", context.Cause(ctx)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", fmt.Errorf("mount: the daemon did not report within %s", timeout)
	}
	return strings.TrimSpace(string(b)), err
}

// lastLine is the last line of a file, to show why a daemon died.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "see " + path
	}
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return string(b) + " (see " + path + ")"
}

// readyPipe is the pipe the parent waits on, when this process is a daemon.
func readyPipe() *os.File {
	fd, err := strconv.Atoi(os.Getenv(readyFDEnv))
	if err != nil || fd < 3 {
		return nil
	}
	os.Unsetenv(readyFDEnv)
	return os.NewFile(uintptr(fd), "ready")
}

// serveMount mounts the store and serves it until it is unmounted (or signalled: the first SIGTERM,
// SIGINT or SIGHUP unmounts, lazily when busy; a second one exits at once). Meanwhile it applies the
// ops commands forward to it on the store's socket.
func serveMount(ctx context.Context, o mountOpts) error {
	// Signals are caught before the mount is reported ready, so that none sent as soon as the pid
	// file names this process is lost.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ready := readyPipe()
	logger := log.New(os.Stderr, "snapfs: ", log.LstdFlags)
	d, err := mount(ctx, o, logger)
	pidPath := filepath.Join(o.store, daemonPIDName)
	if err == nil {
		if werr := os.WriteFile(pidPath, []byte(pidRecord(os.Getpid(), o.dir)), 0o600); werr != nil {
			logger.Printf("pid file: %v", werr)
		}
	}
	if ready != nil {
		report := readyOK
		if err != nil {
			report = oneLine(err.Error())
		}
		fmt.Fprintln(ready, report)
		ready.Close()
	}
	if err != nil {
		return err
	}
	logger.Printf("serving %s at %s (pid %d)", o.store, o.dir, os.Getpid())
	if sig := waitUnmount(d.srv, sigs, d.cancel, logger); sig == nil {
		d.finish(sigs, logger)
	}
	os.Remove(pidPath)
	if err := d.close(); err != nil {
		return err
	}
	logger.Printf("unmounted %s", o.dir)
	return nil
}

// served is what a daemon serves: the mount, its file system, the store's writer and the socket
// commands reach the writer by.
type served struct {
	srv  *snapfs.Server
	fsys *snapfs.FS
	m    *chain.Manager
	rpc  *rpcServer
}

// finishNotice is how long finish waits before it logs that it is waiting.
const finishNotice = time.Second

// finish lets the ops and the ctl snapshots still running end, taking no new ops: being unmounted
// (by `snapfs umount` or umount(8)) is no reason to leave a restore half-written or to roll back a
// snapshot almost made. A signal meanwhile ends the wait, and close then cancels them.
func (d *served) finish(sigs <-chan os.Signal, logger *log.Logger) {
	d.rpc.stopAccepting()
	done := make(chan struct{})
	go func() {
		d.rpc.wg.Wait()
		d.fsys.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(finishNotice):
		logger.Printf("unmounted; finishing the operations in progress (a signal cancels them)")
	}
	select {
	case <-done:
		logger.Printf("operations in progress finished")
	case s := <-sigs:
		logger.Printf("%v: cancelling the operations in progress", s)
	}
}

// cancel stops taking ops and cancels the ops and ctl snapshots running; open files are still
// served.
func (d *served) cancel() {
	d.rpc.cancelOps()
	d.fsys.Cancel()
}

// close stops taking ops (cancelling those running), then closes the file system and the store. The
// mount must be gone.
func (d *served) close() error {
	err := d.rpc.Close()
	d.fsys.Close()
	if cerr := d.m.Close(); cerr != nil {
		return fmt.Errorf("close store: %w", cerr)
	}
	return err
}

// mount opens the store as its writer, listens on its socket and mounts it at o.dir, first detaching
// a stale mount a killed daemon left there.
func mount(ctx context.Context, o mountOpts, logger *log.Logger) (*served, error) {
	if err := checkMountPoint(o.dir, logger); err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	if err := checkStoreExists(ctx, o.store); err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	m, err := chain.Open(ctx, o.store, chain.Options{})
	if errors.Is(err, chain.ErrLocked) {
		return nil, fmt.Errorf("mount: %w (is it mounted already, or is a command running?)", err)
	} else if err != nil {
		return nil, fmt.Errorf("mount: open store %s: %w", o.store, err)
	}
	rpc, err := listenRPC(o.store, m, logger)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("mount: %w", err)
	}
	fsys := snapfs.New(m, snapfs.Options{Logger: logger})
	srv, err := fsys.Mount(o.dir, snapfs.MountOptions{AllowOther: o.allowOther, Source: o.store, Debug: o.debug, Logger: logger})
	if err != nil {
		rpc.Close()
		fsys.Close()
		m.Close()
		return nil, fmt.Errorf("mount: %w", err)
	}
	rpc.serve(fsys)
	return &served{srv: srv, fsys: fsys, m: m, rpc: rpc}, nil
}

// checkMountPoint checks that dir is a directory and no snapfs mount, detaching the stale mount a
// killed daemon left there.
func checkMountPoint(dir string, logger *log.Logger) error {
	if stale, err := snapfs.DetachStale(dir); err != nil {
		return err
	} else if stale {
		logger.Printf("detached the stale mount at %s", dir)
	}
	if e, ok, err := snapfs.FindMount(dir); err != nil {
		return err
	} else if ok && e.Type == "fuse."+snapfs.FSType {
		return fmt.Errorf("%s is already a snapfs mount (of %s)", dir, e.Source)
	}
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("mount point %s: %w", dir, pathErrCause(err))
	} else if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

// mountServer is what waitUnmount needs of a mount's server (a *snapfs.Server).
type mountServer interface {
	Wait()
	Unmount() (detached bool, err error)
	Dir() string
}

// waitUnmount returns once the mount is gone: unmounted from outside (it returns nil), or by a
// signal on sigs here (it returns the first). The first signal also calls cancel at once: a busy
// mount is only detached, and what it runs must not go on until its last open file closes.
func waitUnmount(srv mountServer, sigs <-chan os.Signal, cancel func(), logger *log.Logger) (signalled os.Signal) {
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	var retry <-chan time.Time // set while an unmount that failed is to be tried again
	tries := 0
	unmount := func() {
		tries++
		detached, err := srv.Unmount()
		switch {
		case err != nil && tries < unmountTries:
			logger.Printf("%v: %v (trying again)", signalled, err)
			retry = time.After(unmountRetry)
		case err != nil:
			logger.Printf("%v: %v (giving up: signal again to exit)", signalled, err)
		case detached:
			logger.Printf("%v: %s is busy: detached it; exiting once the last open file closes", signalled, srv.Dir())
		default:
			logger.Printf("%v: unmounting %s", signalled, srv.Dir())
		}
	}
	for {
		select {
		case <-done:
			return
		case <-retry:
			retry = nil
			unmount()
		case s := <-sigs:
			if signalled != nil {
				logger.Printf("%v again: exiting with files still open under %s", s, srv.Dir())
				return
			}
			signalled = s
			cancel()
			unmount()
		}
	}
}

// A signal's unmount that fails (rather than finding the mount busy) is tried this many times, this
// far apart.
const (
	unmountTries = 25
	unmountRetry = 200 * time.Millisecond
)

// pidRecord is what the pid file says of daemon pid serving the mount point dir: "PID START DIR",
// START the process's start time, so that a pid given to another process since is not taken for it
// (its command line need not name dir as the mount table does: `mount --foreground` may be given a
// relative path or a link).
func pidRecord(pid int, dir string) string {
	return fmt.Sprintf("%d %d %s\n", pid, startTime(pid), dir)
}

// startTime is process pid's start time in clock ticks since boot (field 22 of /proc/PID/stat), or
// 0 when it cannot be read.
func startTime(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields from the third follow the parenthesised command name, which may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(fields[19], 10, 64)
	return n
}

// daemonPID is the pid of the daemon serving store at dir, or 0 when unknown.
func daemonPID(store, dir string) int {
	b, err := os.ReadFile(filepath.Join(store, daemonPIDName))
	if err != nil {
		return 0
	}
	fields := strings.SplitN(strings.TrimSuffix(string(b), "\n"), " ", 3)
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return 0
	}
	if len(fields) == 3 {
		start, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil || fields[2] != dir || start == 0 || startTime(pid) != start {
			return 0 // another mount's, gone, or the pid now belongs to another process
		}
		return pid
	}
	// A pid file written by an earlier snapfs holds the pid alone.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("\x00"+dir+"\x00")) {
		return 0 // gone, or the pid now belongs to another process
	}
	return pid
}
