package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is what every file and directory of the tree is.
type node interface {
	gofs.InodeEmbedder
	// stable is the node's identity for go-fuse: its type, and an inode number when it has a fixed one.
	stable() gofs.StableAttr
	// sameAs reports whether the node, already in the tree, still stands for the freshly made other.
	sameAs(other node) bool
	// fill sets the node's attributes.
	fill(ctx context.Context, out *fuse.Attr) syscall.Errno
	// timeouts are how long the kernel may cache the node's name and its attributes.
	timeouts() (entry, attr time.Duration)
}

// attach answers a lookup of name in parent: with the child already in the tree when it still stands
// for fresh (so that the kernel keeps its caches), else with a new inode for fresh.
func attach(ctx context.Context, parent *gofs.Inode, name string, fresh node, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n := node(fresh)
	var in *gofs.Inode
	if old := parent.GetChild(name); old != nil {
		if on, ok := old.Operations().(node); ok && on.sameAs(fresh) {
			n, in = on, old
		}
	}
	if errno := n.fill(ctx, &out.Attr); errno != 0 {
		return nil, errno
	}
	entry, attr := n.timeouts()
	out.SetEntryTimeout(entry)
	out.SetAttrTimeout(attr)
	if in == nil {
		in = parent.NewInode(ctx, n, n.stable())
	}
	return in, 0
}

// getattr answers a GETATTR for n.
func getattr(ctx context.Context, n node, out *fuse.AttrOut) syscall.Errno {
	if errno := n.fill(ctx, &out.Attr); errno != 0 {
		return errno
	}
	_, attr := n.timeouts()
	out.SetTimeout(attr)
	return 0
}

// setAttr fills the attributes every node shares: type and permissions, size, times and owner.
func (f *FS) setAttr(out *fuse.Attr, mode uint32, size int64, mtime time.Time) {
	out.Mode = mode
	out.Size = uint64(size)
	out.Nlink = 1
	if mode&syscall.S_IFDIR != 0 {
		out.Nlink = 2
	}
	out.Owner = fuse.Owner{Uid: f.uid, Gid: f.gid}
	out.SetTimes(&mtime, &mtime, &mtime)
	out.Blksize = 1 << 20
	out.Blocks = (uint64(size) + 511) / 512
}

// readOnly refuses every change to the tree; nodes embed it and override what they allow. It also
// answers statfs, which the kernel may send for any node.
type readOnly struct{}

// Statfs describes the file system: nothing to count, but a block size and the longest name, which
// go-fuse leaves zero (stat -f showed them as 0, and programs divide by them).
func (readOnly) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	*out = fuse.StatfsOut{Bsize: statfsBlock, Frsize: statfsBlock, NameLen: maxNameLen}
	return 0
}

// The block size and longest name statfs reports. Names are shorter (a snapshot's is at most 128
// bytes, and an image adds .img), but 255 is what programs expect of a Linux file system.
const (
	statfsBlock = 4096
	maxNameLen  = 255
)

// Setattr refuses chmod, chown, truncate and utimes.
func (readOnly) Setattr(context.Context, gofs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

// Setxattr refuses to set extended attributes.
func (readOnly) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EROFS
}

// Removexattr refuses to remove extended attributes.
func (readOnly) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }

// Create refuses to create files.
func (readOnly) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

// Mkdir refuses to create directories.
func (readOnly) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Mknod refuses to create device nodes, fifos and sockets.
func (readOnly) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Symlink refuses to create symbolic links.
func (readOnly) Symlink(context.Context, string, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Link refuses to create hard links.
func (readOnly) Link(context.Context, gofs.InodeEmbedder, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Unlink refuses to remove files.
func (readOnly) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }

// Rmdir refuses to remove directories.
func (readOnly) Rmdir(context.Context, string) syscall.Errno { return syscall.EROFS }

// Rename refuses to rename.
func (readOnly) Rename(context.Context, string, gofs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}

// Allocate refuses fallocate.
func (readOnly) Allocate(context.Context, gofs.FileHandle, uint64, uint64, uint32) syscall.Errno {
	return syscall.EROFS
}

// uninterrupted is the context a FUSE request's short metadata work runs under. The kernel
// interrupts a request when its caller gets a signal — a Go program's threads get SIGURG for
// preemption all the time — and go-fuse then cancels the request's context; a listing or a ctl
// command cancelled half-way would answer an error for what is a valid request (a ctl write was
// refused with EINVAL that way). These reads take milliseconds: they finish instead.
func uninterrupted(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }
