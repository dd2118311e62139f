package chain

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// storeSnapshot makes a store whose volume vol holds random data, with snapshot vol/s1, and returns
// the store's directory and the path of its first pack.
func storeSnapshot(t *testing.T) (*unit, string, string) {
	t.Helper()
	u := newUnit(t, Options{})
	path := u.disk("vol", 1<<20)
	u.write(path, 0, u.random(1<<20))
	u.snap("vol", "s1")
	dir := u.m.Store().Dir()
	packs, err := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("no pack in %s: %v", dir, err)
	}
	return u, dir, packs[0]
}

// storeContents reads every regular file of the store but its SQLite files (which a read
// transaction may touch), by path.
func storeContents(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() || strings.HasPrefix(e.Name(), "meta.db") {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// refusedInStore checks that err refuses a target in the store.
func refusedInStore(t *testing.T, op, target string, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "inside the store") {
		t.Errorf("%s to %s: %v, want it refused as inside the store", op, target, err)
	}
}

// TestRestoreRefusesStoreFiles: restore and clone refuse every target that reaches the store's own
// files, by their own path or another (a symlink to them or to a directory of the store, a hard
// link, the store directory itself), with or without force, and write nothing; targets beside the
// store, even with a name that begins as the store's, are written.
func TestRestoreRefusesStoreFiles(t *testing.T) {
	u, dir, pack := storeSnapshot(t)
	before := storeContents(t, dir)

	linkDir := filepath.Join(u.dir, "linkdir")
	if err := os.Symlink(filepath.Join(dir, "packs"), linkDir); err != nil {
		t.Fatal(err)
	}
	linkFile := filepath.Join(u.dir, "link.img")
	if err := os.Symlink(pack, linkFile); err != nil {
		t.Fatal(err)
	}
	hardLink := filepath.Join(u.dir, "hard.img")
	if err := os.Link(pack, hardLink); err != nil {
		t.Fatal(err)
	}
	existing := []string{
		pack,
		filepath.Join(dir, "reserve"),
		filepath.Join(dir, "meta.db"),
		filepath.Join(linkDir, filepath.Base(pack)),
		linkFile,
		hardLink,
		filepath.Join(dir, "packs", "..", "packs", filepath.Base(pack)),
	}
	fresh := []string{
		filepath.Join(dir, "new.img"),
		filepath.Join(dir, "packs", "new.img"),
		filepath.Join(linkDir, "new.img"),
	}
	for _, target := range append(append(existing, fresh...), dir) {
		for _, force := range []bool{false, true} {
			st, err := u.m.Restore(u.ctx, "vol/s1", RestoreOptions{To: target, Force: force})
			refusedInStore(t, "restore", target, err)
			if st.ChunksWritten != 0 {
				t.Errorf("refused restore to %s wrote %d chunks", target, st.ChunksWritten)
			}
		}
		_, err := u.m.Clone(u.ctx, "vol/s1", CloneOptions{To: target})
		refusedInStore(t, "clone", target, err)
		_, err = u.m.Clone(u.ctx, "vol/s1", CloneOptions{To: target, Volume: "cl"})
		refusedInStore(t, "clone --volume", target, err)
	}
	for _, target := range fresh {
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refused restore or clone left %s: %v", target, err)
		}
	}
	if err := u.m.outsideStore("source", hardLink); !errors.Is(err, ErrInvalid) ||
		!strings.Contains(err.Error(), "source "+hardLink+" is inside the store "+dir+" (it is "+pack+")") {
		t.Errorf("source that is a hard link to a pack: %v", err)
	}
	after := storeContents(t, dir)
	for p, b := range before {
		if !bytes.Equal(after[p], b) {
			t.Errorf("%s changed", p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared in the store", p)
		}
	}
	u.verify()

	// Beside the store: a directory whose name begins as the store's, and a symlink to it.
	beside := dir + "2"
	if err := os.Mkdir(beside, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.Restore(u.ctx, "vol/s1", RestoreOptions{To: filepath.Join(beside, "r.img")}); err != nil {
		t.Errorf("restore beside the store: %v", err)
	}
	if _, err := u.m.Clone(u.ctx, "vol/s1", CloneOptions{To: filepath.Join(beside, "c.img")}); err != nil {
		t.Errorf("clone beside the store: %v", err)
	}
	if err := os.Symlink(beside, filepath.Join(u.dir, "besidelink")); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.Restore(u.ctx, "vol/s1", RestoreOptions{To: filepath.Join(u.dir, "besidelink", "r.img")}); err != nil {
		t.Errorf("restore through a symlink beside the store: %v", err)
	}
	if err := u.m.outsideStore("source", filepath.Join(beside, "r.img")); err != nil {
		t.Errorf("source beside the store: %v", err)
	}
}

// TestRestoreRefusesStoreThroughBindMount: the store's pack directory, and a pack on its own, bind
// mounted elsewhere are the store's files still.
func TestRestoreRefusesStoreThroughBindMount(t *testing.T) {
	requireRoot(t, "mount", "umount")
	u, dir, pack := storeSnapshot(t)
	before := storeContents(t, dir)

	bindDir := filepath.Join(u.dir, "binddir")
	bindFile := filepath.Join(u.dir, "bindfile.img")
	if err := os.Mkdir(bindDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bindFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", "--bind", filepath.Join(dir, "packs"), bindDir)
	t.Cleanup(func() { exec.Command("umount", bindDir).Run() })
	sh(t, "mount", "--bind", pack, bindFile)
	t.Cleanup(func() { exec.Command("umount", bindFile).Run() })

	for _, target := range []string{filepath.Join(bindDir, filepath.Base(pack)), filepath.Join(bindDir, "new.img"), bindFile} {
		_, err := u.m.Restore(u.ctx, "vol/s1", RestoreOptions{To: target, Force: true})
		refusedInStore(t, "restore", target, err)
		_, err = u.m.Clone(u.ctx, "vol/s1", CloneOptions{To: target})
		refusedInStore(t, "clone", target, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "packs", "new.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused restore or clone left a file in the store: %v", err)
	}
	sh(t, "umount", bindFile)
	sh(t, "umount", bindDir)
	after := storeContents(t, dir)
	for p, b := range before {
		if !bytes.Equal(after[p], b) {
			t.Errorf("%s changed", p)
		}
	}
	u.verify()
}

// fakeStore lays out a store directory in a new temporary directory: packs/ with n empty packs,
// and the metadata and the reserve. It returns the store directory.
func fakeStore(tb testing.TB, n int) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "store")
	if err := os.MkdirAll(filepath.Join(dir, "packs"), 0o700); err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, "packs", fmt.Sprintf("%08d.pack", i)), nil, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	for _, name := range []string{"meta.db", "reserve"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// checkTreeTarget checks what the store's tree says of target, by path (refuse) and, if it exists,
// opened (refuseOpened): refused as inside the store when in is non-empty, with in as the store's
// name for it, accepted otherwise; and that the checks scanned the store's directories scans
// times between them.
func checkTreeTarget(t *testing.T, tree *storeTree, target, in string, scans int) {
	t.Helper()
	tree.scans = 0
	check := func(how string, err error) {
		t.Helper()
		switch {
		case in == "" && err != nil:
			t.Errorf("%s %s: %v, want it accepted", how, target, err)
		case in != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "inside the store") ||
			in != target && !strings.Contains(err.Error(), "(it is "+in+")")):
			t.Errorf("%s %s: %v, want it refused as %s", how, target, err, in)
		}
	}
	check("path", tree.refuse("target", target))
	if f, err := os.Open(target); err == nil {
		check("opened", tree.refuseOpened("target", target, f))
		f.Close()
	}
	if tree.scans != scans {
		t.Errorf("checks of %s scanned the store's directories %d times, want %d", target, tree.scans, scans)
	}
}

// TestStoreTreeStatsNoPack: reading a store's tree stats only the names that may lead to
// directories (directories and symlinks), not each pack; and a target is told apart from the
// packs without stat-ing them unless it may be one under another name (a hard link): a file with
// one name outside the store, on its filesystem, is accepted; a pack by its path or through a
// symlink, and a file that a symlink in the store names, are refused.
func TestStoreTreeStatsNoPack(t *testing.T) {
	const packs = 500
	dir := fakeStore(t, packs)
	root := filepath.Dir(dir)
	pack := filepath.Join(dir, "packs", "00000007.pack")
	outside := filepath.Join(root, "target.img")
	linked := filepath.Join(root, "linked.img") // what the store's packs/linked.pack names
	for _, p := range []string{outside, linked} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "packs", "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("packs", filepath.Join(dir, "packlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(linked, filepath.Join(dir, "packs", "linked.pack")); err != nil {
		t.Fatal(err)
	}
	toPack := filepath.Join(root, "topack.img")
	if err := os.Symlink(pack, toPack); err != nil {
		t.Fatal(err)
	}

	tree, err := readStoreTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	// packs/, packs/sub, packlink and packs/linked.pack; no pack, nor meta.db or reserve.
	if tree.stats != 4 {
		t.Errorf("reading a store of %d packs made %d stats, want 4", packs, tree.stats)
	}
	checkTreeTarget(t, tree, outside, "", 0)
	checkTreeTarget(t, tree, pack, pack, 0)
	checkTreeTarget(t, tree, toPack, pack, 0)
	checkTreeTarget(t, tree, linked, filepath.Join(dir, "packs", "linked.pack"), 0)
	checkTreeTarget(t, tree, filepath.Join(dir, "packs", "new.img"), filepath.Join(dir, "packs", "new.img"), 0)
	checkTreeTarget(t, tree, filepath.Join(dir, "packlink", "sub", "new.img"), filepath.Join(dir, "packs", "sub", "new.img"), 0)

	// A hard link may be a pack: it is looked for among them, once by path and once opened.
	other := filepath.Join(dir, "packs", "00000009.pack")
	hard := filepath.Join(root, "hard.img")
	if err := os.Link(other, hard); err != nil {
		t.Fatal(err)
	}
	checkTreeTarget(t, tree, hard, other, 2)
	checkTreeTarget(t, tree, outside, "", 0)
}

// TestStoreTreeMounts: a pack bind-mounted elsewhere may be a pack under another name (it is the
// root of a mount), and is looked for among them; a file elsewhere bind-mounted onto a name in the
// store is the store's file, and is known without.
func TestStoreTreeMounts(t *testing.T) {
	requireRoot(t, "mount", "umount")
	dir := fakeStore(t, 100)
	root := filepath.Dir(dir)
	pack := filepath.Join(dir, "packs", "00000003.pack")
	bound := filepath.Join(root, "bound.img") // a pack mounted here
	onto := filepath.Join(dir, "packs", "onto.pack")
	mounted := filepath.Join(root, "mounted.img") // mounted onto onto.pack
	for _, p := range []string{bound, onto, mounted} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, "mount", "--bind", pack, bound)
	t.Cleanup(func() { exec.Command("umount", bound).Run() })
	sh(t, "mount", "--bind", mounted, onto)
	t.Cleanup(func() { exec.Command("umount", onto).Run() })

	tree, err := readStoreTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkTreeTarget(t, tree, bound, pack, 2)
	checkTreeTarget(t, tree, mounted, onto, 0)
}

// BenchmarkStoreTreeRefuse is what a restore, clone or volume add costs to check a target against
// a store of 20,000 packs: reading the store's tree, and a target outside the store, on its
// filesystem, checked by path and opened.
func BenchmarkStoreTreeRefuse(b *testing.B) {
	dir := fakeStore(b, 20000)
	target := filepath.Join(filepath.Dir(dir), "target.img")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(target)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for b.Loop() {
		tree, err := readStoreTree(dir)
		if err != nil {
			b.Fatal(err)
		}
		if err := tree.refuse("target", target); err != nil {
			b.Fatal(err)
		}
		if err := tree.refuseOpened("target", target, f); err != nil {
			b.Fatal(err)
		}
	}
}
