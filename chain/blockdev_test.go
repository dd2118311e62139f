package chain

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snapfs/snapfs/store"
)

// requireRoot skips a test that needs root, loop devices or mounts; under CI=true it fails instead,
// since CI runs as root and a skipped end-to-end test would hide a regression.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			why = "needs " + tool
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: end-to-end tests must run)", why)
	}
	t.Skip(why)
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestSnapshotBlockDeviceFrozen snapshots a loop block device (read with O_DIRECT) while the ext4
// filesystem on it is mounted and frozen, and checks the filesystem is thawed after success and after
// a failure.
func TestSnapshotBlockDeviceFrozen(t *testing.T) {
	requireRoot(t, "losetup", "mkfs.ext4", "mount")
	ctx := context.Background()
	e := newEnv(t, 32<<20)
	sh(t, "mkfs.ext4", "-q", "-F", e.disk)
	loop := sh(t, "losetup", "-f", "--show", e.disk)
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	mnt := filepath.Join(e.dir, "mnt")
	os.Mkdir(mnt, 0o700)
	sh(t, "mount", loop, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(mnt, "f"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.AddVolume(ctx, VolumeSpec{Name: "dev", Source: loop}); err != nil {
		t.Fatal(err)
	}
	s, err := e.m.CreateSnapshot(ctx, "dev", CreateOptions{Freeze: mnt})
	if err != nil {
		t.Fatal(err)
	}
	// Thawed: a write must go through.
	if err := os.WriteFile(filepath.Join(mnt, "g"), []byte("after"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The snapshot holds what was persisted: the frozen filesystem was flushed, so the image,
	// mounted, has the file.
	img := filepath.Join(e.dir, "snap.img")
	if _, err := e.m.Clone(ctx, s.Ref(), CloneOptions{To: img}); err != nil {
		t.Fatal(err)
	}
	mnt2 := filepath.Join(e.dir, "mnt2")
	os.Mkdir(mnt2, 0o700)
	sh(t, "mount", "-o", "ro,loop,noload", img, mnt2)
	got, err := os.ReadFile(filepath.Join(mnt2, "f"))
	exec.Command("umount", mnt2).Run()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file in the snapshot differs (err %v)", err)
	}
	// A failing snapshot (cancelled) still thaws.
	cctx, cancel := context.WithCancel(ctx)
	_, err = e.m.CreateSnapshot(cctx, "dev", CreateOptions{Freeze: mnt, Progress: func(done, total int64) { cancel() }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled snapshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "h"), []byte("after failure"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ss, _ := e.m.Snapshots(ctx, "dev"); len(ss) != 1 {
		t.Fatalf("after a cancelled snapshot: %d snapshots, want 1", len(ss))
	}
}

// TestStoreFull fills the filesystem under the store during a snapshot: the snapshot fails with a
// clear error, earlier snapshots are intact, and the next snapshot after space is freed succeeds.
func TestStoreFull(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store")
	os.Mkdir(storeDir, 0o700)
	if err := unix.Mount("tmpfs", storeDir, "tmpfs", 0, "size=12m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(storeDir, unix.MNT_DETACH) })
	m, err := Open(ctx, storeDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	disk := filepath.Join(dir, "disk.img")
	small := make([]byte, 4<<20)
	rand.Read(small)
	os.WriteFile(disk, small, 0o600)
	m.AddVolume(ctx, VolumeSpec{Name: "v", Source: disk})
	first, err := m.CreateSnapshot(ctx, "v", CreateOptions{Name: "first"})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 16<<20)
	rand.Read(big)
	os.WriteFile(disk, big, 0o600)
	_, err = m.CreateSnapshot(ctx, "v", CreateOptions{Name: "big"})
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("snapshot on a full store: %v, want a no-space error", err)
	}
	if ss, _ := m.Snapshots(ctx, "v"); len(ss) != 1 || ss[0].Name != "first" {
		t.Fatalf("after the failure: %+v", ss)
	}
	if got := readImage(t, m, first.Ref()); !bytes.Equal(got, small) {
		t.Fatal("first snapshot changed")
	}
	// Free space: the disk shrinks back to something that fits.
	// Space comes back when the disk shrinks to something that fits.
	os.WriteFile(disk, big[:2<<20], 0o600)
	if _, err := m.CreateSnapshot(ctx, "v", CreateOptions{Name: "fits"}); err != nil {
		t.Fatalf("snapshot after space was freed: %v", err)
	}
	if rep, err := m.Verify(ctx, nil, nil); err != nil || len(rep.Faults) > 0 {
		t.Fatalf("verify: %v %+v", err, rep.Faults)
	}
}

func readImage(t *testing.T, m *Manager, ref string) []byte {
	t.Helper()
	im, err := m.OpenImage(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	buf := make([]byte, im.Size())
	if _, err := im.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}

// TestFreezeRefusals: --freeze takes only a mount point, and never the filesystem the store is on
// (the snapshot's own writes would wait for a thaw that comes after them).
func TestFreezeRefusals(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	e := newEnv(t, 1<<20)
	e.m.AddVolume(ctx, VolumeSpec{Name: "v", Source: e.disk})
	storeFS := sh(t, "findmnt", "-n", "-o", "TARGET", "--target", e.m.Store().Dir())
	for _, dir := range []string{e.dir, storeFS, filepath.Join(e.dir, "missing")} {
		_, err := e.m.CreateSnapshot(ctx, "v", CreateOptions{Freeze: dir})
		if err == nil {
			t.Fatalf("freeze %s: accepted", dir)
		}
		t.Logf("freeze %s: %v", dir, err)
	}
	if ss, _ := e.m.Snapshots(ctx, "v"); len(ss) != 0 {
		t.Fatalf("%d snapshots after refusals", len(ss))
	}
}

// fillUp writes path until the filesystem under it has no block left.
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, n := range []int{1 << 20, 4096} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
}

// TestDeleteOnFullStore: deleting snapshots is how a full store gets room back, so a delete works
// on a filesystem with no block free, and a delete that still finds no room (the reserve spent) leaves
// the snapshot hidden and whole, the store opening, and a later delete finishing it.
func TestDeleteOnFullStore(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	u := newUnit(t, Options{})
	storeDir := filepath.Join(u.dir, "full")
	os.Mkdir(storeDir, 0o700)
	if err := unix.Mount("tmpfs", storeDir, "tmpfs", 0, "size=96m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(storeDir, unix.MNT_DETACH) })
	u.m.Close()
	reopen := func() {
		t.Helper()
		u.m.Close()
		m, err := Open(ctx, filepath.Join(storeDir, "store"), Options{})
		if err != nil {
			t.Fatalf("open the full store as a writer: %v", err)
		}
		t.Cleanup(func() { m.Close() })
		u.m = m
	}
	reopen()
	disk := u.disk("v", 12<<20)
	want := map[string][]byte{}
	for _, name := range []string{"s1", "s2", "s3", "s4"} {
		u.write(disk, 0, u.random(12<<20))
		u.snap("v", name)
		want[name] = u.read(disk)
	}
	check := func(names ...string) {
		t.Helper()
		ss, err := u.m.SnapshotNames(ctx, "v")
		var got []string
		for _, s := range ss {
			got = append(got, s.Name)
		}
		if err != nil || !slices.Equal(got, names) {
			t.Fatalf("snapshots %v (%v), want %v", got, err, names)
		}
		for _, name := range names {
			if !bytes.Equal(readImage(t, u.m, "v/"+name), want[name]) {
				t.Fatalf("snapshot %s changed", name)
			}
		}
	}
	free := func() int64 {
		var fs unix.Statfs_t
		unix.Statfs(storeDir, &fs)
		return int64(fs.Bavail) * fs.Bsize
	}

	filler := filepath.Join(storeDir, "filler")
	fillUp(t, filler)
	st, err := u.m.DeleteSnapshot(ctx, "v/s2")
	if err != nil {
		t.Fatalf("delete on a full store: %v", err)
	}
	if st.FreedBytes < 10<<20 || free() < 10<<20 {
		t.Fatalf("delete freed %d bytes, %d free now; want the snapshot's 12 MiB", st.FreedBytes, free())
	}
	check("s1", "s3", "s4")
	// The reserve was taken again once the delete made room: the next delete on a full store works.
	fillUp(t, filler)
	if _, err := u.m.DeleteSnapshot(ctx, "v/s4"); err != nil {
		t.Fatalf("second delete on a full store: %v", err)
	}
	check("s1", "s3")

	// An interrupted delete and an interrupted snapshot (as a crash leaves them), and no room at
	// all: no reserve left either.
	if err := u.m.st.Update(ctx, func(tx *store.Tx) error {
		c, err := tx.ChainByName("v")
		if err != nil {
			return err
		}
		s, err := tx.SnapshotByName(c.ID, "s3")
		if err != nil {
			return err
		}
		seq, err := tx.TakeSeq(c.ID)
		if err != nil {
			return err
		}
		if _, err := tx.InsertSnapshot(store.Snapshot{ChainID: c.ID, Seq: seq, Name: "crashed", Volume: "v",
			Size: 12 << 20, Status: StatusCreating, DataBytes: store.UnknownDataBytes}); err != nil {
			return err
		}
		return tx.SetSnapshotStatus(s.ID, StatusDeleting)
	}); err != nil {
		t.Fatal(err)
	}
	u.m.st.ReleaseReserve()
	fillUp(t, filler)
	reopen() // its recovery of the delete finds no room
	check("s1")
	if _, err := u.m.DeleteSnapshot(ctx, "v/s3"); err == nil || !store.IsFull(err) {
		t.Fatalf("delete with no room at all: %v, want a no-space error", err)
	}
	check("s1")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := u.m.DeleteSnapshot(ctx, "v/s3"); err != nil {
		t.Fatalf("delete again once there is room: %v", err)
	}
	check("s1")
	if _, err := u.m.DeleteSnapshot(ctx, "v/s3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of a deleted snapshot: %v, want not found", err)
	}
	if gc, err := u.m.GC(ctx); err != nil || gc.SnapshotsUndone != 1 {
		t.Fatalf("gc once there is room: %+v, %v; want the interrupted snapshot rolled back", gc, err)
	}
	if rep, err := u.m.Verify(ctx, nil, nil); err != nil || len(rep.Faults) > 0 {
		t.Fatalf("verify: %v %+v", err, rep.Faults)
	}
}

// writeMBR gives the disk image at path a DOS partition table with one Linux partition from 1 MiB
// to the end.
func writeMBR(t *testing.T, path string, size int64) {
	t.Helper()
	mbr := make([]byte, 512)
	e := mbr[446:462]
	e[4] = 0x83 // Linux
	binary.LittleEndian.PutUint32(e[8:], 2048)
	binary.LittleEndian.PutUint32(e[12:], uint32(size/512-2048))
	mbr[510], mbr[511] = 0x55, 0xaa
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreRefusesBusyDevice: a restore never writes under a mounted filesystem or another
// exclusive user of the device: not when a partition of the disk is mounted (which the mount table
// shows only for the partition), nor when something else holds the device exclusively; it writes
// once the device is free.
func TestRestoreRefusesBusyDevice(t *testing.T) {
	requireRoot(t, "losetup", "mkfs.ext4", "mount", "partx")
	ctx := context.Background()
	const size = 64 << 20
	e := newEnv(t, size)
	writeMBR(t, e.disk, size)
	loop := sh(t, "losetup", "-f", "--show", "-P", e.disk)
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	part := loop + "p1"
	if _, err := os.Stat(part); err != nil {
		exec.Command("partx", "-a", loop).Run()
	}
	sh(t, "mkfs.ext4", "-q", "-F", part)
	if _, err := e.m.AddVolume(ctx, VolumeSpec{Name: "dev", Source: loop}); err != nil {
		t.Fatal(err)
	}
	s, err := e.m.CreateSnapshot(ctx, "dev", CreateOptions{Name: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(e.dir, "mnt")
	os.Mkdir(mnt, 0o700)
	sh(t, "mount", part, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("after the snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "sync", "-f", mnt) // this filesystem only: a global sync waits on every other one

	st, err := e.m.Restore(ctx, s.Ref(), RestoreOptions{})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), part) {
		t.Fatalf("restore under a mounted partition: %v, want in use naming %s", err, part)
	}
	if st.ChunksWritten != 0 {
		t.Fatalf("refused restore wrote %d chunks", st.ChunksWritten)
	}
	sh(t, "umount", mnt)

	// Something the mount table does not show: another exclusive opener.
	holder, err := os.OpenFile(loop, os.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Restore(ctx, s.Ref(), RestoreOptions{})
	holder.Close()
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("restore of an exclusively held device: %v, want in use", err)
	}

	if _, err := e.m.Restore(ctx, s.Ref(), RestoreOptions{}); err != nil {
		t.Fatalf("restore of the free device: %v", err)
	}
	sh(t, "mount", part, mnt)
	if _, err := os.Stat(filepath.Join(mnt, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file written after the snapshot survived its restore: %v", err)
	}
}

// TestLoopDeviceKeepsToItsFile: a volume on a loop device is refused once the device is attached to
// another file, as a device renumbered at boot would name another disk.
func TestLoopDeviceKeepsToItsFile(t *testing.T) {
	requireRoot(t, "losetup")
	ctx := context.Background()
	e := newEnv(t, 4<<20)
	other := filepath.Join(e.dir, "other.img")
	if err := os.WriteFile(other, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	loop := sh(t, "losetup", "-f", "--show", e.disk)
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	if _, err := e.m.AddVolume(ctx, VolumeSpec{Name: "lv", Source: loop}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateSnapshot(ctx, "lv", CreateOptions{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	sh(t, "losetup", "-d", loop)
	sh(t, "losetup", loop, other)
	if _, err := e.m.CreateSnapshot(ctx, "lv", CreateOptions{Name: "s2"}); !errors.Is(err, ErrOtherDisk) {
		t.Fatalf("snapshot of %s attached to another file: %v, want ErrOtherDisk", loop, err)
	}
	if _, err := e.m.Restore(ctx, "lv/s1", RestoreOptions{}); !errors.Is(err, ErrOtherDisk) {
		t.Fatalf("restore onto %s attached to another file: %v, want ErrOtherDisk", loop, err)
	}
	sh(t, "losetup", "-d", loop)
	sh(t, "losetup", loop, e.disk)
	if _, err := e.m.CreateSnapshot(ctx, "lv", CreateOptions{Name: "s2"}); err != nil {
		t.Fatalf("snapshot of %s attached to its file again: %v", loop, err)
	}
}

// TestDeleteWhoseSpaceCannotBeReturned: a delete whose punches fail after its commit (here the pack
// files are made immutable) has deleted the snapshot: it reports success with a warning, the other
// snapshots read right, and gc returns the space once it can.
func TestDeleteWhoseSpaceCannotBeReturned(t *testing.T) {
	requireRoot(t, "chattr")
	ctx := context.Background()
	u := newUnit(t, Options{})
	path := u.disk("v", 1<<20)
	want := map[string][]byte{}
	for _, name := range []string{"s1", "s2", "s3"} {
		u.write(path, 0, u.random(1<<20))
		u.snap("v", name)
		want[name] = u.read(path)
	}
	packs, _ := filepath.Glob(filepath.Join(u.dir, "store", "packs", "*.pack"))
	if out, err := exec.Command("chattr", append([]string{"+i"}, packs...)...).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chattr +i: %v %s (CI=true: end-to-end tests must run)", err, out)
		}
		t.Skipf("chattr +i (the filesystem under the test's directory may not take it): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", append([]string{"-i"}, packs...)...).Run() })

	st, err := u.m.DeleteSnapshot(ctx, "v/s2")
	if err != nil {
		t.Fatalf("delete whose punches fail: %v, want success (it committed)", err)
	}
	if st.Warning == "" || st.FreedChunks == 0 {
		t.Fatalf("delete whose punches fail: %+v, want its freed chunks and a warning", st)
	}
	if names := u.names("v"); !slices.Equal(names, []string{"s1", "s3"}) {
		t.Fatalf("snapshots after the delete: %v", names)
	}
	for _, name := range []string{"s1", "s3"} {
		if !bytes.Equal(readImage(t, u.m, "v/"+name), want[name]) {
			t.Fatalf("snapshot %s changed", name)
		}
	}
	exec.Command("chattr", append([]string{"-i"}, packs...)...).Run()
	if _, err := u.m.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if rep, err := u.m.Verify(ctx, nil, nil); err != nil || len(rep.Faults) > 0 {
		t.Fatalf("verify: %v %+v", err, rep.Faults)
	}
}

// TestLoopOverADeviceIdent: a loop device over another block device is identified by that device,
// not by its /dev node, which is made anew at every boot.
func TestLoopOverADeviceIdent(t *testing.T) {
	requireRoot(t, "losetup")
	e := newEnv(t, 4<<20)
	inner := sh(t, "losetup", "-f", "--show", e.disk)
	t.Cleanup(func() { exec.Command("losetup", "-d", inner).Run() })
	outer := sh(t, "losetup", "-f", "--show", inner)
	t.Cleanup(func() { exec.Command("losetup", "-d", outer).Run() })
	identOf := func(path string) string {
		t.Helper()
		d, err := openDisk(path, os.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		return diskIdent(d)
	}
	in := identOf(inner)
	if in == "" || !strings.HasPrefix(in, "loop file ino ") {
		t.Fatalf("identity of %s over a file: %q", inner, in)
	}
	if got, want := identOf(outer), "loop "+in+" offset 0"; got != want {
		t.Fatalf("identity of %s over %s: %q, want %q", outer, inner, got, want)
	}
}
