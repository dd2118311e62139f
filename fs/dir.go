package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// named is one entry of a directory: its name and the node it names.
type named struct {
	name string
	node node
}

// lister gives a directory its entries, from the Manager, every time it is asked.
type lister interface {
	// key identifies the directory: two directory nodes with the same key are the same directory.
	key() string
	// list returns every entry.
	list(ctx context.Context, f *FS) ([]named, error)
	// find returns the entry called name.
	find(ctx context.Context, f *FS, name string) (node, error)
}

// dirNode is a directory whose entries come from its lister.
type dirNode struct {
	gofs.Inode
	readOnly
	fsys *FS
	src  lister
}

var (
	_ gofs.NodeLookuper       = (*dirNode)(nil)
	_ gofs.NodeOpendirHandler = (*dirNode)(nil)
	_ gofs.NodeGetattrer      = (*dirNode)(nil)
	_ gofs.NodeUnlinker       = (*dirNode)(nil)
	_ gofs.NodeCreater        = (*dirNode)(nil)
)

func (f *FS) newDir(src lister) *dirNode { return &dirNode{fsys: f, src: src} }

func (d *dirNode) stable() gofs.StableAttr { return gofs.StableAttr{Mode: syscall.S_IFDIR} }

func (d *dirNode) sameAs(other node) bool {
	o, ok := other.(*dirNode)
	return ok && o.src.key() == d.src.key()
}

func (d *dirNode) fill(_ context.Context, out *fuse.Attr) syscall.Errno {
	d.fsys.setAttr(out, syscall.S_IFDIR|0o555, 0, d.fsys.started)
	out.Blocks = 0
	return 0
}

func (d *dirNode) timeouts() (time.Duration, time.Duration) { return dirTimeout, dirTimeout }

// Getattr describes the directory.
func (d *dirNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return getattr(ctx, d, out)
}

// Lookup finds one entry, asking the Manager.
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	deletes := d.fsys.deletes.Load() // before the Manager is asked
	n, err := d.src.find(uninterrupted(ctx), d.fsys, name)
	if err != nil {
		return nil, d.fsys.errno("lookup "+d.src.key()+"/"+name, err)
	}
	return d.fsys.attachSince(ctx, deletes, d.EmbeddedInode(), name, n, out)
}

// attachSince is attach for an entry read from the Manager when the delete count was deletes: if a
// delete has been told of since, the kernel may have forgotten the name before this answer reaches
// it, and is told not to keep it.
func (f *FS) attachSince(ctx context.Context, deletes uint64, parent *gofs.Inode, name string, n node, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	in, errno := attach(ctx, parent, name, n, out)
	if errno == 0 && f.deletes.Load() != deletes {
		out.SetEntryTimeout(0)
	}
	return in, errno
}

// OpendirHandle starts a listing; the entries are read from the Manager once per listing.
func (d *dirNode) OpendirHandle(context.Context, uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{d: d}, 0, 0
}

// dirHandle is one listing of a directory. It also answers the lookups READDIRPLUS makes for the
// entries it lists, from the same listing, so that a long listing asks the Manager once.
type dirHandle struct {
	d       *dirNode
	entries []named
	listed  bool
	next    int
	deletes uint64 // FS.deletes when the entries were read
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileLookuper     = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (h *dirHandle) load(ctx context.Context) syscall.Errno {
	h.deletes = h.d.fsys.deletes.Load() // before the Manager is asked
	entries, err := h.d.src.list(uninterrupted(ctx), h.d.fsys)
	if err != nil {
		return h.d.fsys.errno("list "+h.d.src.key(), err)
	}
	h.entries, h.listed, h.next = entries, true, 0
	return 0
}

// Readdirent returns the next entry.
func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !h.listed {
		if errno := h.load(ctx); errno != 0 {
			return nil, errno
		}
	}
	if h.next >= len(h.entries) {
		return nil, 0
	}
	e := h.entries[h.next]
	h.next++
	st := e.node.stable()
	return &fuse.DirEntry{Name: e.name, Mode: st.Mode, Ino: st.Ino, Off: uint64(h.next)}, 0
}

// Seekdir moves to an offset Readdirent returned; 0 lists the directory afresh.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		return h.load(ctx)
	}
	if off > uint64(len(h.entries)) {
		return syscall.EINVAL
	}
	h.next = int(off)
	return 0
}

// Lookup answers READDIRPLUS's lookup of an entry just listed, from the listing unless something was
// deleted since it was read: then the Manager is asked again, so that a deleted snapshot's name is
// not handed back to the kernel.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if h.d.fsys.deletes.Load() == h.deletes {
		for i := h.next - 1; i >= 0; i-- {
			if h.entries[i].name == name {
				return h.d.fsys.attachSince(ctx, h.deletes, h.d.EmbeddedInode(), name, h.entries[i].node, out)
			}
		}
	}
	return h.d.Lookup(ctx, name, out)
}

// Fsyncdir succeeds: the directory is read-only, with nothing to write out.
func (h *dirHandle) Fsyncdir(context.Context, uint32) syscall.Errno { return 0 }
