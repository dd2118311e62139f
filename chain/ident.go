package chain

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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
	return blockIdent(sysBlock(d.st.Rdev))
}

// Filesystems whose inode numbers stay with a file for its life, across remounts and boots (FAT,
// exFAT, CIFS without server inode numbers and many FUSE filesystems make them up as they go).
var stableInodes = map[int64]bool{
	unix.EXT4_SUPER_MAGIC:  true, // ext2, ext3, ext4
	unix.XFS_SUPER_MAGIC:   true,
	unix.BTRFS_SUPER_MAGIC: true,
	unix.TMPFS_MAGIC:       true,
	unix.F2FS_SUPER_MAGIC:  true,
	unix.NFS_SUPER_MAGIC:   true,
	0x2fc12fc1:             true, // ZFS
	0xca451a4e:             true, // bcachefs
}

// fileIdent is a file's inode number and birth time: a file renamed over it, or deleted and made
// again, has others; one rewritten in place keeps them, across boots too. It is "" on filesystems
// whose inode numbers do not stay (see stableInodes), and for device nodes, which are made anew at
// every boot.
func fileIdent(path string) string {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil || !stableInodes[int64(fs.Type)] {
		return ""
	}
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_BTIME|unix.STATX_TYPE, &stx); err != nil ||
		stx.Mode&unix.S_IFMT != unix.S_IFREG {
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
		if f := strings.SplitN(u, "-", 4); len(f) == 4 && f[0] == "CRYPT" && luksUUID.MatchString(f[2]) {
			// CRYPT-TYPE-UUID-NAME: the mapping's name is the opener's choice. Without a UUID
			// (CRYPT-PLAIN-NAME) the name is all there is, and stays.
			u = strings.Join(f[:3], "-")
		}
		return "dm " + u
	}
	if f := read("loop/backing_file"); f != "" {
		var id string
		var st unix.Stat_t
		if unix.Stat(f, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			id = blockIdent(sysBlock(st.Rdev))
		} else {
			id = fileIdent(f)
		}
		if id == "" {
			return "" // detached, its file deleted, or nothing identifies it
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

// luksUUID matches the UUID cryptsetup puts in a mapping's device-mapper UUID: 32 hex digits.
var luksUUID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// bornRE matches the birth time in an identity.
var bornRE = regexp.MustCompile(` born [0-9.]+`)

// sameIdent reports whether two identities name one disk. A birth time counts only when both have
// one: a kernel or filesystem may begin to report it.
func sameIdent(a, b string) bool {
	if bornRE.MatchString(a) != bornRE.MatchString(b) {
		a, b = bornRE.ReplaceAllString(a, ""), bornRE.ReplaceAllString(b, "")
	}
	return a == b
}

// checkSameDisk refuses a disk whose identity is known and is not the one volume v recorded; what
// says which disk it is to the command (its source, or a restore's target) and path where.
func checkSameDisk(what, v string, recorded, now, path string) error {
	if recorded == "" || now == "" || sameIdent(recorded, now) {
		return nil
	}
	return fmt.Errorf("%s %s: %w than volume %s was added with (%s then, %s now)", what, path, ErrOtherDisk, v, recorded, now)
}
