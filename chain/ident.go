package chain

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// diskIdent says which disk d is beyond its path, as far as the host can tell: a path can come to
// name another disk (block devices are numbered anew at boot, a loop device is attached to another
// file, an image file is replaced by another), and snapshots taken through it must not join the
// first disk's chain, nor that chain be restored onto it. It returns "" when nothing identifies the
// disk.
func diskIdent(d *disk) string {
	if !d.block {
		return fileIdent(d.path)
	}
	return blockIdent(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(d.st.Rdev), unix.Minor(d.st.Rdev)))
}

// fileIdent is a file's inode number and birth time: a file renamed over it, or deleted and made
// again, has others; one rewritten in place keeps them, across boots too.
func fileIdent(path string) string {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_BTIME, &stx); err != nil {
		return ""
	}
	id := fmt.Sprintf("file ino %d", stx.Ino)
	if stx.Mask&unix.STATX_BTIME != 0 {
		id += fmt.Sprintf(" born %d.%09d", stx.Btime.Sec, stx.Btime.Nsec)
	}
	return id
}

// blockIdent is what the kernel knows of the block device at sys (its /sys/dev/block directory) that
// stays with it: a device-mapper UUID, a loop device's backing file and offset, a disk's WWID or
// serial number, or a partition's number on a disk so identified.
func blockIdent(sys string) string {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(sys, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if u := read("dm/uuid"); u != "" {
		return "dm " + u
	}
	if f := read("loop/backing_file"); f != "" {
		id := fileIdent(f)
		if id == "" {
			return "" // detached, or its file deleted
		}
		return fmt.Sprintf("loop %s offset %s", id, read("loop/offset"))
	}
	if n := read("partition"); n != "" {
		dir, err := filepath.EvalSymlinks(sys)
		if err != nil {
			return ""
		}
		parent := blockIdent(filepath.Dir(dir))
		if parent == "" {
			return ""
		}
		return parent + " partition " + n
	}
	for _, name := range []string{"wwid", "device/wwid", "serial", "device/serial"} {
		if v := read(name); v != "" {
			return "disk " + v
		}
	}
	return ""
}

// checkSameDisk refuses a disk whose identity is known and is not the one volume v recorded.
func checkSameDisk(v string, recorded, now, path string) error {
	if recorded == "" || now == "" || recorded == now {
		return nil
	}
	return fmt.Errorf("source %s: %w than volume %s was added with (%s then, %s now)", path, ErrOtherDisk, v, recorded, now)
}
