package main

// Reliability: damaged stores, a full disk, hostile names and references, permissions.

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/snapfs/snapfs/chain"
	"github.com/snapfs/snapfs/store"
)

// needRoot skips a test that needs root (mounts, loop devices), except in CI (CI=true), where that
// is a failure.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (CI=true: end-to-end tests must run)")
		}
		t.Skip("needs root")
	}
}

// damageRig is a store with two volumes: v (snapshots a and b, which share all but a few chunks)
// and w (snapshot c, no chunk in common with v), and the chunks' places.
type damageRig struct {
	*env
	v, vb, w []byte                     // contents of v/a, v/b and w/c
	chunks   map[store.Hash]store.Chunk // every stored chunk by hash
}

const damageSize = 2 << 20 // 32 chunks of 64 KiB; the last two of v are a hole

func newDamageRig(t *testing.T) *damageRig {
	t.Helper()
	r := &damageRig{env: newEnv(t)}
	r.v = makeImage(t, r.path("v.img"), damageSize)
	clear(r.v[damageSize-2*chunk64K:])
	os.WriteFile(r.path("v.img"), r.v, 0o600)
	r.w = makeImage(t, r.path("w.img"), damageSize)
	r.ok("init")
	r.ok("volume", "add", "v", "--source", r.path("v.img"), "--chunk-size", "64K")
	r.ok("volume", "add", "w", "--source", r.path("w.img"), "--chunk-size", "64K")
	r.ok("snapshot", "create", "v", "--name", "a")
	scribble(t, r.path("v.img"), 5*chunk64K, 100) // chunk 5 differs in b
	r.vb, _ = os.ReadFile(r.path("v.img"))
	r.ok("snapshot", "create", "v", "--name", "b")
	r.ok("snapshot", "create", "w", "--name", "c")
	r.chunks = map[store.Hash]store.Chunk{}
	m, err := chain.Open(context.Background(), r.store, chain.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Store().View(context.Background(), func(tx *store.Tx) error {
		return tx.EachChunk(func(c store.Chunk) error { r.chunks[c.Hash] = c; return nil })
	})
	return r
}

// chunkOf is the stored chunk holding data's chunk idx.
func (r *damageRig) chunkOf(data []byte, idx int) store.Chunk {
	r.t.Helper()
	c, ok := r.chunks[store.Sum(data[idx*chunk64K:(idx+1)*chunk64K])]
	if !ok {
		r.t.Fatalf("chunk %d is not stored", idx)
	}
	return c
}

func (r *damageRig) packPath(c store.Chunk) string {
	return filepath.Join(r.store, "packs", fmt.Sprintf("%010d.pack", c.Pack))
}

// sqlExec changes meta.db behind snapfs's back.
func (r *damageRig) sqlExec(q string, args ...any) {
	r.t.Helper()
	db, err := sql.Open("sqlite3", filepath.Join(r.store, "meta.db"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q, args...); err != nil {
		r.t.Fatal(err)
	}
}

// readCheck reads every chunk of snapshot ref with read (an in-process image, or the image file
// through FUSE) and checks that the chunks in bad fail with an I/O error (EIO or ErrCorrupt) and
// every other chunk reads exactly as want.
func readCheck(t *testing.T, what string, read func(p []byte, off int64) error, want []byte, bad []int) {
	t.Helper()
	buf := make([]byte, chunk64K)
	for idx := 0; idx < len(want)/chunk64K; idx++ {
		err := read(buf, int64(idx*chunk64K))
		if slices.Contains(bad, idx) {
			if err == nil {
				t.Errorf("%s: damaged chunk %d read without an error (same bytes: %v)", what, idx,
					bytes.Equal(buf, want[idx*chunk64K:(idx+1)*chunk64K]))
			} else if !errors.Is(err, syscall.EIO) && !errors.Is(err, chain.ErrCorrupt) {
				t.Errorf("%s: damaged chunk %d: %v, want EIO", what, idx, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: chunk %d: %v", what, idx, err)
		} else if !bytes.Equal(buf, want[idx*chunk64K:(idx+1)*chunk64K]) {
			t.Errorf("%s: chunk %d reads wrong bytes", what, idx)
		}
	}
}

// users lists, per snapshot, the chunk indexes whose stored chunk is one of ids.
func (r *damageRig) users(ids ...int64) map[string][]int {
	bad := map[string][]int{}
	for ref, data := range r.images() {
		for idx := 0; idx < len(data)/chunk64K; idx++ {
			if c, ok := r.chunks[store.Sum(data[idx*chunk64K:(idx+1)*chunk64K])]; ok && slices.Contains(ids, c.ID) {
				bad[ref] = append(bad[ref], idx)
			}
		}
	}
	return bad
}

func (r *damageRig) images() map[string][]byte {
	return map[string][]byte{"v/a": r.v, "v/b": r.vb, "w/c": r.w}
}

// checkDamage checks reads in this process and, when mnt is set, through the mounted tree: the
// damaged chunks of each snapshot (bad) fail with EIO, all else reads right. Then verify must exit 1
// naming each damaged chunk and every snapshot that uses one, and verify of an unharmed snapshot
// must pass.
func (r *damageRig) checkDamage(mnt string, ids []int64, bad map[string][]int) {
	t := r.t
	t.Helper()
	ctx := context.Background()
	m, err := chain.Open(ctx, r.store, chain.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for ref, data := range r.images() {
		im, err := m.OpenImage(ctx, ref)
		if err != nil {
			t.Fatalf("open %s: %v", ref, err)
		}
		readCheck(t, ref, func(p []byte, off int64) error { _, err := im.ReadAt(p, off); return err }, data, bad[ref])
		im.Close()
		if mnt == "" {
			continue
		}
		f, err := os.Open(filepath.Join(mnt, "chains", ref+".img"))
		if err != nil {
			t.Fatalf("open %s through FUSE: %v", ref, err)
		}
		readCheck(t, ref+" through FUSE", func(p []byte, off int64) error { _, err := f.ReadAt(p, off); return err }, data, bad[ref])
		f.Close()
	}
	// A restore or clone of a damaged snapshot fails and says why.
	for ref := range r.images() {
		if len(bad[ref]) == 0 {
			continue
		}
		target := r.path("restore-" + strings.ReplaceAll(ref, "/", "-") + ".img")
		res := r.run("restore", ref, "--to", target)
		checkFailure(t, res, 1, "corrupt chunk", []string{"restore", ref})
		os.Remove(target)
	}
	res := r.run("verify")
	checkFailure(t, res, 1, "fault", []string{"verify"})
	for _, id := range ids {
		if !strings.Contains(res.stdout, fmt.Sprintf("chunk %d ", id)) {
			t.Errorf("verify does not name damaged chunk %d:\n%s", id, res.stdout)
		}
	}
	for ref := range r.images() {
		hit := strings.Contains(res.stdout, " "+ref)
		if hit != (len(bad[ref]) > 0) {
			t.Errorf("verify names %s: %v, want %v:\n%s", ref, hit, len(bad[ref]) > 0, res.stdout)
		}
		if v := r.run("verify", ref); (v.code == 0) != (len(bad[ref]) == 0) {
			t.Errorf("verify %s: %s", ref, v)
		}
	}
}

// TestDamagedStore damages a store in each way a disk or a careless hand can — bits flipped in a
// record's payload or header, a pack truncated or deleted, a chunk row changed — and checks that the
// damaged ranges fail with EIO (in process and through a mounted daemon), never with wrong bytes,
// that everything else reads right and that verify names the damaged chunks and the snapshots
// that use them.
func TestDamagedStore(t *testing.T) {
	needFUSE(t)
	flip := func(path string, off int64) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		f.ReadAt(b, off)
		b[0] ^= 0x10
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(r *damageRig) []int64 // returns the damaged chunks' ids
	}{
		{"payload bit", func(r *damageRig) []int64 {
			c := r.chunkOf(r.v, 3) // in v/a and v/b
			flip(r.packPath(c), c.Offset+64+1000)
			return []int64{c.ID}
		}},
		{"header bit", func(r *damageRig) []int64 {
			c := r.chunkOf(r.vb, 5) // only in v/b
			flip(r.packPath(c), c.Offset+20)
			return []int64{c.ID}
		}},
		{"pack truncated", func(r *damageRig) []int64 {
			var last store.Chunk
			for _, c := range r.chunks {
				if c.Offset > last.Offset {
					last = c
				}
			}
			if err := os.Truncate(r.packPath(last), last.Offset+100); err != nil {
				t.Fatal(err)
			}
			return []int64{last.ID}
		}},
		{"pack deleted", func(r *damageRig) []int64 {
			var ids []int64
			for _, c := range r.chunks {
				ids = append(ids, c.ID)
			}
			os.Remove(r.packPath(r.chunkOf(r.v, 0)))
			return ids // one pack holds everything: only v's hole still reads
		}},
		{"row hash", func(r *damageRig) []int64 {
			c := r.chunkOf(r.w, 7)
			r.sqlExec(`UPDATE chunks SET hash = zeroblob(32) WHERE id = ?`, c.ID)
			return []int64{c.ID}
		}},
		{"row points at another record", func(r *damageRig) []int64 {
			c, other := r.chunkOf(r.w, 8), r.chunkOf(r.v, 9)
			r.sqlExec(`UPDATE chunks SET offset = ? WHERE id = ?`, other.Offset, c.ID)
			return []int64{c.ID}
		}},
		{"row size", func(r *damageRig) []int64 {
			c := r.chunkOf(r.v, 10)
			r.sqlExec(`UPDATE chunks SET size = size - 1 WHERE id = ?`, c.ID)
			return []int64{c.ID}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newDamageRig(t)
			r.t = t
			ids := tc.damage(r)
			bad := r.users(ids...)
			r.checkDamage("", ids, bad)
			mnt := r.mount()
			r.checkDamage(mnt, ids, bad)
		})
	}
}

// TestStoreFullCLI: a store on a 12 MiB filesystem that fills up during a snapshot. The snapshot
// fails with one clear line, nothing else changes, and once the disk shrinks to something that fits
// the next snapshot succeeds.
func TestStoreFullCLI(t *testing.T) {
	needRoot(t)
	e := newEnv(t)
	if err := os.Mkdir(e.store, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", e.store, "tmpfs", 0, "size=12m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(e.store, syscall.MNT_DETACH) })
	disk := e.path("disk.img")
	small := makeImage(t, disk, 4<<20)
	e.ok("init")
	e.ok("volume", "add", "v", "--source", disk)
	e.ok("snapshot", "create", "v", "--name", "first")
	before := e.state()
	makeImage(t, disk, 16<<20)
	t.Logf("full: %s", e.fails(1, "no space left on device", "snapshot", "create", "v", "--name", "big"))
	if after := e.state(); after != before {
		t.Errorf("a snapshot that failed for space changed the store:\n%s\nwas:\n%s", after, before)
	}
	e.ok("verify")
	e.ok("restore", "v/first", "--to", e.path("first.img"))
	if got, _ := os.ReadFile(e.path("first.img")); !bytes.Equal(got, small) {
		t.Error("first snapshot reads wrong after the failure")
	}
	// Space comes back when the disk shrinks to something that fits.
	fits := makeImage(t, disk, 2<<20)
	e.ok("snapshot", "create", "v", "--name", "fits")
	e.ok("verify")
	e.ok("restore", "v/fits", "--to", e.path("fits.img"))
	if got, _ := os.ReadFile(e.path("fits.img")); !bytes.Equal(got, fits) {
		t.Error("the snapshot after the failure reads wrong")
	}
	// With not one block free, deleting a snapshot still works: it is how the store gets room back.
	fillFilesystem(t, filepath.Join(e.store, "filler"))
	availBefore := availableBytes(t, e.store)
	e.ok("snapshot", "delete", "v/first")
	if avail := availableBytes(t, e.store); avail < availBefore+2<<20 {
		t.Errorf("delete on a full store: %d bytes free after, %d before; want the snapshot's 4 MiB back", avail, availBefore)
	}
	e.ok("verify")
	os.Remove(e.path("fits.img"))
	e.ok("restore", "v/fits", "--to", e.path("fits.img"))
	if got, _ := os.ReadFile(e.path("fits.img")); !bytes.Equal(got, fits) {
		t.Error("the remaining snapshot reads wrong after a delete on a full store")
	}
}

// fillFilesystem fills the filesystem under path to its last block with dd, which stops at ENOSPC:
// by megabytes, then by blocks.
func fillFilesystem(t *testing.T, path string) {
	t.Helper()
	exec.Command("dd", "if=/dev/zero", "of="+path, "bs=1M", "status=none").Run()
	exec.Command("dd", "if=/dev/zero", "of="+path, "bs=4k", "oflag=append", "conv=notrunc", "status=none").Run()
	if availableBytes(t, filepath.Dir(path)) >= 4096 {
		t.Fatalf("%s: room left after filling it", filepath.Dir(path))
	}
}

// availableBytes is what the filesystem under dir has free for unprivileged writers.
func availableBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return int64(fs.Bavail) * fs.Bsize
}

// hostileNames are names with path tricks; no command, REF or ctl write may accept one.
var hostileNames = []string{"..", ".", "../x", "a/..", "a/b", "/a", "a\x00b", "\xff\xfe", "a\xc0\xafb",
	strings.Repeat("n", 129), strings.Repeat("n", 4096), ".hidden", "a b", "a\nb", "-"}

// TestHostileNames: path tricks in names and references are refused everywhere — on the command
// line, through a mounted daemon and in a ctl write — and create nothing.
func TestHostileNames(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	f := newFixture(t)
	before := f.state()
	var refs []string
	for _, n := range hostileNames {
		if n == "-" { // a valid name; only checked as a whole REF below
			continue
		}
		refs = append(refs, "v1/"+n, n+"/a", n)
	}
	refs = append(refs, "v1//a", "v1/a/", "/v1/a", "v1/a/../b", "./v1/a", "-1", "0x1", "1e3", "+1", "9223372036854775808")
	check := func(how string) {
		t.Helper()
		for _, ref := range refs {
			if strings.ContainsRune(ref, 0) {
				continue // no argument can hold a NUL
			}
			for j, args := range [][]string{{"snapshot", "delete", ref}, {"clone", ref, "--to", f.path("c.img")},
				{"snapshot", "show", ref}, {"restore", ref, "--to", f.path("r.img")}, {"verify", ref}} {
				if j >= 2 && how != "without a daemon" {
					break // through the daemon: the commands that change the store
				}
				r := f.run(args...)
				if r.code == 0 || !strings.Contains(r.stderr, "invalid argument") && !strings.Contains(r.stderr, "not found") &&
					!strings.Contains(r.stderr, "flag provided but not defined") {
					t.Errorf("%s: snapfs %q: %s", how, args, r)
				}
			}
		}
		for _, n := range hostileNames {
			if strings.ContainsRune(n, 0) || n == "-" {
				continue
			}
			for _, args := range [][]string{{"snapshot", "create", "v1", "--name", n}, {"volume", "add", n, "--source", f.img},
				{"clone", "v1/a", "--to", f.path("c.img"), "--volume", n}} {
				if r := f.run(args...); r.code == 0 || !strings.Contains(r.stderr, "invalid argument") && !strings.Contains(r.stderr, "longer than") {
					t.Errorf("%s: snapfs %q: %s", how, args, r)
				}
			}
		}
		if after := f.state(); after != before {
			t.Errorf("%s: hostile names changed the store:\n%s\nwas:\n%s", how, after, before)
		}
		for _, p := range []string{"r.img", "c.img"} {
			if _, err := os.Stat(f.path(p)); err == nil {
				t.Errorf("%s: a refused command wrote %s", how, p)
			}
		}
	}
	check("without a daemon")
	mnt := f.mount()
	check("through the daemon")

	ctl := filepath.Join(mnt, "volumes", "v1", "ctl")
	for _, n := range hostileNames {
		if n == "-" {
			continue
		}
		fh, err := os.OpenFile(ctl, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fh.Write([]byte("snapshot " + n + "\n"))
		fh.Close()
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("ctl: snapshot %q: %v, want EINVAL", n, err)
		}
	}
	if after := f.state(); after != before {
		t.Errorf("ctl writes with hostile names changed the store:\n%s\nwas:\n%s", after, before)
	}
	if got := listDir(t, filepath.Join(mnt, "chains", "v1")); !slices.Equal(got, []string{"a.img", "b.img", "info"}) {
		t.Errorf("chains/v1 after hostile ctl writes: %v", got)
	}
}

// TestStorePermissions: under a umask that grants everyone everything, the store directory is
// 0700 and every file in it 0600 (meta.db and its -wal and -shm, packs, lock, reserve, daemon.log,
// daemon.pid, the socket); and with --allow-other another user may read images but gets EACCES
// on ctl.
func TestStorePermissions(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	img := e.path("disk.img")
	makeImage(t, img, 1<<20)
	open := func(args ...string) { // snapfs under umask 000
		t.Helper()
		cmd := exec.Command("sh", append([]string{"-c", `umask 000; exec "$@"`, "sh", snapfsBin, "--store", e.store}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("snapfs %q: %v\n%s", args, err, out)
		}
	}
	open("init")
	open("volume", "add", "v", "--source", img)
	open("snapshot", "create", "v", "--name", "a")
	open("verify")
	mnt := e.path("mnt")
	os.Mkdir(mnt, 0o755)
	open("mount", "--allow-other", mnt)
	t.Cleanup(func() { e.unmount(mnt) })
	open("snapshot", "create", "v", "--name", "b") // through the daemon
	open("gc")

	check := func(must ...string) {
		t.Helper()
		seen := map[string]bool{}
		filepath.Walk(e.store, func(path string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(e.store, path)
			seen[filepath.Base(path)] = true
			want := os.FileMode(0o600)
			if fi.IsDir() {
				want = 0o700
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v, want %v", rel, fi.Mode().Perm(), want)
			}
			return nil
		})
		for _, name := range must {
			if !seen[name] {
				t.Errorf("no %s to check", name)
			}
		}
	}
	check("meta.db", "meta.db-wal", "meta.db-shm", "lock", "daemon.log", "daemon.pid", "daemon.sock", "reserve", "0000000001.pack")

	// Another user: images readable with --allow-other, ctl not writable (EACCES), nor readable.
	const nobody = 65534
	for _, dir := range []string{e.dir, filepath.Dir(e.dir)} { // t.TempDir's are 0700
		os.Chmod(dir, 0o755)
	}
	asNobody := func(script string) (string, error) {
		cmd := exec.Command("sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := asNobody("cat " + filepath.Join(mnt, "chains", "v", "a.img") + " > /dev/null"); err != nil {
		t.Errorf("another user reading an image with --allow-other: %v %s", err, out)
	}
	ctl := filepath.Join(mnt, "volumes", "v", "ctl")
	for _, script := range []string{"echo snapshot x > " + ctl, "echo snapshot x >> " + ctl, "cat " + ctl} {
		if out, err := asNobody(script); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("another user: %s: %v %s, want permission denied", script, err, out)
		}
	}
	if out, err := asNobody("ls " + e.store); err == nil {
		t.Errorf("another user lists the store: %s", out)
	}
	if got := listDir(t, filepath.Join(mnt, "chains", "v")); slices.Contains(got, "x.img") {
		t.Error("another user's ctl write made a snapshot")
	}
	e.unmount(mnt)
	check("meta.db", "lock", "daemon.log", "0000000001.pack")
}

// TestVerifyProgressAndScope: verify shows a progress bar on a terminal (and none otherwise), and
// verify REF re-hashes only the chunks REF reads.
func TestVerifyProgressAndScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	makeImage(t, e.path("v.img"), 16<<20)
	makeImage(t, e.path("w.img"), 2<<20)
	e.ok("volume", "add", "v", "--source", e.path("v.img"), "--chunk-size", "64K")
	e.ok("volume", "add", "w", "--source", e.path("w.img"), "--chunk-size", "64K")
	e.ok("snapshot", "create", "v", "--name", "a")
	e.ok("snapshot", "create", "w", "--name", "c")
	if out := e.ok("verify"); !strings.Contains(out, "verified 288 chunks (18.0 MiB)") {
		t.Errorf("verify: %q", out)
	}
	if out := e.ok("verify", "w/c"); !strings.Contains(out, "verified 32 chunks (2.0 MiB)") {
		t.Errorf("verify w/c: %q", out)
	}
	if r := e.run("verify"); strings.Contains(r.stderr, "%") {
		t.Errorf("verify draws a progress bar when stderr is not a terminal: %q", r.stderr)
	}
	if _, err := exec.LookPath("script"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no script(1) to run verify on a terminal")
		}
		t.Skip("no script(1) to run verify on a terminal")
	}
	// script(1) runs verify on a pseudo-terminal.
	out, err := exec.Command("script", "-qec", fmt.Sprintf("%s --store %s verify", snapfsBin, e.store), "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("verify on a terminal: %v\n%q", err, out)
	}
	if s := string(out); !strings.Contains(s, "\rverify") || !strings.Contains(s, "%") || !strings.Contains(s, "verified 288 chunks") {
		t.Errorf("verify on a terminal shows no progress bar: %q", s)
	}
}

// TestStoreFullAnywhere runs out of space at 13 points of a snapshot — in a pack append, its
// fdatasync, the metadata's WAL, the commit — by giving the store's tmpfs a little more room each
// time. Each failure must say "no space left", leave the store as it was (verify passes, the first
// snapshot reads right), and a snapshot that fits must succeed right after.
func TestStoreFullAnywhere(t *testing.T) {
	needRoot(t)
	t.Parallel()
	e := newEnv(t)
	if err := os.Mkdir(e.store, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", e.store, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(e.store, syscall.MNT_DETACH) })
	resize := func(bytes int64) {
		t.Helper()
		if err := syscall.Mount("tmpfs", e.store, "tmpfs", syscall.MS_REMOUNT, fmt.Sprintf("size=%dk", bytes>>10)); err != nil {
			t.Fatalf("remount with %d bytes: %v", bytes, err)
		}
	}
	used := func() int64 {
		var st syscall.Statfs_t
		syscall.Statfs(e.store, &st)
		return int64(st.Blocks-st.Bfree) * st.Bsize
	}
	disk := e.path("disk.img")
	first := makeImage(t, disk, 2<<20)
	e.ok("init")
	e.ok("volume", "add", "v", "--source", disk, "--chunk-size", "64K")
	e.ok("snapshot", "create", "v", "--name", "first")
	before := e.state()
	failed, seen := 0, map[string]bool{}
	for room := int64(0); room <= 6<<20; room += 512 << 10 {
		big := makeImage(t, disk, 4<<20)
		resize(used() + room)
		r := e.run("snapshot", "create", "v", "--name", "big")
		resize(64 << 20)
		if r.code == 0 {
			// It fitted: it must read right; drop it for the next round.
			e.ok("restore", "v/big", "--to", e.path("big.img"))
			if got, _ := os.ReadFile(e.path("big.img")); !bytes.Equal(got, big) {
				t.Fatalf("room %d: the snapshot that fitted reads wrong", room)
			}
			os.Remove(e.path("big.img"))
			e.ok("snapshot", "delete", "v/big")
			e.ok("gc")
			continue
		}
		failed++
		checkFailure(t, r, 1, "no space left", []string{"snapshot", "create", "v", "--name", "big"})
		if !seen[r.stderr] {
			seen[r.stderr] = true
			t.Logf("room %d: %s", room, strings.TrimSpace(r.stderr))
		}
		if after := e.state(); after != before {
			t.Fatalf("room %d: a snapshot that failed for space changed the store:\n%s\nwas:\n%s", room, after, before)
		}
		e.ok("verify")
		e.ok("restore", "v/first", "--to", e.path("first.img"), "--force")
		if got, _ := os.ReadFile(e.path("first.img")); !bytes.Equal(got, first) {
			t.Fatalf("room %d: first snapshot reads wrong after the failure", room)
		}
		e.ok("gc")
	}
	t.Logf("%d of 13 snapshots ran out of space", failed)
	if failed == 0 {
		t.Error("no snapshot ran out of space")
	}
	// Space is back: the next snapshot succeeds.
	e.ok("snapshot", "create", "v", "--name", "last")
	e.ok("verify")
}
