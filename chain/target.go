package chain

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A disk that snapfs writes (a restore's or a clone's target) or reads as a volume must not be one
// of the store's own files: a restore onto a pack cuts it to the snapshot's size, and every chunk
// stored in it is lost; one onto the reserve or the metadata breaks the store; a clone leaves a file
// in the store that nothing accounts for. A path can reach the store's files under other names
// (symlinks, bind mounts, hard links), so they are compared by identity (device and inode), not
// by name alone. Nor may a target be the block device the store's filesystem is on, or what that
// filesystem is on by way of partitions, device-mapper or md devices and loop devices: writing it
// overwrites the store from underneath.
//
// A store holds a great many packs (100,000 in a 6 TiB store), so these checks stat no pack unless
// the target may be one under another name than its path: stat-ing every pack, three times over,
// made each restore, clone and volume add cost seconds.

// fileID is the identity of a file or directory.
type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{uint64(st.Dev), st.Ino} }

// storeTree is what a store directory holds, by identity: the directory itself and the directories
// in it (see maxStoreDepth), found by following symlinks as opening a path would.
type storeTree struct {
	dir  string            // the store directory, absolute
	dirs map[fileID]string // directories: their path under dir
	// files are the files that names in those directories reach elsewhere (a symlink to a file, a
	// file mounted onto a name): their path under dir. The files in the directories themselves
	// are not listed.
	files map[fileID]string
	devs  map[uint64]bool // the devices those directories are on

	// The work done, which tests count: stats of directory entries while reading the tree, and
	// scans of the directories for a file (see fileNamed).
	stats, scans int
}

// readStoreTree finds the directories of the store in dir.
func readStoreTree(dir string) (*storeTree, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store directory %s: %w", dir, err)
	}
	t := &storeTree{dir: abs, dirs: map[fileID]string{}, files: map[fileID]string{}, devs: map[uint64]bool{}}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return nil, fmt.Errorf("store directory %s: %w", abs, err)
	}
	// The directories first, then what the symlinks in them lead to: a directory reached both
	// ways is known by its own name.
	var links []storeLink
	t.addDir(abs, &st, 0, &links)
	for len(links) > 0 {
		l := links[0]
		links = links[1:]
		t.stats++
		if unix.Stat(l.path, &st) != nil {
			continue // vanished meanwhile, or dangling
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.addFile(l.path, &st)
		} else if l.depth <= maxStoreDepth {
			t.addDir(l.path, &st, l.depth, &links)
		}
	}
	t.addMountedFiles()
	return t, nil
}

// storeLink is a symlink in the store's directories, depth levels under the store directory.
type storeLink struct {
	path  string
	depth int
}

// maxStoreDepth is how deep under the store directory readStoreTree looks: the store keeps its
// files one level down (packs/); deeper is something else mounted or linked there.
const maxStoreDepth = 2

// addDir records the directory path, with identity st, depth levels under the store directory, and
// the directories in it; it adds its symlinks to links. It stats only the directories: a file in
// it is found by its directory when needed (see named), and the store's directories hold a file
// per pack. The directory entry says which names are which.
func (t *storeTree) addDir(path string, st *unix.Stat_t, depth int, links *[]storeLink) {
	if _, seen := t.dirs[idOf(st)]; seen {
		return // a symlink back up the tree
	}
	t.dirs[idOf(st)] = path
	t.devs[uint64(st.Dev)] = true
	for _, e := range readDirUnsorted(path) {
		switch typ := e.Type(); {
		case typ&fs.ModeSymlink != 0:
			// Even at the deepest level: it may name a file elsewhere.
			*links = append(*links, storeLink{filepath.Join(path, e.Name()), depth + 1})
		case typ.IsDir() && depth < maxStoreDepth:
			p := filepath.Join(path, e.Name())
			var est unix.Stat_t
			t.stats++
			if unix.Stat(p, &est) == nil && est.Mode&unix.S_IFMT == unix.S_IFDIR {
				t.addDir(p, &est, depth+1, links)
			}
		}
	}
}

// addFile records that the store's name p reaches the file st, which may be outside the store's
// directories: writing that file writes what the store reads as p.
func (t *storeTree) addFile(p string, st *unix.Stat_t) {
	if _, ok := t.files[idOf(st)]; !ok {
		t.files[idOf(st)] = p
	}
}

// addMountedFiles records the files mounted onto names in the store's directories (a bind mount of
// a file elsewhere onto a pack): the directory entry says a plain file, and the file mounted is
// named by its own directory, outside the store, so only the mount table tells.
func (t *storeTree) addMountedFiles() {
	mounts, err := MountTable()
	if err != nil {
		return
	}
	real := map[string]string{} // each directory's path as the mount table writes it: its path under dir
	for _, p := range t.dirs {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			real[r] = p
		}
	}
	for _, e := range mounts {
		dir, ok := real[filepath.Dir(e.Dir)]
		if !ok || e.Dir == "/" {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(e.Dir, &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.addFile(filepath.Join(dir, filepath.Base(e.Dir)), &st)
		}
	}
}

// readDirUnsorted returns the entries of directory dir, or as many as it could read. It leaves
// them in the directory's order: sorting a store's packs by name is work no check needs.
func readDirUnsorted(dir string) []os.DirEntry {
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer f.Close()
	entries, _ := f.ReadDir(-1)
	return entries
}

// named returns the path in the store of the file with identity id, or "". resolved is a path of
// the file with no symlinks in it, when that is its only name (see aliased); "" when the file may
// have others, or the path is not known.
func (t *storeTree) named(id fileID, resolved string) string {
	if p, ok := t.dirs[id]; ok {
		return p
	}
	if p, ok := t.files[id]; ok {
		return p
	}
	if resolved == "" {
		return t.fileNamed(id)
	}
	// Its one directory entry is in the directory that holds resolved, whatever path led there:
	// the file is the store's if that directory, or one it is in, is.
	return t.under(filepath.Dir(resolved), filepath.Base(resolved))
}

// fileNamed returns the path in the store of a file whose identity is id, by stat-ing every entry
// of the store's directories, or "": the one way to find a file by another name than its path (a
// hard link, or a file bind-mounted elsewhere), and a stat per pack. Only a file on a device the
// store's directories are on can be one.
func (t *storeTree) fileNamed(id fileID) string {
	if !t.devs[id.dev] {
		return ""
	}
	t.scans++
	for _, dir := range t.dirs {
		for _, e := range readDirUnsorted(dir) {
			p := filepath.Join(dir, e.Name())
			var st unix.Stat_t
			if unix.Stat(p, &st) == nil && idOf(&st) == id {
				return p
			}
		}
	}
	return ""
}

// under returns the path in the store of rel in directory dir (a path with no symlinks), when dir
// or a directory it is in is one of the store's; or "". Each lexical parent of such a path is its
// real parent, and a directory bind-mounted from the store has the identity of the one in the
// store.
func (t *storeTree) under(dir, rel string) string {
	var st unix.Stat_t
	for ; ; dir = filepath.Dir(dir) {
		if unix.Stat(dir, &st) == nil {
			if p, ok := t.dirs[idOf(&st)]; ok {
				return filepath.Join(p, rel)
			}
		}
		if dir == filepath.Dir(dir) {
			return ""
		}
		rel = filepath.Join(filepath.Base(dir), rel)
	}
}

// aliased reports whether the file st may have a name that does not go through the directory that
// holds it: a hard link (an entry in another directory) or a mount of it elsewhere (a bind-mounted
// file is the root of a mount). A directory has no hard links (its link count counts its
// subdirectories), but may be mounted. statx finds the file at path from dirfd, with flags
// (AT_EMPTY_PATH: dirfd itself); where the kernel does not say whether that is a mount root
// (STATX_ATTR_MOUNT_ROOT came with Linux 5.8), or statx finds another file, it may be.
func aliased(st *unix.Stat_t, dirfd int, path string, flags int) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
		return true
	}
	var sx unix.Statx_t
	if err := unix.Statx(dirfd, path, flags, unix.STATX_INO, &sx); err != nil ||
		sx.Ino != st.Ino || sx.Dev_major != unix.Major(uint64(st.Dev)) || sx.Dev_minor != unix.Minor(uint64(st.Dev)) {
		return true
	}
	return sx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 || sx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
}

// realPath returns path with its symlinks resolved if that names the file with identity id, or "".
func realPath(path string, id fileID) string {
	r, err := filepath.EvalSymlinks(path)
	if err != nil || !filepath.IsAbs(r) {
		return ""
	}
	var st unix.Stat_t
	if unix.Stat(r, &st) != nil || idOf(&st) != id {
		return ""
	}
	return r
}

// inStore returns the path in the store that the path reaches, or "" when it reaches none of the
// store's files or directories. The path need not exist: what counts then is the directory it would
// be created in.
func (t *storeTree) inStore(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%w: path %s: %v", ErrInvalid, path, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err == nil {
		resolved := ""
		if !aliased(&st, unix.AT_FDCWD, abs, 0) {
			resolved = realPath(abs, idOf(&st))
		}
		if p := t.named(idOf(&st), resolved); p != "" {
			return p, nil
		}
	}
	// The directories that would hold it, as the kernel finds them: with the symlinks in the path
	// resolved but the last (a symlink in the store is the store's name).
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", nil // no such directory: nothing can be written there
	}
	return t.under(parent, filepath.Base(abs)), nil
}

// refuse returns an error when path (what: "target" or "source") reaches the store; nil otherwise.
func (t *storeTree) refuse(what, path string) error {
	if path == "" {
		return nil // no path to check: opening it fails
	}
	p, err := t.inStore(path)
	if err != nil || p == "" {
		return err
	}
	return t.refusal(what, path, p)
}

// refuseOpened returns an error when the open file f (at path) is one of the store's files, or when
// writing it writes under the store's filesystem (see refuseDevice): a path checked by refuse may
// have come to name another file before it was opened.
func (t *storeTree) refuseOpened(what, path string, f *os.File) error {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	resolved := ""
	if !aliased(&st, fd, "", unix.AT_EMPTY_PATH) {
		// The path the kernel has it open by: the one it was reached by, whatever was
		// renamed or swapped in since the check of path.
		if p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err == nil {
			resolved = realPath(p, idOf(&st))
		}
	}
	if p := t.named(idOf(&st), resolved); p != "" {
		return t.refusal(what, path, p)
	}
	return t.refuseDevice(what, path, &st)
}

// refusal says that path, which is the store's file p, is refused.
func (t *storeTree) refusal(what, path, p string) error {
	abs, _ := filepath.Abs(path)
	msg := fmt.Sprintf("%s %s is inside the store %s", what, abs, t.dir)
	if p != abs {
		msg += " (it is " + p + ")"
	}
	return fmt.Errorf("%w: %s", ErrInvalid, msg)
}

// maxDeviceDepth bounds how many layers of devices (partitions, device-mapper and md devices, loop
// devices: see devicesOn) refuseDevice follows down from a target. A stack is rarely more than a
// few deep; the bound keeps the work finite should the kernel's links ever loop.
const maxDeviceDepth = 2 * maxLoopStack

// refuseDevice returns an error when writing the target (the file st, opened at path) writes under
// the filesystem of one of the store's directories: when the target is a block device that
// filesystem is on, directly or by way of partitions, holders (device mapper, md) and loop devices
// (over it, or over an image file in a filesystem on it), or an image file attached to a loop
// device that is. inUse sees most of these as busy, but --force skips inUse, and a restore there
// overwrites the snapshots it restores.
func (t *storeTree) refuseDevice(what, path string, st *unix.Stat_t) error {
	loops := attachedLoops()
	var starts []uint64
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		starts = []uint64{st.Rdev}
	case unix.S_IFREG:
		for _, l := range loops {
			if l.info.Device == uint64(st.Dev) && l.info.Inode == st.Ino {
				starts = append(starts, l.rdev)
			}
		}
	}
	if len(starts) == 0 {
		return nil
	}
	mounts, err := MountTable()
	if err != nil {
		// Without it the store's filesystem cannot be told from others: not taken as safe.
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	for i := range loops {
		loops[i].lower = loops[i].lowerDevices(mounts)
	}
	store := t.blockDevices(mounts)
	found, start, ok := storeDeviceUnder(starts, store, loops)
	if !ok {
		return nil
	}
	abs, _ := filepath.Abs(path)
	msg := what + " " + abs
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		msg += " is attached to " + devName(start) + ", which"
	}
	msg += " holds the filesystem of the store " + t.dir
	var how []string
	if found != start {
		how = append(how, "on "+devName(found))
	}
	if mp := store[found]; mp != "" {
		how = append(how, "mounted at "+mp)
	}
	if len(how) > 0 {
		msg += " (" + strings.Join(how, ", ") + ")"
	}
	return fmt.Errorf("%w: %s", ErrInvalid, msg)
}

// blockDevices returns the devices the store's directories are on, each with where its filesystem
// is mounted ("" when the mount table does not say): their st_dev, which is the block device for
// most filesystems, and the block device mounted where they are, for filesystems (btrfs) that
// give their files a device number of their own.
func (t *storeTree) blockDevices(mounts []MountEntry) map[uint64]string {
	out := map[uint64]string{}
	add := func(dev uint64, mountpoint string) {
		if out[dev] == "" {
			out[dev] = mountpoint
		}
	}
	for id, p := range t.dirs {
		mountpoint := ""
		if r, err := filepath.EvalSymlinks(p); err == nil {
			if e, ok := containingMount(mounts, r); ok {
				mountpoint = e.Dir
				for _, rdev := range mountDevices(mounts, e, 0) {
					add(rdev, mountpoint)
				}
			}
		}
		add(id.dev, mountpoint)
	}
	return out
}

// storeDeviceUnder looks down from the block devices starts, through the devices on each (see
// devicesOn), for one of the store's devices (see blockDevices). It returns the device found and
// the start it was found from.
func storeDeviceUnder(starts []uint64, store map[uint64]string, loops []loopDevice) (found, start uint64, ok bool) {
	type node struct{ dev, start uint64 }
	var level []node
	for _, s := range starts {
		level = append(level, node{s, s})
	}
	seen := map[uint64]bool{}
	for depth := 0; depth <= maxDeviceDepth && len(level) > 0; depth++ {
		var next []node
		for _, n := range level {
			if seen[n.dev] {
				continue
			}
			seen[n.dev] = true
			if _, ok := store[n.dev]; ok {
				return n.dev, n.start, true
			}
			for _, d := range devicesOn(n.dev, loops) {
				next = append(next, node{d, n.start})
			}
		}
		level = next
	}
	return 0, 0, false
}

// devicesOn returns the block devices whose contents are on the block device rdev, which writing
// rdev writes under: its partitions, the devices that hold it (device mapper, md; sysfs lists
// them), and the loop devices over it or over a file on a filesystem on it.
func devicesOn(rdev uint64, loops []loopDevice) []uint64 {
	var out []uint64
	for _, p := range partitions(rdev) {
		if d, ok := parseDevNumber(p.dev); ok {
			out = append(out, d)
		}
	}
	holders := filepath.Join(sysBlock(rdev), "holders")
	entries, _ := os.ReadDir(holders)
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(holders, e.Name(), "dev")); err == nil {
			if d, ok := parseDevNumber(strings.TrimSpace(string(b))); ok {
				out = append(out, d)
			}
		}
	}
	for _, l := range loops {
		if slices.Contains(l.lower, rdev) {
			out = append(out, l.rdev)
		}
	}
	return out
}

// loopDevice is an attached loop device.
type loopDevice struct {
	path  string
	rdev  uint64 // its own device number
	info  unix.LoopInfo64
	lower []uint64 // the block devices it reads, by way of a filesystem or not (see lowerDevices)
}

// attachedLoops lists the attached loop devices, without their lower devices.
func attachedLoops() []loopDevice {
	var out []loopDevice
	eachLoop(func(path string, rdev uint64, info *unix.LoopInfo64) bool {
		out = append(out, loopDevice{path: path, rdev: rdev, info: *info})
		return true
	})
	return out
}

// lowerDevices returns the block devices that the loop device reads: the one it is attached to, or
// those under the filesystem that holds its backing file; none when that is none (tmpfs) or
// unknown.
func (l loopDevice) lowerDevices(mounts []MountEntry) []uint64 {
	if l.info.Rdevice != 0 { // lo_rdevice is the backing file's st_rdev: a block device
		return []uint64{l.info.Rdevice}
	}
	if unix.Major(l.info.Device) != 0 {
		return []uint64{l.info.Device}
	}
	// An anonymous device number (btrfs, tmpfs, overlayfs): what is mounted where the backing
	// file is says which disk it is on, if any.
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(l.path), "loop", "backing_file"))
	if err != nil {
		return nil
	}
	if e, ok := containingMount(mounts, strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")); ok {
		return mountDevices(mounts, e, 0)
	}
	return nil
}

// mountDevices returns the block devices a mounted filesystem keeps its files on: its source, or,
// for an overlay, the devices of its layers' directories (a file read through it may sit in any
// layer; one written through it sits in the upper one). depth bounds overlays over overlays.
func mountDevices(mounts []MountEntry, e MountEntry, depth int) []uint64 {
	if rdev, ok := blockDevice(e.Source); ok {
		return []uint64{rdev}
	}
	if e.Type != "overlay" || depth > maxDeviceDepth {
		return nil
	}
	var out []uint64
	for _, dir := range overlayLayers(e) {
		var st unix.Stat_t
		if unix.Stat(dir, &st) != nil {
			continue // a layer this mount namespace does not see
		}
		if unix.Major(st.Dev) != 0 {
			out = append(out, st.Dev)
			continue
		}
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			if under, ok := containingMount(mounts, r); ok {
				out = append(out, mountDevices(mounts, under, depth+1)...)
			}
		}
	}
	return out
}

// overlayLayers lists the directories of an overlay mount: upper, lowers and data layers.
func overlayLayers(e MountEntry) []string {
	dirs := e.OptionValues("upperdir")
	for _, lower := range e.OptionValues("lowerdir") {
		dirs = append(dirs, strings.Split(lower, ":")...)
	}
	dirs = append(dirs, e.OptionValues("lowerdir+")...)
	return append(dirs, e.OptionValues("datadir+")...)
}

// containingMount returns the mount that path (absolute, with no symlinks) is in: the one at its
// nearest ancestor, the last mounted there.
func containingMount(mounts []MountEntry, path string) (MountEntry, bool) {
	var best MountEntry
	found := false
	for _, e := range mounts {
		if e.Dir != "/" && path != e.Dir && !strings.HasPrefix(path, e.Dir+"/") {
			continue
		}
		if !found || len(e.Dir) >= len(best.Dir) {
			best, found = e, true
		}
	}
	return best, found
}

// blockDevice returns the device number of the block device at path (a mount's source), if it is
// one.
func blockDevice(path string) (uint64, bool) {
	if !filepath.IsAbs(path) {
		return 0, false
	}
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, false
	}
	return st.Rdev, true
}

// parseDevNumber parses a device number as sysfs writes it, "MAJOR:MINOR".
func parseDevNumber(s string) (uint64, bool) {
	maj, min, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, false
	}
	return unix.Mkdev(uint32(a), uint32(b)), true
}

// devName is the name in /dev of the block device rdev, as sysfs has it.
func devName(rdev uint64) string {
	if l, err := os.Readlink(sysBlock(rdev)); err == nil {
		return "/dev/" + filepath.Base(l)
	}
	return "block device " + devNumber(rdev)
}

// storeTree reads the store directory's tree, for checks that a path is not in it.
func (m *Manager) storeTree() (*storeTree, error) { return readStoreTree(m.st.Dir()) }

// outsideStore refuses a disk path that reaches the store's own files or directories, under
// whatever name: what says what the path is for ("source", "target") in the error, which wraps
// ErrInvalid.
func (m *Manager) outsideStore(what, path string) error {
	t, err := m.storeTree()
	if err != nil {
		return err
	}
	return t.refuse(what, path)
}
