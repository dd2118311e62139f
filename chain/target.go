package chain

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A disk that snapfs writes (a restore's or a clone's target) or reads as a volume must not be one
// of the store's own files: a restore onto a pack cuts it to the snapshot's size, and every chunk
// stored in it is lost; one onto the reserve or the metadata breaks the store; a clone leaves a file
// in the store that nothing accounts for. A path can reach the store's files under other names
// (symlinks, bind mounts, hard links), so they are compared by identity (device and inode), not
// by name alone.

// fileID is the identity of a file or directory.
type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{uint64(st.Dev), st.Ino} }

// storeTree is what a store directory holds, by identity: the directory itself and the directories
// in it (see maxStoreDepth), found by following symlinks as opening a path would.
type storeTree struct {
	dir  string            // the store directory, absolute
	dirs map[fileID]string // directories: their path under dir
	devs map[uint64]bool   // the devices those directories are on
}

// readStoreTree finds the directories of the store in dir.
func readStoreTree(dir string) (*storeTree, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store directory %s: %w", dir, err)
	}
	t := &storeTree{dir: abs, dirs: map[fileID]string{}, devs: map[uint64]bool{}}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return nil, fmt.Errorf("store directory %s: %w", abs, err)
	}
	t.addDir(abs, &st, 0)
	return t, nil
}

// maxStoreDepth is how deep under the store directory readStoreTree looks: the store keeps its
// files one level down (packs/); deeper is something else mounted or linked there.
const maxStoreDepth = 2

// addDir records the directory path, with identity st, depth levels under the store directory, and
// the directories in it.
func (t *storeTree) addDir(path string, st *unix.Stat_t, depth int) {
	if _, seen := t.dirs[idOf(st)]; seen {
		return // a symlink back up the tree
	}
	t.dirs[idOf(st)] = path
	t.devs[uint64(st.Dev)] = true
	if depth == maxStoreDepth {
		return
	}
	t.eachFile(path, func(p string, st *unix.Stat_t) bool {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			t.addDir(p, st, depth+1)
		}
		return true
	})
}

// eachFile calls fn with each entry of directory dir and its identity (symlinks followed) until fn
// returns false, and reports whether fn stopped it. Entries that vanish meanwhile are skipped.
func (t *storeTree) eachFile(dir string, fn func(path string, st *unix.Stat_t) bool) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			continue
		}
		if !fn(p, &st) {
			return true
		}
	}
	return false
}

// fileNamed returns the path in the store of a file whose identity is id, or "". Only a file on a
// device the store's directories are on can be one (a hard link, or a file bind-mounted elsewhere).
func (t *storeTree) fileNamed(id fileID) string {
	if !t.devs[id.dev] {
		return ""
	}
	if p, ok := t.dirs[id]; ok {
		return p
	}
	var found string
	for _, dir := range t.dirs {
		stopped := t.eachFile(dir, func(p string, st *unix.Stat_t) bool {
			if idOf(st) == id {
				found = p
			}
			return found == ""
		})
		if stopped {
			break
		}
	}
	return found
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
		if p := t.fileNamed(idOf(&st)); p != "" {
			return p, nil
		}
	}
	// The directories that hold it, as the kernel finds them: with the symlinks in the path
	// resolved, each lexical parent is its real parent, and a directory bind-mounted from the
	// store has the identity of the one in the store.
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", nil // no such directory: nothing can be written there
	}
	rel := filepath.Base(abs)
	for dir := parent; ; dir = filepath.Dir(dir) {
		if unix.Stat(dir, &st) == nil {
			if p, ok := t.dirs[idOf(&st)]; ok {
				return filepath.Join(p, rel), nil
			}
		}
		if dir == filepath.Dir(dir) {
			return "", nil
		}
		rel = filepath.Join(filepath.Base(dir), rel)
	}
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

// refuseOpened returns an error when the open file f (at path) is one of the store's files: a path
// checked by refuse may have come to name another file before it was opened.
func (t *storeTree) refuseOpened(what, path string, f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if p := t.fileNamed(idOf(&st)); p != "" {
		return t.refusal(what, path, p)
	}
	return nil
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
