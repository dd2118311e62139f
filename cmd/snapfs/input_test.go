package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapfs/snapfs/chain"
)

// TestFailedVolumeAddLeavesNoStore: a volume add that fails for what its command line says (a source
// that is no disk, a bad instance or kind) creates no store.
func TestFailedVolumeAddLeavesNoStore(t *testing.T) {
	e := newEnv(t)
	img := e.path("d.img")
	makeImage(t, img, 1<<20)
	fifo := e.path("fifo")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"volume", "add", "x", "--source", e.dir}, 1, "is a directory"},
		{[]string{"volume", "add", "x", "--source", fifo}, 1, "source"},
		{[]string{"volume", "add", "x", "--source", img, "--instance", "bad/!"}, 1, "instance"},
		{[]string{"volume", "add", "bad/!", "--source", img}, 1, "volume add"},
	} {
		e.fails(tc.code, tc.want, tc.args...)
		if _, err := os.Stat(e.store); !os.IsNotExist(err) {
			t.Fatalf("%q left a store behind (%v)", tc.args, err)
		}
	}
	e.ok("volume", "add", "x", "--source", img)
}

// TestEmptyStoreFlag: an empty --store or $SNAPFS_STORE (an unset shell variable) is a usage error,
// not the default store.
func TestEmptyStoreFlag(t *testing.T) {
	for _, args := range [][]string{{"--store", "", "volume", "ls"}, {"--store=", "snapshot", "delete", "x/y"}} {
		r := runBin(t, args...)
		checkFailure(t, r, 2, "--store (or $SNAPFS_STORE) is empty", args)
	}
	r := runBinEnv(t, []string{"SNAPFS_STORE="}, "gc")
	checkFailure(t, r, 2, "--store (or $SNAPFS_STORE) is empty", []string{"gc"})
	// Help needs no store: it still works, for the usage the message points to.
	for _, args := range [][]string{{"help"}, {"snapshot", "delete", "--help"}, {"--help"}} {
		if r := runBinEnv(t, []string{"SNAPFS_STORE="}, args...); r.code != 0 || r.stdout == "" {
			t.Errorf("%q with an empty $SNAPFS_STORE: %s", args, r)
		}
	}
}

// TestLostOutputFails: a command whose output cannot be written (a full disk) fails, naming itself,
// also when it did its work.
func TestLostOutputFails(t *testing.T) {
	e := newEnv(t)
	img := e.path("d.img")
	makeImage(t, img, 1<<20)
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	for _, args := range [][]string{
		{"volume", "add", "d", "--source", img},
		{"snapshot", "create", "d", "--name", "s1"},
		{"snapshot", "create", "d", "--name", "s2", "--json"},
		{"snapshot", "ls"},
		{"snapshot", "show", "d/s1", "--json"},
		{"gc"},
	} {
		cmd := exec.Command(snapfsBin, append([]string{"--store", e.store}, args...)...)
		cmd.Stdout = full
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		want := "snapfs: " + strings.Join(args[:min(2, len(args))], " ")
		if args[0] == "gc" {
			want = "snapfs: gc"
		}
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.HasPrefix(stderr.String(), want) ||
			!strings.Contains(stderr.String(), "it was done, but its output was lost: write output: ") {
			t.Errorf("%q with output to /dev/full: exit %d (%v), stderr %q; want 1 and %q…it was done, but its output was lost",
				args, code, err, stderr.String(), want)
		}
	}
	if snaps := okJSON[[]chain.Snapshot](e, "snapshot", "ls", "--json"); len(snaps) != 2 {
		t.Errorf("snapshots: %+v, want the two made with their output lost", snaps)
	}
}

// TestMountApartFromStore: a mount point that is the store, holds it, lies in it or holds another
// store is refused before anything is mounted.
func TestMountApartFromStore(t *testing.T) {
	e := newEnv(t)
	imageVolume(e, "d", 1<<20)
	other := e.path("other")
	runBin(t, "--store", other, "init")
	link := e.path("link")
	if err := os.Symlink(e.store, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{e.store, "is the store directory"},
		{link, "is the store directory"},
		{e.dir, "holds the store"},
		{filepath.Join(e.store, "packs"), "is inside the store"},
		{other, "holds a snapfs store"},
	} {
		e.fails(1, tc.want, "mount", tc.dir)
		if isMounted(tc.dir) {
			t.Fatalf("%s mounted", tc.dir)
		}
	}
}

// TestStoreThatIsAFile: a store path naming a file says so, and writes nothing.
func TestStoreThatIsAFile(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(e.store, []byte("not a store"), 0o600); err != nil {
		t.Fatal(err)
	}
	img := e.path("d.img")
	makeImage(t, img, 1<<20)
	for _, args := range [][]string{{"volume", "ls"}, {"snapshot", "create", "d"}, {"volume", "add", "d", "--source", img},
		{"mount", e.path("mnt")}} {
		e.fails(1, "open store "+e.store+": not a directory", args...)
	}
	if _, err := os.Stat(e.path("mnt")); !os.IsNotExist(err) {
		t.Errorf("mount point made: %v", err)
	}
}

// TestWaitGoneStopsOnCancel: umount's wait for a daemon finishing its operations ends when the
// command is interrupted, saying so, instead of ignoring Ctrl-C.
func TestWaitGoneStopsOnCancel(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if waitGone(ctx, cmd.Process.Pid) {
		t.Fatal("waitGone says a running process is gone")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !waitGone(context.Background(), cmd.Process.Pid) {
		t.Fatal("waitGone says an exited process is alive")
	}
}

// TestRequestLen: a request longer than the daemon reads is refused by the client with a message,
// not cut off (which the daemon took for a broken request).
func TestRequestLen(t *testing.T) {
	if err := checkRequestLen(maxRequest - 1); err != nil {
		t.Errorf("longest request: %v", err)
	}
	if err := checkRequestLen(maxRequest); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("request of maxRequest bytes: %v", err)
	}
}

// TestMountThroughSymlinkAndLocalTimes: a mount point named through a symbolic link is mounted and
// unmounted under either name; and a daemon in another time zone than its client does not change
// the times the client prints: they are the client's, as when it runs on its own.
func TestMountThroughSymlinkAndLocalTimes(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	if _, err := time.LoadLocation("Asia/Tokyo"); err != nil {
		t.Fatalf("no time zone data (the tzdata package): %v", err)
	}
	e := newEnv(t)
	imageVolume(e, "d", 1<<20)
	mnt, link := e.path("mnt"), e.path("link")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(mnt, link); err != nil {
		t.Fatal(err)
	}
	if r := runBinEnv(t, []string{"TZ=UTC"}, "--store", e.store, "mount", link); r.code != 0 {
		t.Fatalf("mount through a link: %s\n%s", r, e.daemonLog())
	}
	t.Cleanup(func() { e.unmount(mnt) })
	if !isMounted(mnt) {
		t.Fatalf("%s is not mounted", mnt)
	}

	tokyo := []string{"TZ=Asia/Tokyo"}
	r := runBinEnv(t, tokyo, "--store", e.store, "snapshot", "create", "d", "--name", "s1", "--json")
	var made, shown struct{ Created string }
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &made) != nil {
		t.Fatalf("forwarded snapshot create: %s", r)
	}
	r = runBinEnv(t, tokyo, "--store", e.store, "snapshot", "show", "d/s1", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &shown) != nil {
		t.Fatalf("snapshot show: %s", r)
	}
	if !strings.HasSuffix(made.Created, "+09:00") || made.Created != shown.Created {
		t.Errorf("created: %q through the daemon, %q shown on its own; want both in the client's zone", made.Created, shown.Created)
	}
	// A default name holds the client's date and time too.
	r = runBinEnv(t, tokyo, "--store", e.store, "snapshot", "create", "d", "--json")
	var named struct {
		Name    string
		Created time.Time
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &named) != nil {
		t.Fatalf("forwarded snapshot create with a default name: %s", r)
	}
	tokyoZone, _ := time.LoadLocation("Asia/Tokyo")
	if want := "d-" + named.Created.In(tokyoZone).Format("20060102-150405"); named.Name != want {
		t.Errorf("default name through a daemon in UTC: %q, want %q (the client's time)", named.Name, want)
	}

	if r := e.run("umount", link); r.code != 0 || isMounted(mnt) {
		t.Errorf("umount through the link: %s (still mounted: %v)", r, isMounted(mnt))
	}
}

// TestStoreFilesAreNoVolumes: a file of the store is not a disk to add: snapshotting a pack into
// itself, or restoring over it, would destroy every chunk in it.
func TestStoreFilesAreNoVolumes(t *testing.T) {
	e := newEnv(t)
	imageVolume(e, "d", 1<<20)
	e.ok("snapshot", "create", "d", "--name", "s1")
	packs, err := filepath.Glob(filepath.Join(e.store, "packs", "*.pack"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("no pack: %v", err)
	}
	before := e.state()
	for _, src := range []string{packs[0], filepath.Join(e.store, "reserve")} {
		e.fails(1, "inside the store", "volume", "add", "x", "--source", src)
		e.fails(1, "inside the store", "restore", "d/s1", "--to", src)
	}
	if e.state() != before {
		t.Error("a refused command changed the store")
	}
	e.ok("verify")
}

// TestReadReadyInterrupted: mount's wait for its daemon ends at once when the command is
// interrupted, also when the interrupt came before the wait began (its deadline must not undo the
// interrupt's).
func TestReadReadyInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 40 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		_, err = readReady(ctx, r, 10*time.Second)
		r.Close()
		w.Close()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("wait %d, interrupted before it began: %v, want %v", i, err, context.Canceled)
		}
	}
}

// TestDaemonRefusesRelativePaths: the daemon takes only absolute paths in a request (the client
// makes them so); a relative one, in a request made by hand, would name a file under the daemon's
// working directory and is refused.
func TestDaemonRefusesRelativePaths(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	snapshottedVolume(e, "v", 1<<20)
	e.mount()
	for _, req := range []string{
		`{"kind":"restore","args":{"refs":["v/s1"],"to":"snapfs-relative-target.img"}}`,
		`{"kind":"volume.add","args":{"volume":"w","source":"x.img"}}`,
		`{"kind":"snapshot.create","args":{"volume":"v","freeze":"mnt"}}`,
	} {
		conn, err := net.Dial("unix", filepath.Join(e.store, daemonSockName))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte(req + "\n")); err != nil {
			t.Fatal(err)
		}
		var msg rpcMessage
		err = json.NewDecoder(conn).Decode(&msg)
		conn.Close()
		if err != nil || msg.Error == nil || !strings.Contains(msg.Error.Message, "relative path") {
			t.Errorf("request %s: %+v, %v; want refused for its relative path", req, msg, err)
		}
	}
	if _, err := os.Stat("/snapfs-relative-target.img"); !os.IsNotExist(err) {
		t.Errorf("a file was made under the daemon's working directory: %v", err)
	}
}

// TestVolumesNamedHelp: h and help are valid volume names, and every command taking one does its
// work on it rather than print help and exit 0 (urfave/cli's "help" subcommand, alias "h"); --help
// and -h still print help.
func TestVolumesNamedHelp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, name := range []string{"h", "help"} {
		makeImage(t, e.path(name+".img"), 1<<20)
		if out := e.ok("volume", "add", name, "--source", e.path(name+".img")); !strings.Contains(out, "added volume "+name) {
			t.Errorf("volume add %s: %q", name, out)
		}
		if out := e.ok("snapshot", "create", name, "--name", "s1"); strings.TrimSpace(out) != name+"/s1" {
			t.Errorf("snapshot create %s: %q", name, out)
		}
		if out := e.ok("snapshot", "ls", name); !strings.Contains(out, "s1") {
			t.Errorf("snapshot ls %s: %q", name, out)
		}
		if out := e.ok("chain", "show", name); !strings.Contains(out, "s1") {
			t.Errorf("chain show %s: %q", name, out)
		}
		e.ok("snapshot", "delete", name+"/s1")
		e.ok("volume", "rm", name)
		if out := e.ok("volume", "ls"); strings.Contains(out, e.path(name+".img")) {
			t.Errorf("volume rm %s left it: %q", name, out)
		}
	}
	for _, flag := range []string{"--help", "-h"} {
		if out := e.ok("snapshot", "create", flag); !strings.Contains(out, "USAGE") {
			t.Errorf("snapshot create %s: %q, want help", flag, out)
		}
	}
}

// TestUmountOfAnotherStoresMount: `--store A umount DIR` where DIR serves store B is refused, and B
// stays mounted; given B (by --store, $SNAPFS_STORE or a link to it), or no store, it unmounts.
func TestUmountOfAnotherStoresMount(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.ok("init")
	mnt := e.mount()
	other := newEnv(t)
	other.ok("init")
	r := runBin(t, "--store", other.store, "umount", mnt)
	checkFailure(t, r, 1, "umount "+mnt+": it serves the store "+e.store+", not "+other.store, []string{"umount", mnt})
	r = runBinEnv(t, []string{"SNAPFS_STORE=" + other.store}, "umount", mnt)
	checkFailure(t, r, 1, "it serves the store "+e.store, []string{"umount", mnt})
	if !isMounted(mnt) {
		t.Fatalf("%s unmounted by a umount given another store", mnt)
	}
	link := e.path("store-link")
	if err := os.Symlink(e.store, link); err != nil {
		t.Fatal(err)
	}
	if r := runBin(t, "--store", link, "umount", mnt); r.code != 0 {
		t.Fatalf("umount given a link to its store: %s", r)
	}
	if isMounted(mnt) {
		t.Errorf("%s still mounted", mnt)
	}
}

// TestTableCellsEscaped: a source path holding a newline, a tab or an escape sequence shows quoted
// in `volume ls`, on its own row, rather than breaking the table or reaching the terminal.
func TestTableCellsEscaped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src := e.path("a\nb\tc\x1b[2J.img")
	makeImage(t, src, 1<<20)
	e.ok("volume", "add", "odd", "--source", src)
	out := e.ok("volume", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], strconv.Quote(src)) || strings.Contains(out, "\x1b") {
		t.Errorf("volume ls with an odd source path:\n%s\nwant a header and one row holding %s", out, strconv.Quote(src))
	}
}
