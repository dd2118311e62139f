package fs_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNonRootMount runs snapfs as an unprivileged user (nobody) end to end: its own store, a
// snapshot, `snapfs mount` through fusermount3, the image read back, a snapshot through ctl, and
// `snapfs umount`. /dev/fuse is opened to all users for the test where the machine keeps it root's
// (as Debian's udev rules do not, in containers).
func TestNonRootMount(t *testing.T) {
	needFUSE(t, "fusermount3")
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	openDevFuse(t)

	dir := t.TempDir()
	for d := dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // the test's directories are root's 0700: let nobody through
	}
	bin := filepath.Join(dir, "snapfs")
	copyFile(t, binPath, bin, 0o755)
	disk := filepath.Join(dir, "disk.img")
	data := make([]byte, 16<<20)
	rand.Read(data[:4<<20])
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	for _, p := range []string{dir, disk, mnt} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	store := filepath.Join(dir, "store")
	as := func(name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "SNAPFS_STORE="+store, "HOME="+dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(name string, args ...string) string {
		t.Helper()
		out, err := as(name, args...)
		if err != nil {
			t.Fatalf("%s %v as nobody: %v\n%s", filepath.Base(name), args, err, out)
		}
		return out
	}
	must(bin, "volume", "add", "v", "--source", disk)
	must(bin, "snapshot", "create", "v", "--name", "a")
	if out, err := as(bin, "mount", mnt); err != nil {
		log, _ := os.ReadFile(filepath.Join(store, "daemon.log"))
		t.Fatalf("snapfs mount as nobody: %v\n%s\ndaemon log:\n%s", err, out, log)
	}
	t.Cleanup(func() {
		if mounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	image := filepath.Join(mnt, "chains", "v", "a.img")
	if got := must("sha256sum", image); !strings.HasPrefix(got, sha256Hex(data)) {
		t.Errorf("a.img read as nobody: %s, want %s", got, sha256Hex(data))
	}
	// Another user, root included, may not look into a mount made without allow_other.
	if _, err := os.Stat(image); err == nil {
		t.Errorf("root could stat %s in nobody's mount", image)
	}

	copy(data[8<<20:], bytes.Repeat([]byte("nobody's change "), 1<<10))
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	must("sh", "-c", "echo snapshot b > "+filepath.Join(mnt, "volumes", "v", "ctl"))
	status := filepath.Join(mnt, "volumes", "v", "status")
	deadline := time.Now().Add(time.Minute)
	for st := ""; st != "done b"; st = strings.TrimSpace(must("cat", status)) {
		if time.Now().After(deadline) {
			t.Fatalf("snapshot b through ctl: status %q", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := must("sha256sum", filepath.Join(mnt, "chains", "v", "b.img")); !strings.HasPrefix(got, sha256Hex(data)) {
		t.Errorf("b.img read as nobody: %s, want %s", got, sha256Hex(data))
	}
	must(bin, "umount", mnt)
	if mounted(mnt) {
		t.Errorf("%s still mounted after snapfs umount as nobody", mnt)
	}
}

// openDevFuse makes /dev/fuse readable and writable by all for the test, as fusermount3 needs for
// an unprivileged user, and puts its mode back after.
func openDevFuse(t *testing.T) {
	t.Helper()
	fi, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o006 == 0o006 {
		return
	}
	if err := os.Chmod("/dev/fuse", fi.Mode().Perm()|0o666); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod("/dev/fuse", fi.Mode().Perm()) })
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
