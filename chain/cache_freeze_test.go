package chain

// Two promises of the README's "Consistency of a snapshot" that hold only while the disk is being
// read: the snapshot reads around the page cache instead of filling it with the disk, and --freeze
// keeps the filesystem frozen for the whole read.

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentBytes is how many bytes of the file at path the page cache holds (mincore over a mapping
// of it, which faults nothing in).
func residentBytes(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 {
		return 0
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	page := int64(os.Getpagesize())
	vec := make([]byte, (fi.Size()+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)),
		uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore %s: %v", path, errno)
	}
	var n int64
	for _, v := range vec {
		if v&1 != 0 {
			n += page
		}
	}
	return n
}

// evict writes back the file at path and drops it from the page cache.
func evict(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotLeavesPageCache: a snapshot of an image file that is not in the page cache reads it
// directly, and leaves it out of the cache, instead of filling the cache with the whole disk
// (useDirect in CreateSnapshot). A buffered read of the same file, as the control, fills it.
func TestSnapshotLeavesPageCache(t *testing.T) {
	const size = 128 << 20
	ctx := context.Background()
	e := newEnv(t, 0)
	// A file on tmpfs is its page cache, with nothing to read around: the image goes on a disk,
	// under /var/tmp when the test's directory is on tmpfs (as /tmp is on some systems).
	disk := e.disk
	if inMemory(t, e.dir) {
		dir, err := os.MkdirTemp("/var/tmp", "snapfs-cache-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if inMemory(t, dir) {
			t.Fatalf("%s and %s are both on tmpfs or ramfs: set TMPDIR to a directory on a disk", e.dir, dir)
		}
		disk = filepath.Join(dir, "disk.img")
	}
	f, err := os.OpenFile(disk, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	evict(t, disk)
	t.Cleanup(func() { evict(t, disk) })
	if n := residentBytes(t, disk); n > 1<<20 {
		t.Fatalf("%d KiB of the image still cached after fsync and FADV_DONTNEED: cannot measure", n>>10)
	}

	if _, err := e.m.AddVolume(ctx, VolumeSpec{Name: "v", Source: disk}); err != nil {
		t.Fatal(err)
	}
	s, err := e.m.CreateSnapshot(ctx, "v", CreateOptions{Name: "cold"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != size {
		t.Fatalf("snapshot of %d bytes, want %d", s.Size, size)
	}
	const most = 4 << 20
	n := residentBytes(t, disk)
	t.Logf("after the snapshot: %d KiB of the image cached", n>>10)
	if n > most {
		t.Errorf("after the snapshot %d MiB of the %d MiB image are in the page cache; want at most %d MiB "+
			"(the snapshot read it through the cache)", n>>20, size>>20, most>>20)
	}

	// The control: the measure sees a buffered read of the image.
	r, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	n = residentBytes(t, disk)
	t.Logf("after a buffered read: %d KiB of the image cached", n>>10)
	if n < size/2 {
		t.Fatalf("a buffered read of the image left only %d MiB of it in the page cache: the measure is wrong", n>>20)
	}
}

// inMemory reports whether dir is on tmpfs or ramfs.
func inMemory(t *testing.T, dir string) bool {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC
}

// TestFreezeHoldsWhileDiskIsRead: with CreateOptions.Freeze the filesystem stays frozen for the whole
// read of its disk. A write and fsync started once the read is under way does not finish while it
// goes on, at any progress report up to the last, and finishes once the snapshot returns; and the
// disk was read frozen, as ext4 leaves it: its superblock without needs_recovery, which an ext4
// mounted and not frozen always has (the control: a snapshot without Freeze). The flush and the thaw
// after success or failure are TestSnapshotBlockDeviceFrozen's.
func TestFreezeHoldsWhileDiskIsRead(t *testing.T) {
	requireRoot(t, "losetup", "mkfs.ext4", "mount", "fsfreeze", "dumpe2fs")
	ctx := context.Background()
	const size = 64 << 20 // 64 reads of readBlock, each reporting progress
	e := newEnv(t, size)
	sh(t, "mkfs.ext4", "-q", "-F", e.disk)
	loop := sh(t, "losetup", "-f", "--show", e.disk)
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	mnt := filepath.Join(e.dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", loop, mnt)
	var started atomic.Bool
	wrote := make(chan error, 1) // the write's outcome; closed once it is sent
	t.Cleanup(func() {
		exec.Command("fsfreeze", "-u", mnt).Run() // in case a failure left it frozen
		if started.Load() {
			select {
			case <-wrote:
			case <-time.After(10 * time.Second):
			}
		}
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	before := make([]byte, 1<<20)
	rand.Read(before)
	if err := os.WriteFile(filepath.Join(mnt, "before"), before, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.AddVolume(ctx, VolumeSpec{Name: "dev", Source: loop}); err != nil {
		t.Fatal(err)
	}

	write := func() {
		defer close(wrote)
		f, err := os.Create(filepath.Join(mnt, "during"))
		if err == nil {
			_, err = f.WriteString("written while the disk was read")
			if serr := f.Sync(); err == nil {
				err = serr
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		wrote <- err
	}
	var calls, last, doneAt atomic.Int64 // progress reports, the last one's bytes, bytes when the write was seen done
	progress := func(done, total int64) {
		calls.Add(1)
		last.Store(done)
		if started.CompareAndSwap(false, true) {
			go write()
			// Give an unfrozen filesystem ample time to take the write.
			select {
			case <-wrote:
				doneAt.Store(done)
			case <-time.After(time.Second):
			}
			return
		}
		if doneAt.Load() == 0 {
			select {
			case <-wrote:
				doneAt.Store(done)
			default:
			}
		}
	}
	if _, err := e.m.CreateSnapshot(ctx, "dev", CreateOptions{Name: "frozen", Freeze: mnt, Progress: progress}); err != nil {
		t.Fatal(err)
	}
	if at := doneAt.Load(); at != 0 {
		t.Errorf("a write and fsync to %s finished after %d of %d bytes were read: the filesystem was not frozen", mnt, at, size)
	}
	if calls.Load() < 2 || last.Load() != size {
		t.Fatalf("%d progress reports, the last at %d bytes; want several, up to %d: the read went unchecked", calls.Load(), last.Load(), size)
	}
	select {
	case err, ok := <-wrote:
		if ok && err != nil {
			t.Fatalf("write to %s after the snapshot: %v", mnt, err)
		}
	case <-time.After(10 * time.Second):
		exec.Command("fsfreeze", "-u", mnt).Run()
		t.Fatalf("the write to %s did not finish within 10 s of the snapshot: left frozen", mnt)
	}

	if _, err := e.m.CreateSnapshot(ctx, "dev", CreateOptions{Name: "unfrozen"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		recovery bool // the superblock says needs_recovery
	}{{"frozen", false}, {"unfrozen", true}} {
		img := filepath.Join(e.dir, c.name+".img")
		if _, err := e.m.Clone(ctx, "dev/"+c.name, CloneOptions{To: img}); err != nil {
			t.Fatal(err)
		}
		features := ""
		for _, line := range strings.Split(sh(t, "dumpe2fs", "-h", img), "\n") {
			if strings.HasPrefix(line, "Filesystem features:") {
				features = line
			}
		}
		if features == "" {
			t.Fatalf("snapshot %s: dumpe2fs shows no filesystem features", c.name)
		}
		if got := strings.Contains(features, "needs_recovery"); got != c.recovery {
			t.Errorf("snapshot %s: needs_recovery %v in its superblock, want %v (%s)", c.name, got, c.recovery, features)
		}
		if c.name != "frozen" {
			continue
		}
		// What the snapshot holds is what was on the filesystem when it froze.
		mnt2 := filepath.Join(e.dir, "mnt-"+c.name)
		if err := os.Mkdir(mnt2, 0o700); err != nil {
			t.Fatal(err)
		}
		sh(t, "mount", "-o", "ro,loop,noload", img, mnt2)
		got, err := os.ReadFile(filepath.Join(mnt2, "before"))
		_, derr := os.Stat(filepath.Join(mnt2, "during"))
		if out, uerr := exec.Command("umount", mnt2).CombinedOutput(); uerr != nil {
			t.Errorf("umount %s: %v %s", mnt2, uerr, out)
			exec.Command("umount", "-l", mnt2).Run()
		}
		if err != nil || string(got) != string(before) {
			t.Errorf("snapshot %s: file written before it differs (%v)", c.name, err)
		}
		if derr == nil {
			t.Errorf("snapshot %s holds the file written while it was frozen", c.name)
		}
	}
}
