package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	snapfs "github.com/snapfs/snapfs/fs"
)

// How long umount waits for the daemon to exit after unmounting before it says what it waits for: the
// daemon finishes the operations it runs first, which may take long.
const daemonExitNotice = 2 * time.Second

// mountCommands returns the commands that serve the FUSE tree (mount, umount).
func mountCommands() []*cli.Command {
	return []*cli.Command{mountCommand(), umountCommand()}
}

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "serve the store as a FUSE file system at DIR",
		ArgsUsage: "DIR",
		Description: "DIR/volumes/VOLUME/{ctl,status,info} and DIR/chains/CHAIN/{info,NAME.img}: one\n" +
			"read-only image per snapshot; write the line \"snapshot [NAME]\" to a volume's ctl to snapshot it.\n" +
			"The store's writer runs in a background daemon (log: STORE/daemon.log) until `snapfs umount DIR`;\n" +
			"meanwhile other snapfs commands on the store go through it (socket: STORE/daemon.sock).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "foreground", Usage: "serve from this process until unmounted or signalled"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users in (root, or user_allow_other in /etc/fuse.conf)"},
			&cli.BoolFlag{Name: "debug", Usage: "log every FUSE request", Hidden: true},
		},
		Action: mountAction,
	}
}

func umountCommand() *cli.Command {
	return &cli.Command{
		Name:      "umount",
		Aliases:   []string{"unmount"},
		Usage:     "unmount a snapfs mount and stop its daemon",
		ArgsUsage: "DIR",
		Description: "When files are still open under DIR it is detached at once and the daemon\n" +
			"exits after the last of them closes.",
		Action: umountAction,
	}
}

// mountOpts is what a mount command line asks for.
type mountOpts struct {
	dir        string // mount point, absolute
	store      string // store directory, absolute
	allowOther bool
	debug      bool
}

func mountAction(cCtx *cli.Context) error {
	args, err := checkArgs(cCtx, 1, 1, "DIR")
	if err != nil {
		return err
	}
	o := mountOpts{allowOther: cCtx.Bool("allow-other"), debug: cCtx.Bool("debug")}
	if o.dir, err = mountPoint(args[0]); err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	store, err := storeDir(cCtx)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	if o.store, err = filepath.Abs(store); err != nil {
		return fmt.Errorf("mount: store %s: %w", store, err)
	}
	if err := apartFromStore(o.dir, o.store); err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	if cCtx.Bool("foreground") {
		return serveMount(cCtx.Context, o)
	}
	return startDaemon(cCtx.Context, o)
}

func umountAction(cCtx *cli.Context) error {
	args, err := checkArgs(cCtx, 1, 1, "DIR")
	if err != nil {
		return err
	}
	dir, err := mountPoint(args[0])
	if err != nil {
		return fmt.Errorf("umount: %w", err)
	}
	e, ok, err := snapfs.FindMount(dir)
	if err != nil {
		return fmt.Errorf("umount: %w", err)
	}
	if !ok {
		return fmt.Errorf("umount %s: not mounted", dir)
	}
	if e.Type != "fuse."+snapfs.FSType {
		return fmt.Errorf("umount %s: not a snapfs mount (it is %s)", dir, e.Type)
	}
	if err := sameStore(cCtx, e.Source); err != nil {
		return fmt.Errorf("umount %s: %w", dir, err)
	}
	if stale, err := snapfs.DetachStale(dir); err != nil || stale {
		return err
	}
	pid := daemonPID(e.Source, dir)
	detached, err := snapfs.Unmount(dir)
	if err != nil {
		return err
	}
	if detached {
		fmt.Fprintf(cCtx.App.ErrWriter, "snapfs: %s is busy: detached it; the daemon exits once the last open file closes\n", dir)
		return nil
	}
	if pid > 0 && !waitExit(pid, daemonExitNotice) {
		// It finishes the operations it was running (a restore, a snapshot) before it exits.
		log := filepath.Join(e.Source, daemonLogName)
		fmt.Fprintf(cCtx.App.ErrWriter, "snapfs: unmounted %s; waiting for daemon %d to finish the operations in progress (see %s)\n",
			dir, pid, log)
		if !waitGone(cCtx.Context, pid) {
			return fmt.Errorf("umount %s: unmounted, but stopped waiting for daemon %d, which is still finishing the operations in progress (see %s)",
				dir, pid, log)
		}
	}
	return nil
}

// waitGone waits until process pid is gone and reports whether it is: false when ctx ended first.
func waitGone(ctx context.Context, pid int) bool {
	for alive(pid) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

// mountPoint resolves a mount point given on the command line as the mount table spells it; a
// symbolic link to the directory is followed, unless it cannot be (a dead mount).
func mountPoint(arg string) (string, error) {
	if p, err := filepath.EvalSymlinks(arg); err == nil {
		arg = p
	}
	return snapfs.MountPoint(arg)
}

// apartFromStore refuses a mount point that is the store directory, holds it, or lies in it: the
// mount would hide the store from every command (and the daemon's own files), or put a read-only
// directory where the store writes. A directory holding another store would hide that one.
func apartFromStore(dir, store string) error {
	real := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return filepath.Clean(p)
	}
	d, s := real(dir), real(store)
	switch {
	case d == s:
		return fmt.Errorf("mount point %s is the store directory", dir)
	case within(s, d):
		return fmt.Errorf("mount point %s holds the store %s: the mount would hide it", dir, store)
	case within(d, s):
		return fmt.Errorf("mount point %s is inside the store %s", dir, store)
	}
	if _, err := os.Stat(filepath.Join(d, "meta.db")); err == nil {
		return fmt.Errorf("mount point %s holds a snapfs store: the mount would hide it", dir)
	}
	return nil
}

// within reports whether path lies under dir (both clean and absolute).
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// waitExit waits until process pid is gone, or d passed; it reports whether it is gone.
func waitExit(pid int, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return waitGone(ctx, pid)
}

// alive reports whether process pid exists and is not a zombie. A zombie thread-group leader
// whose other threads are still exiting counts as alive: until the last of them is gone the
// process holds its files (the store's lock, the daemon's socket). The leader of a daemon killed
// with SIGKILL is often a zombie before its other threads have closed them.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name: "123 (snapfs) S ...".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	if state := b[i+2]; state != 'Z' && state != 'X' {
		return true
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return err == nil && len(tasks) > 1
}

// sameStore checks that a mount serving the store mounted (its mount table source) serves the store
// the command was given, when it was given one (--store or $SNAPFS_STORE): `--store A umount DIR`
// must not stop the daemon of store B.
func sameStore(cCtx *cli.Context, mounted string) error {
	if !cCtx.IsSet("store") {
		return nil
	}
	given, err := storeDir(cCtx)
	if err != nil {
		return err
	}
	if sameDir(given, mounted) {
		return nil
	}
	return fmt.Errorf("it serves the store %s, not %s (given by --store or $SNAPFS_STORE)", mounted, given)
}

// sameDir reports whether paths a and b name one directory.
func sameDir(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA != nil || errB != nil {
		return filepath.Clean(a) == filepath.Clean(b)
	}
	return os.SameFile(sa, sb)
}
