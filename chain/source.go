package chain

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// disk is an opened source or target disk: a regular image file or a block device.
type disk struct {
	path  string
	f     *os.File
	size  int64
	block bool
	st    unix.Stat_t
	flag  int // os.O_RDONLY or os.O_RDWR

	direct      *os.File    // the disk opened for O_DIRECT too (see useDirect); or nil
	claimed     *os.File    // a block device opened exclusively (see claim); or nil
	touched     atomic.Bool // a write to the disk was attempted (writeAt, or a restore's zero)
	noDirect    atomic.Bool // the filesystem refused direct I/O: go through f
	noCachestat atomic.Bool // the kernel has no cachestat: take nothing for cached
}

// statDisk checks that path names a regular file or a block device and returns its absolute path.
func statDisk(path string) (string, unix.Stat_t, error) {
	var st unix.Stat_t
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", st, fmt.Errorf("%w: path %s: %v", ErrInvalid, path, err)
	}
	if err := unix.Stat(abs, &st); err != nil {
		return "", st, fmt.Errorf("%s: %w", abs, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFBLK:
		return abs, st, nil
	case unix.S_IFDIR:
		return "", st, fmt.Errorf("%w: %s is a directory, not a disk", ErrInvalid, abs)
	default:
		return "", st, fmt.Errorf("%w: %s is not a regular file or block device", ErrInvalid, abs)
	}
}

// sameDisk reports whether two stats name the same disk: the same block device, or the same file.
func sameDisk(a, b unix.Stat_t) bool {
	if a.Mode&unix.S_IFMT != b.Mode&unix.S_IFMT {
		return false
	}
	if a.Mode&unix.S_IFMT == unix.S_IFBLK {
		return a.Rdev == b.Rdev
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// openDisk opens a disk for reading (flag O_RDONLY) or writing (O_RDWR). Block devices are read with
// O_DIRECT so that a snapshot holds what is persisted on the device, not what a page cache holds.
func openDisk(path string, flag int) (*disk, error) {
	abs, st, err := statDisk(path)
	if err != nil {
		return nil, err
	}
	d := &disk{path: abs, st: st, block: st.Mode&unix.S_IFMT == unix.S_IFBLK, flag: flag}
	open := func(extra int) (*os.File, error) { return os.OpenFile(abs, flag|extra|unix.O_CLOEXEC, 0) }
	if d.block && flag == os.O_RDONLY {
		d.f, err = open(unix.O_DIRECT)
		if errors.Is(err, unix.EINVAL) {
			d.f, err = open(0)
		}
	} else {
		d.f, err = open(0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", abs, unwrapPath(err))
	}
	if d.size, err = d.currentSize(); err != nil {
		d.f.Close()
		return nil, err
	}
	if d.block && d.size == 0 {
		// What a detached loop device or a drive without its medium reads as: not a disk, and
		// snapshotting it would record an empty one.
		d.f.Close()
		return nil, fmt.Errorf("%s: block device of size 0 (no medium, or a detached loop device)", abs)
	}
	return d, nil
}

func (d *disk) currentSize() (int64, error) {
	if d.block {
		n, err := d.f.Seek(0, 2)
		if err != nil {
			return 0, fmt.Errorf("size of %s: %w", d.path, err)
		}
		return n, nil
	}
	fi, err := d.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", d.path, err)
	}
	return fi.Size(), nil
}

func (d *disk) Close() error {
	if d.direct != nil {
		d.direct.Close()
	}
	if d.claimed != nil {
		d.claimed.Close()
	}
	return d.f.Close()
}

// claim opens the block device d exclusively until d is closed. The kernel refuses that while the
// device or any partition of it is mounted, or is part of an LVM or RAID volume, or swap; and,
// once granted, it refuses to mount the device or its partitions until d is closed. It returns
// ErrInUse when the device is busy.
func (d *disk) claim() error {
	f, err := os.OpenFile(d.path, os.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("target %s is in use (mounted, a partition of it mounted, or held by the kernel): %w", d.path, ErrInUse)
	}
	if err != nil {
		return fmt.Errorf("open %s exclusively: %w", d.path, unwrapPath(err))
	}
	d.claimed = f
	return nil
}

// useDirect makes readAt and writeAt bypass the page cache where the filesystem allows it, except
// for reads of data the page cache holds already. Reading or writing a whole disk next to as much
// other I/O, buffered access cost 3-6 CPU-seconds of kernel copying for a 2 GiB disk on the
// machines measured, direct access about 1; and a cold incremental snapshot read through the cache
// took 2.3-3.5 s instead of 0.9 (the kernel filling fresh page-cache memory, which this virtual
// machine's host had taken back). Cached data is read at memory speed: 0.5 s for a warm
// incremental snapshot, against 1.0 s directly. Either way a snapshot leaves the page cache as it
// found it rather than filling it with the disk. Block devices are read directly anyway (see
// openDisk).
func (d *disk) useDirect() {
	if d.direct != nil || d.block && d.flag == os.O_RDONLY {
		return
	}
	f, err := os.OpenFile(d.path, d.flag|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || !sameDisk(st, d.st) {
		f.Close() // the path names another disk now: keep to the one opened
		return
	}
	d.direct = f
}

// directAlign is the alignment of direct I/O of a disk opened by useDirect.
const directAlign = 4096

// aligned reports whether p and off suit direct I/O.
func aligned(p []byte, off int64) bool {
	return off%directAlign == 0 && len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))%directAlign == 0
}

// readAt reads len(p) bytes at off, or fewer at the end of the disk, like ReadAt. It reads directly
// where p is aligned and has the capacity to round the read up to whole blocks, unless the page cache
// holds most of those bytes.
func (d *disk) readAt(p []byte, off int64) (int, error) {
	want := len(p)
	whole := (want + directAlign - 1) / directAlign * directAlign
	if d.direct != nil && !d.noDirect.Load() && aligned(p, off) && whole <= cap(p) && !d.cached(off, int64(want)) {
		n, err := d.direct.ReadAt(p[:whole], off)
		if !errors.Is(err, unix.EINVAL) {
			if n >= want {
				return want, nil
			}
			return n, err
		}
		d.noDirect.Store(true) // the filesystem takes no direct reads of this alignment
	}
	return d.f.ReadAt(p, off)
}

// cached reports whether the page cache holds at least half of the n bytes of the disk at off. It
// says no where the kernel cannot tell (cachestat came with Linux 6.5).
func (d *disk) cached(off, n int64) bool {
	if d.noCachestat.Load() || n <= 0 {
		return false
	}
	r := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(d.f.Fd()), &r, &cs, 0); err != nil {
		d.noCachestat.Store(true)
		return false
	}
	return 2*int64(cs.Cache)*int64(os.Getpagesize()) >= n
}

// writeAt writes p at off, directly where p, off and its length suit direct I/O.
func (d *disk) writeAt(p []byte, off int64) (int, error) {
	d.touched.Store(true)
	if d.direct != nil && !d.noDirect.Load() && aligned(p, off) && len(p)%directAlign == 0 {
		n, err := d.direct.WriteAt(p, off)
		if !errors.Is(err, unix.EINVAL) {
			return n, err
		}
		d.noDirect.Store(true)
	}
	return d.f.WriteAt(p, off)
}

// unwrapPath drops the *PathError wrapper whose path the caller already names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// inUse says why a disk may not be written to: a block device that is mounted, has holders or is
// the backing of a loop device, or an image file attached to a loop device. It returns "" when the
// disk is free.
func inUse(d *disk) string {
	if d.block {
		mounts, err := MountTable()
		if err != nil {
			return "of unknown use (" + err.Error() + ")" // not taken for free
		}
		return blockInUse(mounts, d.st.Rdev, 0)
	}
	if loop, loopRdev := loopBacking(d.st.Dev, d.st.Ino); loop != "" {
		why := "attached to " + loop
		mounts, err := MountTable()
		if err != nil {
			return why + " (" + err.Error() + ")"
		}
		if more := blockInUse(mounts, loopRdev, 1); more != "" {
			why += ", which is " + more
		}
		return why
	}
	return ""
}

// maxLoopStack bounds how many loop devices stacked over one another inUse follows.
const maxLoopStack = 8

// blockInUse says why the block device rdev may not be written to, or "", by the mount table
// mounts. depth is how many loop devices deep it is looking.
func blockInUse(mounts []MountEntry, rdev uint64, depth int) string {
	if mp := mountedDevice(mounts, devNumber(rdev)); mp != "" {
		return "mounted at " + mp
	}
	if part, mp := mountedPartition(mounts, rdev); mp != "" {
		return "partitioned, " + part + " mounted at " + mp
	}
	if holders, _ := os.ReadDir(filepath.Join(sysBlock(rdev), "holders")); len(holders) > 0 {
		return "held by " + holders[0].Name()
	}
	// A loop device over the device (or a partition of it) makes no holder link and takes no
	// exclusive claim, so neither the above nor claim sees it; what is mounted from it is mounted
	// from the loop device. Writing the device writes under that, whatever uses it.
	if loop, loopRdev := loopOverDevice(rdev); loop != "" {
		why := "in use by " + loop + " (a loop device over it)"
		if depth < maxLoopStack {
			if more := blockInUse(mounts, loopRdev, depth+1); more != "" {
				why += ", which is " + more
			}
		}
		return why
	}
	return ""
}

// devNumber is a device number as the mount table and sysfs write it, "MAJOR:MINOR".
func devNumber(rdev uint64) string { return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev)) }

// sysBlock is the sysfs directory of the block device rdev.
func sysBlock(rdev uint64) string { return "/sys/dev/block/" + devNumber(rdev) }

// mountedDevice returns a mount point of the block device numbered dev ("MAJOR:MINOR"), or "".
func mountedDevice(mounts []MountEntry, dev string) string {
	for _, e := range mounts {
		if e.Dev == dev {
			return e.Dir
		}
	}
	return ""
}

// mountedPartition returns a partition of the block device rdev that is mounted, and where, or "".
func mountedPartition(mounts []MountEntry, rdev uint64) (part, mountpoint string) {
	for _, p := range partitions(rdev) {
		if mp := mountedDevice(mounts, p.dev); mp != "" {
			return "/dev/" + p.name, mp
		}
	}
	return "", ""
}

// partition is a partition of a block device: its kernel name ("sda1") and its device number.
type partition struct{ name, dev string }

// partitions lists the partitions of the block device rdev.
func partitions(rdev uint64) []partition {
	dir := sysBlock(rdev)
	entries, _ := os.ReadDir(dir)
	var out []partition
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err != nil {
			continue
		}
		if dev, err := os.ReadFile(filepath.Join(dir, e.Name(), "dev")); err == nil {
			out = append(out, partition{e.Name(), strings.TrimSpace(string(dev))})
		}
	}
	return out
}

// loopBacking returns the loop device whose backing file is the inode (dev, ino), and its device
// number; or "".
func loopBacking(dev, ino uint64) (loop string, loopRdev uint64) {
	eachLoop(func(path string, own uint64, info *unix.LoopInfo64) bool {
		if info.Device == dev && info.Inode == ino {
			loop, loopRdev = path, own
		}
		return loop == ""
	})
	return loop, loopRdev
}

// loopOverDevice returns a loop device whose backing is the block device rdev or a partition of it,
// and its own device number; or "".
func loopOverDevice(rdev uint64) (loop string, loopRdev uint64) {
	devs := map[string]bool{devNumber(rdev): true}
	for _, p := range partitions(rdev) {
		devs[p.dev] = true
	}
	eachLoop(func(path string, own uint64, info *unix.LoopInfo64) bool {
		// lo_rdevice is the backing file's st_rdev: 0 for a regular file.
		if info.Rdevice != 0 && devs[devNumber(info.Rdevice)] {
			loop, loopRdev = path, own
		}
		return loop == ""
	})
	return loop, loopRdev
}

// eachLoop calls fn with each attached loop device, its device number and its status, until fn
// returns false.
func eachLoop(fn func(path string, rdev uint64, info *unix.LoopInfo64) bool) {
	loops, _ := filepath.Glob("/sys/block/loop*")
	for _, l := range loops {
		path := "/dev/" + filepath.Base(l)
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		if err == nil {
			err = unix.Fstat(int(f.Fd()), &st)
		}
		f.Close()
		if err == nil && !fn(path, st.Rdev, info) {
			return
		}
	}
}

// The filesystem freeze ioctls, _IOWR('X', 119, int) and _IOWR('X', 120, int).
const (
	ioctlFIFREEZE = 0xC0045877
	ioctlFITHAW   = 0xC0045878
)

// checkFreezable refuses what FIFREEZE must not be given: a directory that is not a mount point (it
// would freeze whatever filesystem holds it, the root one included) and the filesystem that holds the
// store (writing the snapshot would wait for a thaw that comes after the snapshot).
func checkFreezable(mountpoint, storeDir string) error {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return fmt.Errorf("%w: freeze %s: %v", ErrInvalid, mountpoint, err)
	}
	var st, storeSt unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return fmt.Errorf("freeze %s: %w", abs, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%w: freeze %s: not a directory", ErrInvalid, abs)
	case !isMountPoint(abs):
		return fmt.Errorf("%w: freeze %s: not a mount point", ErrInvalid, abs)
	case unix.Stat(storeDir, &storeSt) == nil && storeSt.Dev == st.Dev:
		return fmt.Errorf("%w: freeze %s: the store is on that filesystem", ErrInvalid, abs)
	}
	return nil
}

// freeze freezes the filesystem mounted at mountpoint (FIFREEZE), after checkFreezable, and returns
// the function that thaws it.
func freeze(mountpoint, storeDir string) (thaw func() error, err error) {
	if err := checkFreezable(mountpoint, storeDir); err != nil {
		return nil, err
	}
	f, err := os.Open(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("freeze %s: %w", mountpoint, unwrapPath(err))
	}
	if err := unix.IoctlSetInt(int(f.Fd()), ioctlFIFREEZE, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("freeze %s: %w", mountpoint, err)
	}
	return func() error {
		defer f.Close()
		if err := unix.IoctlSetInt(int(f.Fd()), ioctlFITHAW, 0); err != nil {
			return fmt.Errorf("thaw %s: %w", mountpoint, err)
		}
		return nil
	}, nil
}

// isMountPoint reports whether dir (absolute, clean) is where a filesystem is mounted.
func isMountPoint(dir string) bool {
	mounts, _ := MountTable()
	for _, e := range mounts {
		if e.Dir == dir {
			return true
		}
	}
	return false
}
