package main

// Tests of promises the README makes that no other test checked: empty path flags are usage
// errors, umount refuses what is not a snapfs mount and recovers a killed daemon's mount, a restore
// or clone onto a full filesystem cleans up or says what it left, and a few outputs and defaults.

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapfs/snapfs/chain"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory name in the env's scratch directory
// and unmounts it when the test ends.
func (e *env) mountTmpfs(name string, size int64) string {
	e.t.Helper()
	dir := e.path(name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if out, err := runCmd("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10), "tmpfs", dir); err != nil {
		e.t.Fatalf("mount tmpfs on %s: %v: %s", dir, err, out)
	}
	e.t.Cleanup(func() {
		if isMounted(dir) {
			if err := syscall.Unmount(dir, 0); err != nil {
				syscall.Unmount(dir, syscall.MNT_DETACH)
			}
		}
	})
	return dir
}

// mountType is the filesystem type the mount table gives for the mount point dir, "" if none.
func mountType(dir string) string {
	mounts, _ := chain.MountTable()
	typ := ""
	for _, m := range mounts {
		if m.Dir == dir {
			typ = m.Type // the last one is the one on top
		}
	}
	return typ
}

// infoField is the value of key in a "key: value" info file.
func infoField(t *testing.T, path, key string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+": "); ok {
			return v
		}
	}
	t.Fatalf("%s has no %q line:\n%s", path, key, b)
	return ""
}

// TestPromiseEmptyPathFlags: an empty --to, --freeze or --instance (what "$UNSET" gives) is a usage
// error, never the flag's default: a restore --to "" that fell back to the volume's own disk would
// overwrite it. Nothing is written, created or snapshotted.
func TestPromiseEmptyPathFlags(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := snapshottedVolume(e, "v", 1<<20)
	// The disk differs from s1 now, so that a restore of s1 onto it would show.
	diskHash := scribble(t, img, 0, 300<<10)
	files := listDir(t, e.dir)
	before := e.state()

	for _, c := range []struct {
		want string
		args []string
	}{
		{"--to: empty path", []string{"restore", "v/s1", "--to", ""}},
		{"--to: empty path", []string{"restore", "v/s1", "--force", "--to="}},
		{"--to: empty path", []string{"clone", "v/s1", "--to", ""}},
		{"--to: empty path", []string{"clone", "v/s1", "--to", "", "--volume", "w"}},
		{"--freeze: want the mount point", []string{"snapshot", "create", "v", "--name", "s2", "--freeze", ""}},
		{"--instance: empty instance id", []string{"snapshot", "create", "--instance", "", "--name", "s2"}},
	} {
		e.fails(2, c.want, c.args...)
	}

	if got := fileHash(t, img); got != diskHash {
		t.Error("a refused restore --to \"\" changed the volume's disk")
	}
	if got := listDir(t, e.dir); !slices.Equal(got, files) {
		t.Errorf("files after the refused commands: %v, want %v", got, files)
	}
	if e.state() != before {
		t.Errorf("refused commands changed the store:\n%s\nwant:\n%s", e.state(), before)
	}
}

// TestPromiseUmountNotSnapfs: `snapfs umount` of another filesystem's mount point refuses, naming
// its type, and leaves it mounted.
func TestPromiseUmountNotSnapfs(t *testing.T) {
	needRoot(t)
	t.Parallel()
	e := newEnv(t)
	dir := e.mountTmpfs("other", 1<<20)
	marker := filepath.Join(dir, "kept")
	if err := os.WriteFile(marker, []byte("still here"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"umount", "unmount"} {
		e.fails(1, "umount "+dir+": not a snapfs mount (it is tmpfs)", cmd, dir)
		if typ := mountType(dir); typ != "tmpfs" {
			t.Fatalf("after snapfs %s of a tmpfs, %s is mounted as %q, want tmpfs", cmd, dir, typ)
		}
		if b, err := os.ReadFile(marker); err != nil || string(b) != "still here" {
			t.Fatalf("after snapfs %s of a tmpfs, its file reads %q, %v", cmd, b, err)
		}
	}
}

// TestPromiseRestoreOutOfSpace: a restore or clone onto a filesystem that runs out of space fails
// with exit 1 and says so; a file it was creating is removed, a volume it was to register is not,
// and an existing target is reported partly restored (and not cut to size). On its own and through a
// daemon.
func TestPromiseRestoreOutOfSpace(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	snapshottedVolume(e, "v", imageSize) // 4 MiB of random data: it does not compress
	small := e.mountTmpfs("small", 2<<20)
	const noSpace = "no space left on device"

	check := func(t *testing.T) {
		e := &env{t: t, dir: e.dir, store: e.store} // failures are the subtest's
		before := e.state()
		for _, c := range []struct {
			target string
			args   []string
		}{
			{"clone.img", []string{"clone", "v/s1"}},
			{"clonevol.img", []string{"clone", "v/s1", "--volume", "w"}},
			{"new.img", []string{"restore", "v/s1"}},
		} {
			target := filepath.Join(small, c.target)
			e.fails(1, noSpace, append(c.args, "--to", target)...)
			checkGone(t, target)
		}
		if left := listDir(t, small); len(left) != 0 {
			t.Errorf("failed clones and restores left %v on the full filesystem", left)
		}
		// Said of a restore or clone whose new file is removed:
		e.fails(1, "(the file it was creating is removed)", "restore", "v/s1", "--to", filepath.Join(small, "new.img"))
		e.fails(1, "(the file it was creating is removed)", "clone", "v/s1", "--to", filepath.Join(small, "clone.img"))

		// Existing sparse targets, which the tmpfs cannot fill: as large as the snapshot, and
		// larger (cut to the snapshot's size only once a restore succeeds).
		for _, size := range []int64{imageSize, imageSize + 2<<20} {
			target := filepath.Join(small, "existing.img")
			if err := os.WriteFile(target, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(target, size); err != nil {
				t.Fatal(err)
			}
			stderr := e.fails(1, target+" is partly restored: restore it again", "restore", "v/s1", "--to", target)
			if !strings.Contains(stderr, noSpace) {
				t.Errorf("restore onto %d-byte %s: stderr %q does not say %q", size, target, stderr, noSpace)
			}
			st, err := os.Stat(target)
			if err != nil {
				t.Fatalf("existing target after a failed restore: %v", err)
			}
			if st.Size() != size {
				t.Errorf("existing target of %d bytes is %d bytes after a failed restore", size, st.Size())
			}
			os.Remove(target)
		}
		if after := e.state(); after != before {
			t.Errorf("failed clones and restores changed the store:\n%s\nwant:\n%s", after, before)
		}
	}
	t.Run("alone", check)
	e.mount()
	t.Run("daemon", check)
	if n := strings.Count(e.daemonLog(), "rpc: uid 0: restore started"); n == 0 {
		t.Errorf("no restore went through the daemon:\n%s", e.daemonLog())
	}
}

// TestPromiseUmountKilledDaemon: `snapfs umount` of a mount whose daemon was killed outright
// detaches it and succeeds, quietly, also while a file on it was open when the daemon died (there is
// no daemon left to say it waits for); the directory can be mounted again.
func TestPromiseUmountKilledDaemon(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	snapshottedVolume(e, "v", 1<<20)
	mnt := e.mount()
	for _, held := range []bool{false, true} {
		if held {
			if r := e.run("mount", mnt); r.code != 0 {
				t.Fatalf("mount after the umount: %s\n%s", r, e.daemonLog())
			}
			f, err := os.Open(filepath.Join(mnt, "chains", "v", "s1.img"))
			if err != nil {
				t.Fatalf("mounted again: %v", err)
			}
			defer f.Close()
		}
		pid := readPID(t, e.store)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if !waitExit(pid, 10*time.Second) {
			t.Fatalf("daemon %d still running after SIGKILL", pid)
		}
		if !isMounted(mnt) {
			t.Fatalf("%s not mounted after its daemon was killed: the test shows nothing", mnt)
		}
		if r := e.run("umount", mnt); r.code != 0 || r.stdout != "" || r.stderr != "" {
			t.Errorf("snapfs umount of a killed daemon's mount (a file open on it: %v): %s, want exit 0 and no output", held, r)
		}
		if isMounted(mnt) {
			t.Errorf("%s still mounted after snapfs umount of a killed daemon's mount (a file open on it: %v)", mnt, held)
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	}
}

// TestPromiseUnmountAlias: `snapfs unmount` is `snapfs umount`: it unmounts and returns once the
// daemon has exited.
func TestPromiseUnmountAlias(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	snapshottedVolume(e, "v", 1<<20)
	mnt := e.mount()
	pid := readPID(t, e.store)
	if r := e.run("unmount", mnt); r.code != 0 || r.stdout != "" {
		t.Fatalf("snapfs unmount: %s", r)
	}
	if isMounted(mnt) {
		t.Fatalf("%s still mounted after snapfs unmount", mnt)
	}
	if alive(pid) {
		t.Errorf("daemon %d still running when snapfs unmount returned", pid)
	}
	e.fails(1, "umount "+mnt+": not mounted", "unmount", mnt)
}

// TestPromiseDeleteWarning: a delete that committed but could not return the freed space (the pack
// files are immutable) succeeds: exit 0, its line on stdout, the warning on stderr alone.
func TestPromiseDeleteWarning(t *testing.T) {
	needRoot(t)
	t.Parallel()
	e := newEnv(t)
	img := imageVolume(e, "v", 1<<20)
	sums := map[string]string{}
	for _, name := range []string{"s1", "s2", "s3"} {
		writeRandom(t, img, 0, 1<<20) // the same file: the volume's disk
		sums[name] = fileHash(t, img)
		e.ok("snapshot", "create", "v", "--name", name)
	}
	packs, _ := filepath.Glob(filepath.Join(e.store, "packs", "*.pack"))
	if len(packs) == 0 {
		t.Fatal("no pack files in the store")
	}
	if out, err := runCmd("chattr", append([]string{"+i"}, packs...)...); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chattr +i: %v %s (CI=true: end-to-end tests must run)", err, out)
		}
		t.Skipf("chattr +i (the filesystem under the test's directory may not take it): %v %s", err, out)
	}
	t.Cleanup(func() { runCmd("chattr", append([]string{"-i"}, packs...)...) })

	r := e.run("snapshot", "delete", "v/s2")
	if r.code != 0 {
		t.Fatalf("delete whose space cannot be returned: %s, want exit 0 (it committed)", r)
	}
	if !strings.HasPrefix(r.stdout, "deleted v/s2 (id 2): freed ") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("snapshot delete stdout %q, want its one \"deleted\" line", r.stdout)
	}
	const warning = "snapfs: snapshot delete v/s2: committed, but returning the freed space failed (snapfs gc returns it): "
	if !strings.HasPrefix(r.stderr, warning) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("snapshot delete stderr %q, want one line starting %q", r.stderr, warning)
	}

	runCmd("chattr", append([]string{"-i"}, packs...)...)
	snaps := okJSON[[]chain.Snapshot](e, "snapshot", "ls", "v", "--json")
	if names := snapNames(snaps); !slices.Equal(names, []string{"s1", "s3"}) {
		t.Errorf("snapshots after the delete: %v", names)
	}
	if out := e.ok("gc"); !strings.Contains(out, "reclaimed ") || strings.Contains(out, "reclaimed 0 B") {
		t.Errorf("gc after the delete: %q, want the space the delete could not return", out)
	}
	e.ok("verify")
	for _, name := range []string{"s1", "s3"} {
		restored := e.path(name + ".restored")
		e.ok("restore", "v/"+name, "--to", restored)
		checkHash(t, restored, sums[name])
	}
}

// TestPromiseVolumeAddOutput: `volume add` prints one line: name, absolute source, size and chunk
// size; without --chunk-size the chunk size is 64 KiB, 65536 bytes in JSON (volume and chain).
func TestPromiseVolumeAddOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.path("d.img")
	makeImage(t, img, 3<<20)
	// A relative --source, from the scratch directory: the line gives the absolute path.
	cmd := exec.Command(snapfsBin, "--store", e.store, "volume", "add", "d", "--source", "d.img")
	cmd.Dir = e.dir
	if out, err := cmd.Output(); err != nil || string(out) != "added volume d: "+img+", 3.0 MiB, chunk size 64.0 KiB\n" {
		t.Errorf("volume add printed %q, %v", out, err)
	}
	big := e.path("big.img")
	makeImage(t, big, 1<<20)
	if out := e.ok("volume", "add", "big", "--source", big, "--chunk-size", "1M"); out != "added volume big: "+big+", 1.0 MiB, chunk size 1.0 MiB\n" {
		t.Errorf("volume add --chunk-size 1M printed %q", out)
	}
	e.ok("snapshot", "create", "d", "--name", "s1")

	chunkSizes := func(args ...string) map[string]json.Number {
		t.Helper()
		d := json.NewDecoder(bytes.NewReader([]byte(e.ok(args...))))
		d.UseNumber()
		var rows []map[string]any
		if err := d.Decode(&rows); err != nil {
			t.Fatalf("snapfs %s: %v", strings.Join(args, " "), err)
		}
		out := map[string]json.Number{}
		for _, r := range rows {
			n, _ := r["chunk_size"].(json.Number)
			out[r["name"].(string)] = n
		}
		return out
	}
	if got := chunkSizes("volume", "ls", "--json"); got["d"] != "65536" || got["big"] != "1048576" {
		t.Errorf("volume ls --json chunk sizes %v, want d 65536 (the default) and big 1048576", got)
	}
	if got := chunkSizes("chain", "ls", "--json"); got["d"] != "65536" {
		t.Errorf("chain ls --json chunk sizes %v, want d 65536 (the default)", got)
	}
}

// TestPromiseChainCapacityGrows: chains/CHAIN/info gives the capacity of the newest snapshot: not
// the disk's size until a snapshot has read it, the grown size once one has (not the largest: a
// disk shrunk again gives the smaller size), and the older sizes again as newer snapshots are
// deleted.
func TestPromiseChainCapacityGrows(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	img := snapshottedVolume(e, "v", 1<<20)
	mnt := e.mount()
	info := filepath.Join(mnt, "chains", "v", "info")
	capacity := func(when string, want int64) {
		t.Helper()
		if got := infoField(t, info, "capacity"); got != strconv.FormatInt(want, 10) {
			t.Errorf("capacity %s: %s, want %d", when, got, want)
		}
	}
	capacity("after the first snapshot", 1<<20)
	if err := os.Truncate(img, 3<<20); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, img, 2<<20+5000, 1000)
	capacity("once the disk grew, before a snapshot", 1<<20)
	e.ok("snapshot", "create", "v", "--name", "s2")
	capacity("after a snapshot of the grown disk", 3<<20)
	if st, err := os.Stat(filepath.Join(mnt, "chains", "v", "s2.img")); err != nil || st.Size() != 3<<20 {
		t.Errorf("s2.img: %v, %v, want 3 MiB", st, err)
	}
	if st, err := os.Stat(filepath.Join(mnt, "chains", "v", "s1.img")); err != nil || st.Size() != 1<<20 {
		t.Errorf("s1.img: %v, %v, want 1 MiB", st, err)
	}
	checkHash(t, filepath.Join(mnt, "chains", "v", "s2.img"), fileHash(t, img))
	// The newest, not the largest.
	if err := os.Truncate(img, 2<<20); err != nil {
		t.Fatal(err)
	}
	e.ok("snapshot", "create", "v", "--name", "s3")
	capacity("after a snapshot of the disk shrunk again", 2<<20)
	e.ok("snapshot", "delete", "v/s3")
	capacity("once the shrunk disk's snapshot is deleted", 3<<20)
	e.ok("snapshot", "delete", "v/s2")
	capacity("once the grown disk's snapshot is deleted", 1<<20)
}
