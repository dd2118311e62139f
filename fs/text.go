package fs

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
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
	data, changed, err := n.content(ctx)
	if err != nil {
		return n.fsys.errno("read "+n.path, err)
	}
	n.fsys.setAttr(out, syscall.S_IFREG|0o444, int64(len(data)), changed)
	return 0
}

// content produces the file's current content, and the time it changed (see textTimes).
func (n *textNode) content(ctx context.Context) ([]byte, time.Time, error) {
	data, err := n.gen(uninterrupted(ctx))
	if err != nil {
		return nil, time.Time{}, err
	}
	return data, n.fsys.texts.stamp(n.path, data, time.Now()), nil
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
		data, _, err := h.n.content(ctx) // a change seen by a read dates the file's times too
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

// textTimes remembers, per text file, the content it was last seen with and when that content was
// first seen: the file's mtime and ctime, which change only when the content does. With the time of
// every stat instead, tar failed on each text file as "changed as we read it", and find -newer
// always matched them. When a change happened is not known, only when it was first seen, which is
// never earlier: a file that changed after a given time always shows a later one. It is kept by
// path, not by inode, so that a file the kernel forgot and looks up again keeps its time.
type textTimes struct {
	mu    sync.Mutex
	files map[string]textStamp
}

// textStamp is a text file's content and the time it was first seen.
type textStamp struct {
	data string
	at   time.Time
}

func newTextTimes() *textTimes { return &textTimes{files: map[string]textStamp{}} }

// stamp returns the time of path's content data: that of its first sighting, now if it was not
// seen before or the file was last seen with other content.
func (ts *textTimes) stamp(path string, data []byte, now time.Time) time.Time {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	st, ok := ts.files[path]
	if !ok || st.data != string(data) {
		st = textStamp{data: string(data), at: now}
		ts.files[path] = st
	}
	return st.at
}

// forget drops the files under dir (a path ending in "/"), which are gone.
func (ts *textTimes) forget(dir string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for path := range ts.files {
		if strings.HasPrefix(path, dir) {
			delete(ts.files, path)
		}
	}
}

// kv builds "key: value" lines.
type kv struct{ bytes.Buffer }

// add adds a line; a value that is not plain text (a source path may hold a newline) shows quoted,
// so that it cannot make lines of its own.
func (b *kv) add(key string, value any) {
	fmt.Fprintf(&b.Buffer, "%s: %s\n", key, shown(fmt.Sprint(value)))
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
