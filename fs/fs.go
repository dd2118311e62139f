// Package fs serves a snapfs store as a FUSE file system:
//
//	volumes/VOLUME/ctl        write "snapshot [NAME]\n" to start a snapshot of VOLUME
//	volumes/VOLUME/status     "idle", "creating NAME 37% 380/1024 MiB 910 MiB/s", "done NAME" or "failed NAME: reason"
//	volumes/VOLUME/info       "key: value" lines describing the volume
//	chains/CHAIN/info         "key: value" lines describing the chain
//	chains/CHAIN/NAME.img     one read-only image per complete snapshot
//
// It only translates FUSE requests into calls on a chain.Manager; directories are listed from the
// Manager on every request, so new volumes, chains and snapshots show up without a remount.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/snapfs/snapfs/chain"
)

// Cache lifetimes the kernel is told. An image never changes and its inode number is never given to
// another, so its name and attributes are cached long; SnapshotDeleted makes the kernel forget the
// name of a deleted one. A listing loaded before a delete, or a lookup under way during one, would
// hand the kernel the name again after that, for as long: an answer that a delete may have
// overtaken (see FS.deletes) gives the name no lifetime at all. Everything else is asked for again
// (almost) every time.
const (
	imageTimeout = time.Hour
	dirTimeout   = time.Second
	fileTimeout  = 0
)

// Options tune a file system.
type Options struct {
	// Logger receives errors that cannot be reported to the caller of a file operation (nil: discard).
	Logger *log.Logger
	// UID and GID own every file (default: the process's effective ids).
	UID, GID uint32
}

// FS is a store seen as a FUSE file system. Create it with New, mount it with Mount and Close it
// after unmounting.
type FS struct {
	m       *chain.Manager
	log     *log.Logger
	uid     uint32
	gid     uint32
	started time.Time

	ctx    context.Context // parent of snapshot jobs; cancelled by Close
	cancel context.CancelFunc
	jobs   *jobs
	texts  *textTimes
	wg     sync.WaitGroup // snapshot jobs, and images being closed (see track)
	mu     sync.Mutex     // guards closed
	closed bool           // Close has begun: nothing more is tracked

	root *dirNode

	// deletes counts the snapshots and volumes SnapshotDeleted and VolumeRemoved were told of. A
	// lookup or listing that read the Manager before a count it finds changed when it answers may
	// name what is gone, and is not cached.
	deletes atomic.Uint64
}

// New makes a file system over the store m. The caller keeps ownership of m and closes it after
// FS.Close.
func New(m *chain.Manager, opts Options) *FS {
	ctx, cancel := context.WithCancel(context.Background())
	f := &FS{m: m, log: opts.Logger, uid: opts.UID, gid: opts.GID, started: time.Now(),
		ctx: ctx, cancel: cancel, jobs: newJobs(), texts: newTextTimes()}
	if f.log == nil {
		f.log = log.New(io.Discard, "", 0)
	}
	if f.uid == 0 && f.gid == 0 {
		f.uid, f.gid = uint32(os.Geteuid()), uint32(os.Getegid())
	}
	f.root = f.newDir(rootDir{})
	return f
}

// Root is the node to mount.
func (f *FS) Root() gofs.InodeEmbedder { return f.root }

// Close cancels the snapshots still being created (the engine rolls them back) and waits for them,
// and for the images being closed (the last close of a deleted snapshot's image finishes its
// delete).
func (f *FS) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	return nil
}

// Cancel cancels the snapshots started through ctl files that are running (and any started later);
// the file system keeps serving what is open. A daemon told to stop calls it at once, not only
// once the last file open in a lazily detached mount closes.
func (f *FS) Cancel() { f.cancel() }

// track runs fn in a goroutine Close waits for, and reports whether it did: not once Close has
// begun (a lazily detached mount may still serve a late close or write), when the Manager is about
// to be closed under it.
func (f *FS) track(fn func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Go(fn)
	return true
}

// Wait waits until no snapshot started through a ctl file is running and no image is being closed.
func (f *FS) Wait() { f.wg.Wait() }

// errno maps an engine error to the errno a file operation returns, logging the unexpected ones.
func (f *FS) errno(op string, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, chain.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, chain.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	f.logf("%s: %v", op, err)
	return syscall.EIO
}

// logf logs a line, escaped as oneLine does: what it says may name what a ctl command gave, or a
// volume's source path.
func (f *FS) logf(format string, args ...any) {
	f.log.Print(oneLine(fmt.Sprintf(format, args...)))
}

// SnapshotDeleted makes the kernel forget the image of a snapshot deleted while mounted, which it
// would otherwise keep finding for up to an hour, and counts the delete (see FS.deletes). Files
// already open on the image go on reading it. It returns at once: the kernel is told from
// another goroutine, since telling it from inside a file operation would deadlock. The channel it
// returns is closed once the kernel has been told; callers outside file operations may wait on it so
// that the image is gone when they report the delete.
func (f *FS) SnapshotDeleted(chainName, name string) <-chan struct{} {
	f.deletes.Add(1)
	return f.forget(name+imageSuffix, "chains", chainName)
}

// VolumeRemoved makes the kernel forget volumes/NAME of a volume removed while mounted, at once rather
// than when its name's cache lifetime ends, and forgets the volume's status and the times of its
// files, which a volume added again under the name does not inherit. It returns like
// SnapshotDeleted.
func (f *FS) VolumeRemoved(name string) <-chan struct{} {
	f.deletes.Add(1)
	f.jobs.forget(name)
	f.texts.forget(volumeDir{name: name}.key() + "/")
	return f.forget(name, "volumes")
}

// forget tells the kernel, from another goroutine, that the directory at path (from the root) no
// longer holds name. Nothing is told when the kernel never looked the directory up. The channel
// returned is closed when it is done.
func (f *FS) forget(name string, path ...string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		dir := f.root.EmbeddedInode()
		for _, p := range path {
			if dir = dir.GetChild(p); dir == nil {
				return
			}
		}
		if errno := dir.NotifyEntry(name); errno != 0 && errno != syscall.ENOENT {
			f.logf("forget %s/%s: %v", strings.Join(path, "/"), name, errno)
		}
	}()
	return done
}
