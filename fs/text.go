package fs

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// textGen produces a text file's current content.
type textGen func(ctx context.Context) ([]byte, error)

// textNode is a small read-only file whose content is produced when it is opened (and again whenever
// it is read from the start), such as status and info.
type textNode struct {
	gofs.Inode
	readOnly
	fsys *FS
	path string
	gen  textGen
}

var (
	_ gofs.NodeOpener    = (*textNode)(nil)
	_ gofs.NodeGetattrer = (*textNode)(nil)
)

func (f *FS) newText(path string, gen textGen) *textNode {
	return &textNode{fsys: f, path: path, gen: gen}
}

func (n *textNode) stable() gofs.StableAttr { return gofs.StableAttr{Mode: syscall.S_IFREG} }

func (n *textNode) sameAs(other node) bool {
	o, ok := other.(*textNode)
	return ok && o.path == n.path
}

func (n *textNode) fill(ctx context.Context, out *fuse.Attr) syscall.Errno {
	data, err := n.gen(uninterrupted(ctx))
	if err != nil {
		return n.fsys.errno("read "+n.path, err)
	}
	n.fsys.setAttr(out, syscall.S_IFREG|0o444, int64(len(data)), time.Now())
	return 0
}

func (n *textNode) timeouts() (time.Duration, time.Duration) { return dirTimeout, fileTimeout }

// Getattr describes the file; its size is the length of the current content.
func (n *textNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return getattr(ctx, n, out)
}

// Open opens the file for reading; it bypasses the page cache since the content changes.
func (n *textNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return &textHandle{n: n}, fuse.FOPEN_DIRECT_IO, 0
}

// textHandle is an open text file.
type textHandle struct {
	n    *textNode
	mu   sync.Mutex
	data []byte
	have bool
}

var (
	_ gofs.FileReader  = (*textHandle)(nil)
	_ gofs.FileFsyncer = (*textHandle)(nil)
)

// Read reads the content as of the last read from offset 0 (or the first read).
func (h *textHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off == 0 || !h.have {
		data, err := h.n.gen(uninterrupted(ctx))
		if err != nil {
			return nil, h.n.fsys.errno("read "+h.n.path, err)
		}
		h.data, h.have = data, true
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(h.data[off:min(int64(len(h.data)), off+int64(len(dest)))]), 0
}

// Fsync succeeds: the file is read-only, with nothing to write out. Without it go-fuse answers
// ENOTSUP, which fails programs that fsync every file they are done with.
func (h *textHandle) Fsync(context.Context, uint32) syscall.Errno { return 0 }

// kv builds "key: value" lines.
type kv struct{ bytes.Buffer }

func (b *kv) add(key string, value any) {
	fmt.Fprintf(&b.Buffer, "%s: %v\n", key, value)
}

// volumeInfo describes a volume: name, source, kind, instance, size, chunk_size, chain.
func (f *FS) volumeInfo(name string) textGen {
	return func(ctx context.Context) ([]byte, error) {
		v, err := f.m.Volume(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", name, err)
		}
		var b kv
		b.add("name", v.Name)
		b.add("source", v.Source)
		b.add("kind", v.Kind)
		b.add("instance", v.Instance)
		b.add("size", strconv.FormatInt(v.Size, 10))
		b.add("chunk_size", strconv.FormatInt(v.ChunkSize, 10))
		b.add("chain", v.Chain)
		return b.Bytes(), nil
	}
}

// chainInfo describes a chain: name, region, capacity, snapshots, source, stored_bytes.
func (f *FS) chainInfo(name string) textGen {
	return func(ctx context.Context) ([]byte, error) {
		c, err := f.m.Chain(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("chain %s: %w", name, err)
		}
		var b kv
		b.add("name", c.Name)
		b.add("region", c.Region)
		b.add("capacity", strconv.FormatInt(c.Size, 10))
		b.add("snapshots", strconv.FormatInt(c.Snapshots, 10))
		b.add("source", c.Source)
		b.add("stored_bytes", strconv.FormatInt(c.StoredBytes, 10))
		return b.Bytes(), nil
	}
}

// statusText is a volume's status line.
func (f *FS) statusText(volume string) textGen {
	return func(context.Context) ([]byte, error) {
		return []byte(f.jobs.status(volume, time.Now()) + "\n"), nil
	}
}
