package fs_test

// End-to-end tests: stores are set up through the chain API, then served by the snapfs binary's
// mount daemon (a separate process: serving a mount from the test process itself can deadlock) and
// read through the kernel with ordinary tools.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snapfs/snapfs/chain"
)

const mib = 1 << 20

// treeFixture is a store with volume "disk" (snapshots s1, s3 and s4 left after s2, in the middle,
// was deleted) and volume "blank" (never snapshotted), mounted.
type treeFixture struct {
	mnt   string
	store *store
	snaps map[string]chain.Snapshot // by name, as the engine lists them
}

func newTreeFixture(t *testing.T) *treeFixture {
	s := newStore(t)
	d := newDisk(t, filepath.Dir(s.dir), "disk.img", 32*mib)
	blank := newDisk(t, filepath.Dir(s.dir), "blank.img", 4*mib)
	s.addVolume("disk", d.path)
	s.addVolume("blank", blank.path)
	d.scribble(1*mib, 2*mib)
	d.scribble(10*mib, mib/2)
	s.snapshot("disk", "s1", d)
	d.scribble(2*mib, mib/2)
	d.scribble(20*mib, mib)
	s.snapshot("disk", "s2", d)
	d.scribble(5*mib, mib)
	d.scribble(2*mib+12345, 777) // not chunk-aligned
	s.snapshot("disk", "s3", d)
	s.delete("disk/s2")
	d.scribble(30*mib, mib)
	s.snapshot("disk", "s4", d)
	list, err := s.m.Snapshots(context.Background(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	f := &treeFixture{store: s, snaps: map[string]chain.Snapshot{}}
	for _, snap := range list {
		f.snaps[snap.Name] = snap
	}
	s.close()
	f.mnt = mountStore(t, s.dir)
	return f
}

func (f *treeFixture) path(parts ...string) string {
	return filepath.Join(append([]string{f.mnt}, parts...)...)
}

func TestTree(t *testing.T) {
	needFUSE(t, "ls", "dd", "cp", "getfattr")
	f := newTreeFixture(t)
	t.Run("ls", f.testLs)
	t.Run("info", f.testInfo)
	t.Run("sha256", f.testSha256)
	t.Run("dd", f.testDD)
	t.Run("sparse", f.testSparse)
	t.Run("xattr", f.testXattr)
	t.Run("concurrent", f.testConcurrent)
	t.Run("readonly", f.testReadOnly)
	t.Run("statfs", f.testStatfs)
}

// testStatfs: statfs of the mount, and of any file in it, gives a block size and the longest name.
func (f *treeFixture) testStatfs(t *testing.T) {
	for _, p := range []string{f.mnt, f.path("chains", "disk", "s1.img"), f.path("volumes", "disk", "ctl")} {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			t.Fatalf("statfs %s: %v", p, err)
		}
		if st.Bsize != 4096 || st.Frsize != 4096 || st.Namelen != 255 {
			t.Errorf("statfs %s: block size %d, fragment size %d, longest name %d; want 4096, 4096, 255",
				p, st.Bsize, st.Frsize, st.Namelen)
		}
	}
}

func (f *treeFixture) testLs(t *testing.T) {
	ls := func(dir string) []string {
		out, err := exec.Command("ls", dir).Output()
		if err != nil {
			t.Fatalf("ls %s: %v", dir, err)
		}
		return strings.Fields(string(out))
	}
	for dir, want := range map[string][]string{
		f.mnt:                      {"chains", "volumes"},
		f.path("volumes"):          {"blank", "disk"},
		f.path("chains"):           {"disk"},
		f.path("volumes", "disk"):  {"ctl", "info", "status"},
		f.path("volumes", "blank"): {"ctl", "info", "status"},
		f.path("chains", "disk"):   {"info", "s1.img", "s3.img", "s4.img"},
	} {
		if got := ls(dir); !slices.Equal(got, want) {
			t.Errorf("ls %s = %q, want %q", dir, got, want)
		}
	}
	out, err := exec.Command("ls", "-ln", "--time-style=+%s", f.path("chains", "disk")).Output()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 7 || !strings.HasSuffix(fields[6], ".img") {
			continue
		}
		snap := f.snaps[strings.TrimSuffix(fields[6], ".img")]
		want := fmt.Sprintf("-r--r--r-- 1 %d %d %d %d", os.Geteuid(), os.Getegid(), snap.Size, snap.Created.Unix())
		if got := strings.Join(fields[:6], " "); got != want {
			t.Errorf("ls -l: %q, want %q", line, want)
		}
		seen++
	}
	if seen != 3 {
		t.Errorf("ls -l listed %d images, want 3:\n%s", seen, out)
	}
	for _, name := range []string{"s2.img", "nope.img", ".img", "info.img", "s1"} {
		if _, err := os.Stat(f.path("chains", "disk", name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat chains/disk/%s: %v, want not found", name, err)
		}
	}
}

func (f *treeFixture) testInfo(t *testing.T) {
	read := func(parts ...string) string {
		b, err := os.ReadFile(f.path(parts...))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	wantVol := fmt.Sprintf("name: disk\nsource: %s\nkind: data\ninstance: \nsize: %d\nchunk_size: %d\nchain: disk\n",
		filepath.Join(filepath.Dir(f.store.dir), "disk.img"), 32*mib, chain.DefaultChunkSize)
	if got := read("volumes", "disk", "info"); got != wantVol {
		t.Errorf("volumes/disk/info =\n%s\nwant\n%s", got, wantVol)
	}
	if got := read("volumes", "blank", "info"); !strings.Contains(got, "\nchain: \n") {
		t.Errorf("volumes/blank/info has a chain:\n%s", got)
	}
	info := read("chains", "disk", "info")
	for _, want := range []string{"name: disk\n", "region: test\n", fmt.Sprintf("capacity: %d\n", 32*mib),
		"snapshots: 3\n", "source: " + filepath.Join(filepath.Dir(f.store.dir), "disk.img") + "\n"} {
		if !strings.Contains(info, want) {
			t.Errorf("chains/disk/info lacks %q:\n%s", want, info)
		}
	}
	if !regexp.MustCompile(`(?m)^stored_bytes: [1-9][0-9]*$`).MatchString(info) {
		t.Errorf("chains/disk/info: no stored_bytes:\n%s", info)
	}
	if got := read("volumes", "disk", "status"); got != "idle\n" {
		t.Errorf("status = %q, want idle", got)
	}
	st, err := os.Stat(f.path("volumes", "disk", "info"))
	if err != nil || st.Size() != int64(len(wantVol)) {
		t.Errorf("stat info: size %v (%v), want %d", st.Size(), err, len(wantVol))
	}
}

func (f *treeFixture) testSha256(t *testing.T) {
	for ref, want := range f.store.sums {
		name := strings.TrimPrefix(ref, "disk/")
		if got := sha256File(t, f.path("chains", "disk", name+".img")); got != want {
			t.Errorf("sha256 of %s.img = %s, want %s (the source when snapshotted)", name, got, want)
		}
	}
	if len(f.store.sums) != 3 {
		t.Fatalf("%d snapshots, want 3", len(f.store.sums))
	}
}

// testDD copies images with dd, through the page cache and past it (iflag=direct: the kernel sends
// each read to the daemon, as a one-off copy of a large image that should not fill the cache does).
func (f *treeFixture) testDD(t *testing.T) {
	for _, c := range []struct {
		name, snap string
		args       []string
	}{
		{"buffered", "s3", []string{"bs=1M"}},
		{"direct", "s3", []string{"bs=4M", "iflag=direct"}},
		{"direct small blocks", "s4", []string{"bs=64k", "iflag=direct"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "restored.img")
			args := append([]string{"if=" + f.path("chains", "disk", c.snap+".img"), "of=" + out, "status=none"}, c.args...)
			if b, err := exec.Command("dd", args...).CombinedOutput(); err != nil {
				t.Fatalf("dd %s: %v\n%s", strings.Join(c.args, " "), err, b)
			}
			if got, want := sha256File(t, out), f.store.sums["disk/"+c.snap]; got != want {
				t.Errorf("dd %s copy of %s.img: sha256 %s, want %s", strings.Join(c.args, " "), c.snap, got, want)
			}
		})
	}
}

func (f *treeFixture) testSparse(t *testing.T) {
	img := f.path("chains", "disk", "s1.img")
	fd, err := unix.Open(img, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{0, unix.SEEK_DATA, 1 * mib},
		{0, unix.SEEK_HOLE, 0},
		{1 * mib, unix.SEEK_HOLE, 3 * mib},
		{3 * mib, unix.SEEK_DATA, 10 * mib},
		{10*mib + 5, unix.SEEK_DATA, 10*mib + 5},
		{10 * mib, unix.SEEK_HOLE, 10*mib + mib/2},
		{11 * mib, unix.SEEK_HOLE, 11 * mib},
	} {
		if got, err := unix.Seek(fd, c.off, c.whence); err != nil || got != c.want {
			t.Errorf("lseek(%d, whence %d) = %d, %v; want %d", c.off, c.whence, got, err, c.want)
		}
	}
	if _, err := unix.Seek(fd, 11*mib, unix.SEEK_DATA); !errors.Is(err, unix.ENXIO) {
		t.Errorf("lseek(SEEK_DATA) after the last data: %v, want ENXIO", err)
	}
	if _, err := unix.Seek(fd, 32*mib, unix.SEEK_HOLE); !errors.Is(err, unix.ENXIO) {
		t.Errorf("lseek(SEEK_HOLE) at the end: %v, want ENXIO", err)
	}

	// The image's blocks are its data's, as a sparse file's: 1-3 MiB and 10-10.5 MiB.
	var ist unix.Stat_t
	if err := unix.Stat(img, &ist); err != nil {
		t.Fatal(err)
	}
	if ist.Blocks*512 != 5*mib/2 {
		t.Errorf("s1.img: %d blocks (%d bytes), want the %d bytes of its data", ist.Blocks, ist.Blocks*512, 5*mib/2)
	}
	if out, err := exec.Command("du", "-B1", img).Output(); err != nil || !strings.HasPrefix(string(out), strconv.Itoa(5*mib/2)+"\t") {
		t.Errorf("du -B1 s1.img: %q, %v; want %d", out, err, 5*mib/2)
	}

	out := filepath.Join(t.TempDir(), "sparse.img")
	if b, err := exec.Command("cp", "--sparse=always", img, out).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, b)
	}
	var st unix.Stat_t
	if err := unix.Stat(out, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 32*mib || st.Blocks*512 > 4*mib {
		t.Errorf("cp --sparse=always: size %d, %d bytes allocated; want %d, at most 4 MiB", st.Size, st.Blocks*512, 32*mib)
	}
	if got, want := sha256File(t, out), f.store.sums["disk/s1"]; got != want {
		t.Errorf("sparse copy: sha256 %s, want %s", got, want)
	}
}

func (f *treeFixture) testXattr(t *testing.T) {
	for name, snap := range f.snaps {
		img := f.path("chains", "disk", name+".img")
		out, err := exec.Command("getfattr", "-d", "-m", "-", "--absolute-names", img).CombinedOutput()
		if err != nil {
			t.Fatalf("getfattr: %v\n%s", err, out)
		}
		got := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				got[k] = strings.Trim(v, `"`)
			}
		}
		want := map[string]string{
			"user.snapfs.id":           strconv.FormatInt(snap.ID, 10),
			"user.snapfs.created":      snap.Created.UTC().Format(time.RFC3339),
			"user.snapfs.unique_bytes": strconv.FormatInt(snap.UniqueBytes, 10),
			"user.snapfs.parent":       strconv.FormatInt(snap.Parent, 10),
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("getfattr %s = %v, want %v", name, got, want)
		}
	}
	if p := f.snaps["s3"].Parent; p != f.snaps["s1"].ID {
		t.Errorf("s3's parent is %d, want s1 (%d): s2 was deleted", p, f.snaps["s1"].ID)
	}
	buf := make([]byte, 64)
	if _, err := unix.Getxattr(f.path("chains", "disk", "s1.img"), "user.snapfs.nope", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr of a missing attribute: %v, want ENODATA", err)
	}
}

// testConcurrent reads one image from several goroutines at once, through one shared descriptor and
// through descriptors of their own, each in its own order, and checks every copy.
func (f *treeFixture) testConcurrent(t *testing.T) {
	img := f.path("chains", "disk", "s4.img")
	want := f.store.sums["disk/s4"]
	shared, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	const readers = 8
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := shared
			if i%2 == 1 {
				own, err := os.Open(img)
				if err != nil {
					errs <- err
					return
				}
				defer own.Close()
				r = own
			}
			if got, err := hashShuffled(r, 32*mib, int64(i)); err != nil {
				errs <- err
			} else if got != want {
				errs <- fmt.Errorf("reader %d: sha256 %s, want %s", i, got, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// hashShuffled reads size bytes of r in 256 KiB blocks in a random order, and hashes them in order.
func hashShuffled(r io.ReaderAt, size, seed int64) (string, error) {
	const block = 256 << 10
	buf := make([]byte, size)
	order := rand.New(rand.NewPCG(uint64(seed), 1)).Perm(int(size / block))
	for _, b := range order {
		off := int64(b) * block
		if _, err := r.ReadAt(buf[off:off+block], off); err != nil {
			return "", fmt.Errorf("read at %d: %w", off, err)
		}
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:]), nil
}

func (f *treeFixture) testReadOnly(t *testing.T) {
	img := f.path("chains", "disk", "s1.img")
	checks := map[string]error{
		"create in root":   os.WriteFile(f.path("new"), nil, 0o644),
		"create in chain":  os.WriteFile(f.path("chains", "disk", "new.img"), nil, 0o644),
		"mkdir":            os.Mkdir(f.path("chains", "new"), 0o755),
		"write image":      openWrite(img),
		"truncate image":   os.Truncate(img, 0),
		"unlink image":     os.Remove(img),
		"rmdir chain":      os.Remove(f.path("chains", "disk")),
		"rename image":     os.Rename(img, f.path("chains", "disk", "x.img")),
		"chmod image":      os.Chmod(img, 0o666),
		"utimes image":     os.Chtimes(img, time.Now(), time.Now()),
		"symlink":          os.Symlink("x", f.path("chains", "disk", "link")),
		"link":             os.Link(img, f.path("chains", "disk", "hard.img")),
		"setxattr":         unix.Setxattr(img, "user.snapfs.id", []byte("9"), 0),
		"removexattr":      unix.Removexattr(img, "user.snapfs.id"),
		"write info":       openWrite(f.path("volumes", "disk", "info")),
		"write status":     openWrite(f.path("volumes", "disk", "status")),
		"unlink ctl":       os.Remove(f.path("volumes", "disk", "ctl")),
		"rename volume":    os.Rename(f.path("volumes", "disk"), f.path("volumes", "disk2")),
		"create in volume": os.WriteFile(f.path("volumes", "disk", "new"), nil, 0o644),
	}
	for what, err := range checks {
		if !isErrno(err, syscall.EROFS, syscall.EPERM) {
			t.Errorf("%s: %v, want EROFS or EPERM", what, err)
		}
	}
	if got := sha256File(t, img); got != f.store.sums["disk/s1"] {
		t.Errorf("s1.img changed")
	}
}

// openWrite opens path for writing (without creating or truncating it).
func openWrite(path string) error {
	fd, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err == nil {
		fd.Close()
	}
	return err
}

// writeCtl writes a command to a ctl file the way `echo CMD > ctl` does.
func writeCtl(ctl, cmd string) error {
	return os.WriteFile(ctl, []byte(cmd+"\n"), 0o644)
}

// readStatus reads a status file's line.
func readStatus(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), "\n") || strings.Count(string(b), "\n") != 1 {
		t.Errorf("status %q: want one line", b)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// waitStatus polls a status file until it matches done, or says that the snapshot name failed
// (any failure when name is "").
func waitStatus(t *testing.T, path string, done *regexp.Regexp, name string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s := readStatus(t, path)
		if done.MatchString(s) {
			return s
		}
		if strings.HasPrefix(s, "failed "+name) || time.Now().After(deadline) {
			t.Fatalf("status %q, waiting for %s", s, done)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var progressRE = regexp.MustCompile(`^creating \S+ \d{1,3}% \d+/\d+ MiB \d+ MiB/s$`)

func TestCtlSnapshot(t *testing.T) {
	needFUSE(t)
	s := newStore(t)
	d := newDisk(t, filepath.Dir(s.dir), "vm.img", 64*mib)
	d.scribble(0, 64*mib)
	s.addVolume("vm", d.path)
	s.close()
	mnt := mountStore(t, s.dir)
	ctl := filepath.Join(mnt, "volumes", "vm", "ctl")
	status := filepath.Join(mnt, "volumes", "vm", "status")
	images := filepath.Join(mnt, "chains", "vm")

	if _, err := os.Stat(images); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("chains/vm before the first snapshot: %v", err)
	}
	if err := writeCtl(ctl, "snapshot first"); err != nil {
		t.Fatalf("snapshot first: %v", err)
	}
	waitStatus(t, status, regexp.MustCompile(`^done first$`), "first:")
	if got, want := sha256File(t, filepath.Join(images, "first.img")), sha256File(t, d.path); got != want {
		t.Errorf("first.img: sha256 %s, want %s", got, want)
	}

	// A second command while a snapshot runs is refused, and status says why for a moment. The whole
	// disk changes, so that "second" has 64 MiB to hash, compress and store: "third" comes while it
	// runs unless the machine stalls the test for that long, which is logged rather than failed.
	d.scribble(0, 64*mib)
	wantSum := sha256File(t, d.path)
	if err := writeCtl(ctl, "snapshot second"); err != nil {
		t.Fatalf("snapshot second: %v", err)
	}
	if st := readStatus(t, status); !progressRE.MatchString(st) && st != "done second" {
		t.Errorf("status while creating: %q", st)
	}
	err := writeCtl(ctl, "snapshot third")
	st := readStatus(t, status)
	if err == nil {
		t.Logf("snapshot third was accepted: second had already finished (status %q)", st)
		waitStatus(t, status, regexp.MustCompile(`^done third$`), "third:")
		if err := os.Remove(filepath.Join(images, "third.img")); !errors.Is(err, syscall.EROFS) {
			t.Errorf("remove third.img: %v, want EROFS", err)
		}
	} else {
		if !errors.Is(err, syscall.EINVAL) || !strings.HasPrefix(st, "failed third: ") {
			t.Errorf("snapshot third while second runs: %v, status %q; want EINVAL, failed third: …", err, st)
		}
		waitStatus(t, status, regexp.MustCompile(`^done second$`), "second:")
		if _, err := os.Stat(filepath.Join(images, "third.img")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("third.img: %v, want not found", err)
		}
	}
	if _, err := os.Stat(filepath.Join(images, "second.img")); err != nil {
		t.Fatalf("second.img after its snapshot finished: %v\ndaemon log:\n%s", err, daemonLog(s.dir))
	}
	if got := sha256File(t, filepath.Join(images, "second.img")); got != wantSum {
		t.Errorf("second.img: sha256 %s, want %s", got, wantSum)
	}

	for cmd, wantStatus := range map[string]string{
		"frobnicate":        "failed frobnicate: ",
		"snapshot bad/name": "failed bad/name: ",
		"snapshot .hidden":  "failed .hidden: ",
		"snapshot first":    "failed first: ",
		"snapshot a b":      "failed a: ",
	} {
		err := writeCtl(ctl, cmd)
		st := readStatus(t, status)
		if !errors.Is(err, syscall.EINVAL) || !strings.HasPrefix(st, wantStatus) {
			t.Errorf("%q: %v, status %q; want EINVAL and %q…", cmd, err, st, wantStatus)
		}
	}
	// A blank line is no command: nothing runs, and status keeps what it said.
	before := readStatus(t, status)
	if err := writeCtl(ctl, ""); err != nil || readStatus(t, status) != before {
		t.Errorf("blank line: %v, status %q; want nothing done, status %q", err, readStatus(t, status), before)
	}

	// Without a name the snapshot is named after the volume and the time.
	if err := writeCtl(ctl, "snapshot"); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	done := waitStatus(t, status, regexp.MustCompile(`^done vm-\d{8}-\d{6}$`), "")
	name := strings.TrimPrefix(done, "done ")
	if _, err := os.Stat(filepath.Join(images, name+".img")); err != nil {
		t.Errorf("default-named image: %v", err)
	}
	entries, err := os.ReadDir(images)
	if err != nil {
		t.Fatal(err)
	}
	var names, want []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want = []string{"first.img", "info", name + ".img", "second.img"}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("chains/vm = %q, want %q", names, want)
	}
	info, err := os.ReadFile(filepath.Join(images, "info"))
	if err != nil || !strings.Contains(string(info), "snapshots: 3\n") {
		t.Errorf("chains/vm/info: %v\n%s", err, info)
	}
}

func TestExt4Image(t *testing.T) {
	needFUSE(t, "mkfs.ext4", "mount", "umount", "losetup")
	src := filepath.Join(t.TempDir(), "content")
	files := map[string][]byte{
		"hello.txt":         []byte("hello from snapfs\n"),
		"sub/dir/data.bin":  randomBytes(3*mib + 17),
		"sub/empty":         nil,
		"another/notes.txt": []byte(strings.Repeat("line\n", 1000)),
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := newStore(t)
	d := newDisk(t, filepath.Dir(s.dir), "fs.img", 64*mib)
	if out, err := exec.Command("mkfs.ext4", "-F", "-q", "-d", src, d.path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	s.addVolume("fs", d.path)
	s.snapshot("fs", "s1", d)
	s.close()
	mnt := mountStore(t, s.dir)

	img := filepath.Join(mnt, "chains", "fs", "s1.img")
	loopMnt := filepath.Join(t.TempDir(), "loop")
	if err := os.Mkdir(loopMnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { detachLoops(t, img) })
	if out, err := exec.Command("mount", "-o", "ro,loop,noload", img, loopMnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -o ro,loop,noload: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", loopMnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", loopMnt, err, out)
		}
	})
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(loopMnt, name))
		if err != nil {
			t.Errorf("read %s from the loop-mounted image: %v", name, err)
		} else if string(got) != string(want) {
			t.Errorf("%s: %d bytes differ from the %d written", name, len(got), len(want))
		}
	}
	if out, err := exec.Command("ls", "-R", loopMnt).Output(); err != nil || !strings.Contains(string(out), "data.bin") {
		t.Errorf("ls -R: %v\n%s", err, out)
	}
}

// detachLoops detaches loop devices still backed by file.
func detachLoops(t *testing.T, file string) {
	out, err := exec.Command("losetup", "-j", file).Output()
	if err != nil {
		return
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if dev, _, ok := strings.Cut(sc.Text(), ":"); ok {
			exec.Command("losetup", "-d", dev).Run()
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// oneSnapshot is a store with volume "d" and its snapshot d/s1 of 16 MiB.
func oneSnapshot(t *testing.T) *store {
	s := newStore(t)
	d := newDisk(t, filepath.Dir(s.dir), "d.img", 16*mib)
	d.scribble(mib, 6*mib)
	s.addVolume("d", d.path)
	s.snapshot("d", "s1", d)
	s.close()
	return s
}

func TestUnmountWithFilesOpen(t *testing.T) {
	needFUSE(t)
	s := oneSnapshot(t)
	mnt := mountStore(t, s.dir)
	pid := daemonPID(t, s.dir)
	f, err := os.Open(filepath.Join(mnt, "chains", "d", "s1.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, mib)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, s.dir, "umount", mnt)
	if err != nil || !strings.Contains(out, "busy") {
		t.Fatalf("snapfs umount with a file open: %v\n%s", err, out)
	}
	if mounted(mnt) {
		t.Fatalf("%s still in the mount table", mnt)
	}
	// The open file still reads, from the daemon that is still there.
	h := sha256.New()
	h.Write(head)
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read after the lazy unmount: %v", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != s.sums["d/s1"] {
		t.Errorf("sha256 after the lazy unmount: %s, want %s", got, s.sums["d/s1"])
	}
	if !processAlive(pid) {
		t.Fatalf("daemon exited with a file open")
	}
	f.Close()
	waitGone(t, pid, 30*time.Second)
}

func TestUnmountReleasesStore(t *testing.T) {
	needFUSE(t)
	s := oneSnapshot(t)
	mnt := mountStore(t, s.dir)
	if _, err := chain.Open(context.Background(), s.dir, chain.Options{}); !errors.Is(err, chain.ErrLocked) {
		t.Errorf("open the store as writer while mounted: %v, want ErrLocked", err)
	}
	if out, err := run(t, s.dir, "mount", mnt); err == nil || !strings.Contains(out, "already") {
		t.Errorf("mount again: %v\n%s", err, out)
	}
	if out, err := run(t, s.dir, "umount", mnt); err != nil {
		t.Fatalf("snapfs umount: %v\n%s", err, out)
	}
	// umount returns after the daemon let go of the store's writer lock.
	m, err := chain.Open(context.Background(), s.dir, chain.Options{})
	if err != nil {
		t.Fatalf("open the store after umount: %v", err)
	}
	m.Close()
	if out, err := run(t, s.dir, "umount", mnt); err == nil {
		t.Errorf("umount of an unmounted directory succeeded:\n%s", out)
	}

	// SIGTERM unmounts too.
	mnt = mountStore(t, s.dir)
	pid := daemonPID(t, s.dir)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 30*time.Second)
	if mounted(mnt) {
		t.Errorf("still mounted after SIGTERM")
	}
	if !strings.Contains(daemonLog(s.dir), "unmounted "+mnt) {
		t.Errorf("daemon log:\n%s", daemonLog(s.dir))
	}
}

func TestStaleMountRecovery(t *testing.T) {
	needFUSE(t)
	s := oneSnapshot(t)
	mnt := mountStore(t, s.dir)
	img := filepath.Join(mnt, "chains", "d", "s1.img")
	if got := sha256File(t, img); got != s.sums["d/s1"] {
		t.Fatalf("sha256 %s, want %s", got, s.sums["d/s1"])
	}
	pid := daemonPID(t, s.dir)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 10*time.Second)
	// The dead daemon cannot answer: the kernel fails the open itself, mostly with ENOTCONN, once
	// in about ten runs with EIO (the abort of the connection racing the open).
	if _, err := os.ReadFile(img); !isErrno(err, syscall.ENOTCONN, syscall.ECONNABORTED, syscall.EIO) {
		t.Errorf("read after kill -9: %v, want ENOTCONN, ECONNABORTED or EIO", err)
	}
	if out, err := run(t, s.dir, "mount", mnt); err != nil {
		t.Fatalf("mount over the stale mount: %v\n%s\n%s", err, out, daemonLog(s.dir))
	}
	if got := sha256File(t, img); got != s.sums["d/s1"] {
		t.Errorf("after remount: sha256 %s, want %s", got, s.sums["d/s1"])
	}
	if !strings.Contains(daemonLog(s.dir), "detached the stale mount") {
		t.Errorf("daemon log:\n%s", daemonLog(s.dir))
	}
}

func TestPermissions(t *testing.T) {
	needFUSE(t)
	s := oneSnapshot(t)
	const nobody = 65534
	asNobody := func(name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	// Without --allow-other only the mounting user gets in.
	mnt := mountStore(t, s.dir)
	for _, dir := range []string{filepath.Dir(mnt), filepath.Dir(filepath.Dir(mnt))} { // t.TempDir's are 0700
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := asNobody("ls", filepath.Dir(mnt)); err != nil {
		t.Fatalf("another user cannot reach the mount point: %v", err)
	}
	if err := asNobody("ls", mnt); err == nil || !strings.Contains(err.Error(), "ermission denied") {
		t.Errorf("another user listing the mount made without --allow-other: %v, want permission denied", err)
	}
	unmount(t, s.dir, mnt)

	// With it, others may read images but not write to ctl (0600).
	if out, err := run(t, s.dir, "mount", "--allow-other", mnt); err != nil {
		t.Fatalf("mount --allow-other: %v\n%s", err, out)
	}
	if err := asNobody("cat", filepath.Join(mnt, "chains", "d", "info")); err != nil {
		t.Errorf("another user reading with --allow-other: %v", err)
	}
	if err := asNobody("dd", "if="+filepath.Join(mnt, "chains", "d", "s1.img"), "of=/dev/null", "bs=1M", "status=none"); err != nil {
		t.Errorf("another user reading an image with --allow-other: %v", err)
	}
	if err := asNobody("sh", "-c", "echo snapshot > "+filepath.Join(mnt, "volumes", "d", "ctl")); err == nil {
		t.Errorf("another user wrote to ctl")
	}
}
