package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/snapfs/snapfs/chain"
)

// imageInoBase puts image inode numbers (base + snapshot id) apart from the ones go-fuse hands out.
const imageInoBase = 1 << 48

// Extended attributes of an image.
const (
	xattrID          = "user.snapfs.id"
	xattrCreated     = "user.snapfs.created"
	xattrUniqueBytes = "user.snapfs.unique_bytes"
	xattrParent      = "user.snapfs.parent"
)

// imageXattrList is what listxattr returns for an image.
const imageXattrList = xattrID + "\x00" + xattrCreated + "\x00" + xattrUniqueBytes + "\x00" + xattrParent + "\x00"

// imageNode is chains/CHAIN/NAME.img: a complete snapshot, read-only. All opens of one image share
// one chain.Image, opened on the first open and closed on the last release; while it is open the
// engine keeps the snapshot's data even if the snapshot is deleted.
type imageNode struct {
	gofs.Inode
	readOnly
	fsys *FS
	snap chain.Snapshot

	mu   sync.Mutex
	im   *chain.Image
	refs int
}

var (
	_ gofs.NodeOpener      = (*imageNode)(nil)
	_ gofs.NodeGetattrer   = (*imageNode)(nil)
	_ gofs.NodeGetxattrer  = (*imageNode)(nil)
	_ gofs.NodeListxattrer = (*imageNode)(nil)
)

func (f *FS) newImage(s chain.Snapshot) *imageNode { return &imageNode{fsys: f, snap: s} }

func (n *imageNode) stable() gofs.StableAttr {
	return gofs.StableAttr{Mode: syscall.S_IFREG, Ino: imageInoBase + uint64(n.snap.ID),
		Gen: uint64(n.snap.Created.UnixNano())}
}

func (n *imageNode) sameAs(other node) bool {
	o, ok := other.(*imageNode)
	return ok && o.snap.ID == n.snap.ID && o.snap.Created.Equal(n.snap.Created)
}

func (n *imageNode) fill(_ context.Context, out *fuse.Attr) syscall.Errno {
	n.fsys.setAttr(out, syscall.S_IFREG|0o444, n.snap.Size, n.snap.Created)
	if n.snap.DataBytes >= 0 {
		// Blocks of the data only, as a sparse file has: du shows the data, and cp, seeing fewer
		// blocks than the size needs, copies the data it finds with SEEK_DATA instead of reading
		// every hole (a clone of a 1 TiB disk holding 34 MiB read the whole terabyte).
		out.Blocks = (uint64(n.snap.DataBytes) + 511) / 512
	}
	return 0
}

func (n *imageNode) timeouts() (time.Duration, time.Duration) { return imageTimeout, imageTimeout }

// ref names the snapshot by id, so that a snapshot deleted and made again under the same name is not
// mistaken for this one.
func (n *imageNode) ref() string { return strconv.FormatInt(n.snap.ID, 10) }

// Getattr describes the image: its size is the disk's at the snapshot, its times the snapshot's.
func (n *imageNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return getattr(ctx, n, out)
}

// Open opens the image for reading; the kernel may keep its pages cached across opens. The open is
// not given up when the caller gets a signal: open(2) is not restarted for a program whose signal
// handler does not ask for it, and would fail with EINTR.
func (n *imageNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	im, err := n.acquire(uninterrupted(ctx))
	if err != nil {
		return nil, 0, n.fsys.errno("open "+n.snap.Ref(), err)
	}
	return &imageHandle{n: n, im: im}, fuse.FOPEN_KEEP_CACHE, 0
}

// acquire returns the node's open image, opening it if it is not yet.
func (n *imageNode) acquire(ctx context.Context) (*chain.Image, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.im == nil {
		im, err := n.fsys.m.OpenImage(ctx, n.ref())
		if err != nil {
			return nil, fmt.Errorf("open image %s: %w", n.snap.Ref(), err)
		}
		if info := im.Info(); !info.Created.Equal(n.snap.Created) {
			if err := im.Close(); err != nil {
				n.fsys.logf("close image %s: %v", info.Ref(), err)
			}
			return nil, fmt.Errorf("open image %s: %w (replaced by another snapshot)", n.snap.Ref(), chain.ErrNotFound)
		}
		n.im = im
	}
	n.refs++
	return n.im, nil
}

// release drops one open of the image. The last closes it, from a goroutine that Close waits for:
// closing the last image of a deleted snapshot finishes the delete, which waits for a snapshot of
// the chain being made through ctl. Inside the FUSE release that wait held up the unmount, and with
// it the Close that cancels the snapshot: SIGTERM left the daemon waiting until the snapshot ended.
func (n *imageNode) release() {
	n.mu.Lock()
	n.refs--
	im := n.im
	if n.refs > 0 || im == nil {
		n.mu.Unlock()
		return
	}
	n.im = nil
	n.mu.Unlock()
	f := n.fsys
	tracked := f.track(func() {
		if err := im.Close(); err != nil {
			f.logf("close image %s: %v", n.snap.Ref(), err)
		}
	})
	if !tracked {
		// The store is being closed: a delete this close would finish is finished when it is
		// next opened.
		f.logf("close image %s: left for the next open of the store", n.snap.Ref())
	}
}

// Getxattr returns one of the image's user.snapfs.* attributes.
func (n *imageNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, errno := n.xattr(ctx, attr)
	if errno != 0 {
		return 0, errno
	}
	return copyOut(dest, v)
}

// Listxattr lists the image's attributes.
func (n *imageNode) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	return copyOut(dest, imageXattrList)
}

// xattr is the value of attribute name. The parent and unique_bytes change as neighbours are
// deleted, so they are asked for afresh. Once the snapshot is gone (an image still open on it), the
// parent is the one it had and unique_bytes has no value; when the engine cannot say, the getxattr
// fails rather than answer a value that may be wrong. The question is not given up when the caller
// gets a signal (a Go program gets them all the time), for the same reason.
func (n *imageNode) xattr(ctx context.Context, name string) (string, syscall.Errno) {
	s := n.snap
	switch name {
	case xattrID:
		return strconv.FormatInt(s.ID, 10), 0
	case xattrCreated:
		return s.Created.UTC().Format(time.RFC3339), 0
	case xattrParent:
		fresh, err := n.fresh(ctx, false)
		if errors.Is(err, chain.ErrNotFound) {
			return strconv.FormatInt(s.Parent, 10), 0
		} else if err != nil {
			return "", n.fsys.errno("getxattr "+name+" of "+s.Ref(), err)
		}
		return strconv.FormatInt(fresh.Parent, 10), 0
	case xattrUniqueBytes:
		fresh, err := n.fresh(ctx, true)
		if errors.Is(err, chain.ErrNotFound) {
			return "", syscall.ENODATA
		} else if err != nil {
			return "", n.fsys.errno("getxattr "+name+" of "+s.Ref(), err)
		}
		return strconv.FormatInt(fresh.UniqueBytes, 10), 0
	}
	return "", syscall.ENODATA
}

// fresh describes the snapshot as the engine sees it now; with stats, with its unique bytes (which
// costs a pass over its deltas). The error wraps chain.ErrNotFound when the snapshot is gone.
func (n *imageNode) fresh(ctx context.Context, stats bool) (chain.Snapshot, error) {
	lookup := n.fsys.m.SnapshotInfo
	if stats {
		lookup = n.fsys.m.Snapshot
	}
	s, err := lookup(uninterrupted(ctx), n.ref())
	if err == nil && !s.Created.Equal(n.snap.Created) {
		err = fmt.Errorf("snapshot %s: %w (replaced by another snapshot)", n.snap.Ref(), chain.ErrNotFound)
	}
	return s, err
}

// copyOut answers a getxattr or listxattr: the size when dest is empty, ERANGE when it is too small.
func copyOut(dest []byte, v string) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// imageHandle is one open of an image. Reads go to the shared chain.Image in parallel.
type imageHandle struct {
	n  *imageNode
	im *chain.Image
}

var (
	_ gofs.FileReader   = (*imageHandle)(nil)
	_ gofs.FileLseeker  = (*imageHandle)(nil)
	_ gofs.FileReleaser = (*imageHandle)(nil)
	_ gofs.FileFsyncer  = (*imageHandle)(nil)
)

// Read reads from the image; a read at or past the end returns short.
func (h *imageHandle) Read(_ context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := h.im.Size()
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	dest = dest[:min(int64(len(dest)), size-off)]
	if err := readParallel(h.im, dest, off); err != nil {
		return nil, h.n.fsys.errno("read "+h.n.snap.Ref(), err)
	}
	return fuse.ReadResultData(dest), 0
}

// Reads larger than one piece are split in up to maxPieces chunk-aligned pieces read at once: the
// engine reads the chunks of one ReadAt one after another, and a cold read waits on the disk for
// each.
const (
	minPiece  = 128 << 10
	maxPieces = 8
)

// readParallel fills p, which lies within the image, from off.
func readParallel(im *chain.Image, p []byte, off int64) error {
	piece := max(im.ChunkSize(), minPiece, (int64(len(p))+maxPieces-1)/maxPieces)
	if int64(len(p)) <= piece {
		return readFull(im, p, off)
	}
	var wg sync.WaitGroup
	errs := make(chan error, maxPieces+1)
	for start := int64(0); start < int64(len(p)); {
		// Pieces end on chunk boundaries of the image, so no chunk is decoded twice.
		end := min(int64(len(p)), (off+start+piece)/im.ChunkSize()*im.ChunkSize()-off)
		if end <= start {
			end = min(int64(len(p)), start+piece)
		}
		wg.Add(1)
		go func(q []byte, at int64) {
			defer wg.Done()
			if err := readFull(im, q, at); err != nil {
				errs <- err
			}
		}(p[start:end], off+start)
		start = end
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// readFull fills p from off, which the caller keeps within the image.
func readFull(im *chain.Image, p []byte, off int64) error {
	n, err := im.ReadAt(p, off)
	if n == len(p) && errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the image's chunk map, so that sparse copies skip holes.
func (h *imageHandle) Lseek(_ context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	size := h.im.Size()
	if off >= uint64(size) {
		return 0, syscall.ENXIO
	}
	switch whence {
	case unix.SEEK_DATA:
		pos, ok := h.im.SeekData(int64(off))
		if !ok {
			return 0, syscall.ENXIO
		}
		return uint64(pos), 0
	case unix.SEEK_HOLE:
		return uint64(h.im.SeekHole(int64(off))), 0
	}
	return 0, syscall.EINVAL
}

// Fsync succeeds: the image is read-only, with nothing to write out.
func (h *imageHandle) Fsync(context.Context, uint32) syscall.Errno { return 0 }

// Release drops the open.
func (h *imageHandle) Release(context.Context) syscall.Errno {
	h.n.release()
	return 0
}
