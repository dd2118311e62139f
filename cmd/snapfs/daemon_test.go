package main

// End-to-end tests of commands that go through a mount daemon: the binary, a real FUSE mount served
// by `snapfs mount` (a daemon subprocess) and commands run against its store.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snapfs/snapfs/chain"
)

// needFUSE skips the test when this machine cannot mount FUSE file systems as root, except in CI
// (CI=true), where that is a failure.
func needFUSE(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse")
	}
	if len(missing) > 0 {
		msg := "needs " + strings.Join(missing, ", ") + " (run scripts/setup.sh as root)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// mount mounts the env's store on a new directory through `snapfs mount` and unmounts it when the
// test ends.
func (e *env) mount() string {
	e.t.Helper()
	dir := e.path("mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if r := e.run("mount", dir); r.code != 0 {
		e.t.Fatalf("snapfs mount: %s\ndaemon log:\n%s", r, e.daemonLog())
	}
	e.t.Cleanup(func() { e.unmount(dir) })
	return dir
}

// unmount unmounts dir with `snapfs umount`, detaching it lazily if that fails, so that the test
// always leaves it free.
func (e *env) unmount(dir string) {
	e.t.Helper()
	if !isMounted(dir) {
		return
	}
	if r := e.run("umount", dir); r.code != 0 {
		e.t.Errorf("snapfs umount: %s", r)
	}
	if isMounted(dir) {
		e.t.Errorf("%s still mounted after snapfs umount", dir)
		syscall.Unmount(dir, syscall.MNT_DETACH)
	}
}

// daemonLog is the store's daemon log, for failure messages.
func (e *env) daemonLog() string {
	b, _ := os.ReadFile(filepath.Join(e.store, daemonLogName))
	return string(b)
}

// isMounted reports whether dir is a mount point.
func isMounted(dir string) bool {
	mounts, _ := chain.MountTable()
	for _, e := range mounts {
		if e.Dir == dir {
			return true
		}
	}
	return false
}

// listDir lists a directory's names, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}

// sha256Hex is the hex SHA-256 of b.
func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// checkHash checks that the file at path hashes to want.
func checkHash(t *testing.T, path, want string) {
	t.Helper()
	if got := fileHash(t, path); got != want {
		t.Errorf("sha256 of %s: %s, want %s", path, got, want)
	}
}

// checkGone checks that path no longer exists, as the kernel sees it.
func checkGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s: %v, want it gone", path, err)
	}
}

// storedBytes is what `chain ls --json` says the chain holds.
func (e *env) storedBytes(chainName string) int64 {
	e.t.Helper()
	for _, c := range okJSON[[]chain.Chain](e, "chain", "ls", "--json") {
		if c.Name == chainName {
			return c.StoredBytes
		}
	}
	e.t.Fatalf("chain ls: no chain %s", chainName)
	return 0
}

// TestDaemonRouting: with the store mounted, every command that changes it goes through the daemon
// and does what it does without one; the tree shows the changes at once.
func TestDaemonRouting(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.ok("init")
	img := e.path("d1.img")
	makeImage(t, img, imageSize)
	mnt := e.mount()
	chains := filepath.Join(mnt, "chains", "v1")

	e.ok("volume", "add", "v1", "--source", img, "--chunk-size", "64K")
	if names := listDir(t, filepath.Join(mnt, "volumes")); !slices.Equal(names, []string{"v1"}) {
		t.Fatalf("volumes/ after volume add: %v", names)
	}
	sums := map[string]string{}
	for i, name := range []string{"s1", "s2", "s3"} {
		if i > 0 {
			scribble(t, img, int64(i)*3*chunk64K, 5000)
		}
		sums[name] = fileHash(t, img)
		if out := strings.TrimSpace(e.ok("snapshot", "create", "v1", "--name", name)); out != "v1/"+name {
			t.Errorf("snapshot create printed %q", out)
		}
		checkHash(t, filepath.Join(chains, name+".img"), sums[name])
	}

	if out := e.ok("snapshot", "delete", "v1/s2"); !strings.Contains(out, "deleted v1/s2") {
		t.Errorf("snapshot delete printed %q", out)
	}
	if names := listDir(t, chains); !slices.Equal(names, []string{"info", "s1.img", "s3.img"}) {
		t.Errorf("chains/v1 after deleting s2: %v", names)
	}
	checkGone(t, filepath.Join(chains, "s2.img"))
	checkHash(t, filepath.Join(chains, "s1.img"), sums["s1"])
	checkHash(t, filepath.Join(chains, "s3.img"), sums["s3"])

	restored := e.path("restored.img")
	if out := e.ok("restore", "v1/s1", "--to", restored); !strings.Contains(out, "restored v1/s1 to "+restored) {
		t.Errorf("restore printed %q", out)
	}
	checkHash(t, restored, sums["s1"])

	cloned := e.path("clone.img")
	if out := e.ok("clone", "v1/s3", "--to", cloned, "--volume", "v2"); !strings.Contains(out, "volume v2") {
		t.Errorf("clone printed %q", out)
	}
	checkHash(t, cloned, sums["s3"])
	e.ok("snapshot", "create", "v2", "--name", "c1")
	checkHash(t, filepath.Join(mnt, "chains", "v2", "c1.img"), sums["s3"])

	if out := e.ok("verify"); !strings.Contains(out, "verified") {
		t.Errorf("verify printed %q", out)
	}
	if out := e.ok("gc"); !strings.Contains(out, "rolled back 0 unfinished snapshots") {
		t.Errorf("gc printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(mnt, "volumes", "v2", "info")); err != nil {
		t.Fatal(err)
	}
	e.ok("volume", "rm", "v2")
	checkGone(t, filepath.Join(mnt, "volumes", "v2"))

	// Bad input fails through the daemon as it does without one.
	bad := [][]string{
		{"snapshot", "delete", "v1/nope"},
		{"snapshot", "delete", "v1/s1", "v1/nope"},
		{"snapshot", "delete", "999"},
		{"snapshot", "create", "nosuch"},
		{"snapshot", "create", "v1", "--name", "s1"},
		{"volume", "add", "v1", "--source", img},
		{"volume", "rm", "nosuch"},
		{"restore", "v1/nope", "--to", e.path("x.img")},
		{"clone", "v1/s1", "--to", cloned},
		{"verify", "v1/nope"},
	}
	before := e.state()
	mounted := make([]result, len(bad))
	for i, args := range bad {
		mounted[i] = e.run(args...)
		checkFailure(t, mounted[i], 1, "snapfs: "+args[0], args)
	}
	if e.state() != before {
		t.Error("failed commands changed the store")
	}
	if log := e.daemonLog(); !strings.Contains(log, "rpc: uid 0: snapshot.delete failed") {
		t.Errorf("the bad commands did not reach the daemon:\n%s", log)
	}
	e.unmount(mnt)
	for i, args := range bad {
		if local := e.run(args...); local != mounted[i] {
			t.Errorf("snapfs %q through the daemon:\n%s\nwithout it:\n%s", args, mounted[i], local)
		}
	}
	if _, err := os.Stat(filepath.Join(e.store, daemonSockName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after umount: %v", err)
	}
}

// TestDaemonDeleteWhileOpen: a snapshot deleted while its image is open vanishes from the tree at
// once; the open file reads to the end, and its data is freed when the file closes.
func TestDaemonDeleteWhileOpen(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	img := e.path("d.img")
	makeImage(t, img, 2*imageSize)
	e.ok("volume", "add", "v", "--source", img, "--chunk-size", "64K")
	mnt := e.mount()
	sums := map[string]string{}
	for i, name := range []string{"s1", "s2", "s3"} {
		if i > 0 {
			scribble(t, img, 0, 4*chunk64K) // s3 overwrites what s2 changed: deleting s2 frees it
		}
		sums[name] = fileHash(t, img)
		e.ok("snapshot", "create", "v", "--name", name)
	}
	path := filepath.Join(mnt, "chains", "v", "s2.img")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	all := make([]byte, 2*imageSize)
	if _, err := io.ReadFull(f, all[:4096]); err != nil {
		t.Fatal(err)
	}
	stored := e.storedBytes("v")

	if out := e.ok("snapshot", "delete", "v/s2"); !strings.Contains(out, "freed when the last reader closes it") {
		t.Errorf("snapshot delete of an open image printed %q", out)
	}
	if names := listDir(t, filepath.Join(mnt, "chains", "v")); slices.Contains(names, "s2.img") {
		t.Errorf("chains/v still lists s2.img: %v", names)
	}
	checkGone(t, path)
	if _, err := io.ReadFull(f, all[4096:]); err != nil {
		t.Fatalf("read the open image after its delete: %v", err)
	}
	if n, err := f.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("read past the end: %d, %v", n, err)
	}
	if got := sha256Hex(all); got != sums["s2"] {
		t.Errorf("the open image read %s, want %s", got, sums["s2"])
	}
	if got := e.storedBytes("v"); got != stored {
		t.Errorf("stored bytes while the image is open: %d, want %d", got, stored)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// The kernel releases the file in the background.
	deadline := time.Now().Add(20 * time.Second)
	for e.storedBytes("v") >= stored {
		if time.Now().After(deadline) {
			t.Fatalf("stored bytes still %d after closing the deleted image\ndaemon log:\n%s", stored, e.daemonLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.ok("verify")
	checkHash(t, filepath.Join(mnt, "chains", "v", "s1.img"), sums["s1"])
	checkHash(t, filepath.Join(mnt, "chains", "v", "s3.img"), sums["s3"])
}

// TestDaemonConcurrentOps: several commands through the daemon at once, and reads of the tree
// meanwhile, all succeed.
func TestDaemonConcurrentOps(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	const n = 4
	imgs := make([]string, n)
	for i := range imgs {
		imgs[i] = e.path("d" + string(rune('0'+i)) + ".img")
		makeImage(t, imgs[i], imageSize)
		e.ok("volume", "add", volName(i), "--source", imgs[i])
	}
	mnt := e.mount()
	e.ok("snapshot", "create", volName(0), "--name", "base")
	base := filepath.Join(mnt, "chains", volName(0), "base.img")
	want := fileHash(t, imgs[0])

	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			args := []string{"snapshot", "create", volName(i), "--name", "c"}
			if r := e.run(args...); r.code != 0 {
				t.Errorf("snapfs %q: %s", args, r)
			}
		})
		wg.Go(func() {
			b, err := os.ReadFile(base)
			if err != nil {
				t.Errorf("concurrent read: %v", err)
			} else if got := sha256Hex(b); got != want {
				t.Errorf("concurrent read of %s: sha256 %s, want %s", base, got, want)
			}
		})
		wg.Go(func() {
			if r := e.run("snapshot", "ls", "--json"); r.code != 0 {
				t.Errorf("snapshot ls: %s", r)
			}
		})
	}
	wg.Wait()
	for i := range n {
		checkHash(t, filepath.Join(mnt, "chains", volName(i), "c.img"), fileHash(t, imgs[i]))
	}
	e.ok("verify")
}

func volName(i int) string { return "v" + string(rune('0'+i)) }

// TestDaemonInterrupt: SIGINT to a snapshot create that the daemon runs cancels it in the daemon,
// which leaves no snapshot, and the command fails as it would on its own.
func TestDaemonInterrupt(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	img := imageVolume(e, "big", 128<<20)
	mnt := e.mount()

	cmd, _, stderr := e.startBin("snapshot", "create", "big")
	waitLog(t, e, "rpc: uid 0: snapshot.create started", cmd)
	r, finished := interrupt(t, cmd, syscall.SIGINT, 100*time.Millisecond)
	if finished {
		t.Fatalf("the snapshot was done before SIGINT\ndaemon log:\n%s", e.daemonLog())
	}
	r.stderr = stderr.String()
	checkFailure(t, r, 1, "snapshot create big: ", []string{"snapshot", "create", "big"})
	if !strings.Contains(r.stderr, "canceled") {
		t.Errorf("stderr %q does not say the snapshot was canceled", r.stderr)
	}
	// The command waited for the daemon to roll the snapshot back.
	if out := strings.TrimSpace(e.ok("snapshot", "ls", "--json")); out != "[]" {
		t.Errorf("an interrupted snapshot is listed: %s", out)
	}
	if out := strings.TrimSpace(e.ok("chain", "ls", "--json")); out != "[]" {
		t.Errorf("the interrupted first snapshot left its chain: %s", out)
	}
	if names := listDir(t, filepath.Join(mnt, "chains")); len(names) != 0 {
		t.Errorf("chains/ after the interrupted snapshot: %v", names)
	}
	if log := e.daemonLog(); !strings.Contains(log, "snapshot.create failed") || !strings.Contains(log, "canceled") {
		t.Errorf("daemon log does not show the canceled snapshot:\n%s", log)
	}
	if out := e.ok("gc"); !strings.Contains(out, "rolled back 0 unfinished snapshots") {
		t.Errorf("gc after the interrupted snapshot: %q", out)
	}
	e.ok("snapshot", "create", "big", "--name", "after")
	checkHash(t, filepath.Join(mnt, "chains", "big", "after.img"), fileHash(t, img))
}

// waitLog waits until the daemon log says what, while cmd runs.
func waitLog(t *testing.T, e *env, what string, cmd *exec.Cmd) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.daemonLog(), what) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the daemon log does not say %q:\n%s", what, e.daemonLog())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDaemonSocket: the socket is private to the daemon's user, and a stale one a killed daemon left
// is replaced.
func TestDaemonSocket(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	img := e.path("d.img")
	makeImage(t, img, 1<<20)
	e.ok("volume", "add", "v", "--source", img)
	mnt := e.mount()
	sock := filepath.Join(e.store, daemonSockName)
	st, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a socket with 0600", sock, st.Mode())
	}
	pid := readPID(t, e.store)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitExit(pid, 10*time.Second) {
		t.Fatalf("daemon %d still running after SIGKILL", pid)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("a killed daemon's socket: %v, want it left behind", err)
	}
	// No daemon listens: commands run themselves.
	e.ok("snapshot", "create", "v", "--name", "local")
	if r := e.run("mount", mnt); r.code != 0 {
		t.Fatalf("mount over the stale mount and socket: %s\n%s", r, e.daemonLog())
	}
	e.ok("snapshot", "create", "v", "--name", "remote")
	checkHash(t, filepath.Join(mnt, "chains", "v", "remote.img"), fileHash(t, img))
	if n := strings.Count(e.daemonLog(), "rpc: uid 0: snapshot.create done"); n != 1 {
		t.Errorf("daemon log shows %d snapshots, want 1:\n%s", n, e.daemonLog())
	}
}

// readPID is the pid of the daemon serving store.
func readPID(t *testing.T, store string) int {
	t.Helper()
	var pid int
	b, err := os.ReadFile(filepath.Join(store, daemonPIDName))
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		pid, err = strconv.Atoi(f[0]) // "PID START DIR"
	}
	if err != nil || pid <= 0 {
		t.Fatalf("daemon pid: %q, %v", b, err)
	}
	return pid
}

// TestUnmountFinishesOperations: `snapfs umount` while the daemon restores a snapshot for a command
// and takes a snapshot started through a ctl file. Being unmounted is no reason to abandon either:
// both finish, the restore's command succeeds, and umount returns once the daemon has exited.
func TestUnmountFinishesOperations(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	img := snapshottedVolume(e, "big", 512<<20)
	want := fileHash(t, img)
	imageVolume(e, "other", 256<<20)
	mnt := e.mount()

	restored := e.path("restored.img")
	cmd, _, stderr := e.startBin("restore", "big/s1", "--to", restored)
	waitLog(t, e, "rpc: uid 0: restore started", cmd)
	if err := os.WriteFile(filepath.Join(mnt, "volumes", "other", "ctl"), []byte("snapshot first\n"), 0); err != nil {
		t.Fatal(err)
	}
	if r := e.run("umount", mnt); r.code != 0 {
		t.Fatalf("snapfs umount: %s", r)
	}
	if isMounted(mnt) {
		t.Fatalf("%s still mounted", mnt)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("restore running at the unmount: %v\n%s\ndaemon log:\n%s", err, stderr, e.daemonLog())
	}
	if got := fileHash(t, restored); got != want {
		t.Errorf("restore finished during the unmount reads wrong")
	}
	// The daemon is gone (a command opens the store itself), and the snapshot started through ctl
	// was finished, not rolled back.
	snaps := okJSON[[]chain.Snapshot](e, "snapshot", "ls", "other", "--json")
	if names := snapNames(snaps); !slices.Equal(names, []string{"first"}) {
		t.Errorf("snapshots of other: %v, want the ctl snapshot running at the unmount\ndaemon log:\n%s", names, e.daemonLog())
	}
	e.ok("verify")
}

// TestVolumeOnAnotherDisk: once a volume's image file is replaced by another file, snapshots and
// restores to its default target are refused with one clear line, on their own and through a
// daemon, until `snapshot create --new-disk` makes the new file the volume's disk.
func TestVolumeOnAnotherDisk(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	img := snapshottedVolume(e, "v", 1<<20)
	replacement := e.path("new.img")
	other := makeImage(t, replacement, 1<<20)
	if err := os.Rename(replacement, img); err != nil {
		t.Fatal(err)
	}
	const why = "another disk than volume v was added with"
	e.fails(1, why, "snapshot", "create", "v", "--name", "s2")
	e.fails(1, why, "restore", "v/s1")
	e.mount()
	e.fails(1, why, "snapshot", "create", "v", "--name", "s2")
	e.fails(1, why, "restore", "v/s1")
	if got, _ := os.ReadFile(img); !bytes.Equal(got, other) {
		t.Fatal("a refused restore changed the other disk")
	}
	e.ok("snapshot", "create", "v", "--name", "s2", "--new-disk")
	e.ok("snapshot", "create", "v", "--name", "s3")
	// Replaced again: restore --new-disk puts s1 onto it and adopts it.
	if err := os.WriteFile(replacement, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(replacement, img); err != nil {
		t.Fatal(err)
	}
	e.fails(1, "restore with --new-disk", "restore", "v/s1", "--force")
	e.ok("restore", "v/s1", "--new-disk")
	e.ok("snapshot", "create", "v", "--name", "s4")
	snaps := okJSON[[]chain.Snapshot](e, "snapshot", "ls", "v", "--json")
	if names := snapNames(snaps); !slices.Equal(names, []string{"s1", "s2", "s3", "s4"}) {
		t.Errorf("snapshots: %v", names)
	}
}

// snapshottedVolume makes an image of size random bytes, adds it as volume name and snapshots it as
// name/s1; it returns the image's path.
func snapshottedVolume(e *env, name string, size int) string {
	e.t.Helper()
	img := imageVolume(e, name, size)
	e.ok("snapshot", "create", name, "--name", "s1")
	return img
}

// imageVolume makes the image NAME.img of size random bytes in e's directory and adds it as volume
// name; it returns the image's path.
func imageVolume(e *env, name string, size int) string {
	e.t.Helper()
	img := e.path(name + ".img")
	makeImage(e.t, img, size)
	e.ok("volume", "add", name, "--source", img)
	return img
}
