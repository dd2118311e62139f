package fs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/snapfs/snapfs/chain"
)

// FSType is the file system type snapfs mounts show in the mount table ("fuse." + FSType).
const FSType = "snapfs"

// Transfer sizes: the largest read or write request, and how far the kernel reads ahead. With 4 MiB
// of read-ahead the kernel keeps several 1 MiB reads in flight, which the daemon serves on both
// cores while the packs' pages are read ahead: a cold `dd` of the benchmark image ran at 1.6-1.9
// GB/s against 1.3-1.4 with 1 MiB (16 MiB was no better than 4).
const (
	maxWrite     = 1 << 20
	maxReadAhead = 1 << 20
	readAheadKB  = 4096
)

// MountOptions say how to mount.
type MountOptions struct {
	// AllowOther lets other users than the one mounting in (permissions are still checked).
	AllowOther bool
	// Source is what the mount table shows as the mounted device: the store's directory.
	Source string
	// Debug logs every FUSE request.
	Debug bool
	// Logger receives go-fuse's messages (nil: the standard logger).
	Logger *log.Logger
}

// Server serves one mount of an FS.
type Server struct {
	srv *fuse.Server
	dir string
}

// Mount mounts the file system at dir and serves it in the background until it is unmounted. As
// root it mounts directly, without fusermount.
func (f *FS) Mount(dir string, opts MountOptions) (*Server, error) {
	mo := fuse.MountOptions{
		AllowOther:           opts.AllowOther,
		Options:              []string{"default_permissions"},
		MaxBackground:        64,
		MaxWrite:             maxWrite,
		MaxReadAhead:         maxReadAhead,
		FsName:               opts.Source,
		Name:                 FSType,
		IgnoreSecurityLabels: true,
		DirectMountStrict:    os.Geteuid() == 0,
		DisableSplice:        true,
		Debug:                opts.Debug,
		Logger:               opts.Logger,
	}
	srv, err := gofs.Mount(dir, f.root, &gofs.Options{MountOptions: mo, Logger: f.log})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	if err := raiseReadAhead(dir); err != nil {
		f.logf("mount %s: %v (reads stay at the default read-ahead)", dir, err)
	}
	return &Server{srv: srv, dir: dir}, nil
}

// Dir is the mount point.
func (s *Server) Dir() string { return s.dir }

// Wait returns once the file system is unmounted and the kernel has let go of it (after the last
// open file closed, when it was detached lazily).
func (s *Server) Wait() { s.srv.Wait() }

// Unmount unmounts the file system; see Unmount.
func (s *Server) Unmount() (detached bool, err error) { return Unmount(s.dir) }

// raiseReadAhead lets the kernel read ahead further than its default 128 KiB on the mount.
func raiseReadAhead(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("raise read-ahead: %w", err)
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(path, []byte(strconv.Itoa(readAheadKB)), 0); err != nil {
		return fmt.Errorf("raise read-ahead: %w", err)
	}
	return nil
}

// Unmount unmounts the FUSE file system at dir. When it is busy (files open, or a process inside)
// it is detached lazily instead, and detached is true: it disappears from the namespace at once, and
// its server goes on serving the open files until the last one closes.
func Unmount(dir string) (detached bool, err error) {
	if os.Geteuid() != 0 {
		return fusermountUnmount(dir)
	}
	err = unix.Unmount(dir, 0)
	if errors.Is(err, unix.EBUSY) {
		err, detached = unix.Unmount(dir, unix.MNT_DETACH), true
	}
	if err != nil {
		return false, fmt.Errorf("unmount %s: %w", dir, err)
	}
	return detached, nil
}

// fusermountUnmount unmounts through fusermount, for users other than root.
func fusermountUnmount(dir string) (detached bool, err error) {
	bin, err := fusermount()
	if err != nil {
		return false, err
	}
	out, err := exec.Command(bin, "-u", dir).CombinedOutput()
	if err != nil && strings.Contains(string(out), "busy") {
		out, err = exec.Command(bin, "-u", "-z", dir).CombinedOutput()
		detached = true
	}
	if err != nil {
		return false, fmt.Errorf("unmount %s: %s: %w", dir, strings.TrimSpace(string(out)), err)
	}
	return detached, nil
}

// fusermount finds fusermount3 or fusermount.
func fusermount() (string, error) {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("unmount: fusermount3 not found (install fuse3)")
}

// DetachStale detaches the FUSE mount at dir when its server is gone (as after the daemon was
// killed: requests fail with ENOTCONN), and reports whether it did.
func DetachStale(dir string) (bool, error) {
	if !stale(dir) {
		return false, nil
	}
	if os.Geteuid() != 0 {
		bin, err := fusermount()
		if err != nil {
			return false, err
		}
		if out, err := exec.Command(bin, "-u", "-z", dir).CombinedOutput(); err != nil {
			return false, fmt.Errorf("detach stale mount %s: %s: %w", dir, strings.TrimSpace(string(out)), err)
		}
		return true, nil
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return false, fmt.Errorf("detach stale mount %s: %w", dir, err)
	}
	return true, nil
}

// stale reports whether dir is a FUSE mount whose server is gone. It asks with statfs, which the
// kernel always forwards to the server, where a stat may be answered from the attribute cache.
func stale(dir string) bool {
	var st unix.Statfs_t
	err := unix.Statfs(dir, &st)
	if err == nil {
		_, err = os.Stat(dir)
	}
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// MountEntry is one line of the mount table.
type MountEntry = chain.MountEntry

// FindMount returns the topmost mount at dir (an absolute, clean path), if any.
func FindMount(dir string) (MountEntry, bool, error) {
	mounts, err := chain.MountTable()
	if err != nil {
		return MountEntry{}, false, err
	}
	var found MountEntry
	ok := false
	for _, e := range mounts {
		if e.Dir == dir {
			found, ok = e, true
		}
	}
	return found, ok, nil
}

// MountPoint resolves dir as the mount table spells it: absolute, clean, with symbolic links in
// its parents resolved (dir itself may be a dead mount, so it is not stat'ed).
func MountPoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", dir, err)
	}
	if abs == "/" {
		return abs, nil
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", dir, err)
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}
