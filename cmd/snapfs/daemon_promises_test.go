package main

// Tests of promises the README makes about the mount daemon and the output of commands that no other
// test checked: `mount --foreground` as a service manager runs it, SIGTERM to the daemon cancelling
// a forwarded restore, progress bars on a terminal only (and never with --json), and the columns and
// rows of the tables, cell by cell against --json in the client's time zone.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapfs/snapfs/chain"
)

// foreground is a `snapfs mount --foreground DIR` run as a child of the test, as a systemd unit runs
// it: its log goes to its stderr, which is a file here (read while it runs).
type foreground struct {
	cmd  *exec.Cmd
	log  string // path of the file its stderr goes to
	done chan struct{}
}

// startForeground starts `snapfs mount --foreground arg` in e's directory, where arg names the
// directory dir, and waits until dir is mounted. It stops the process and frees dir when the test
// ends, whatever happened.
func (e *env) startForeground(dir, arg, logName string) *foreground {
	e.t.Helper()
	logf, err := os.Create(e.path(logName))
	if err != nil {
		e.t.Fatal(err)
	}
	defer logf.Close()
	f := &foreground{log: logf.Name(), done: make(chan struct{})}
	f.cmd = exec.Command(snapfsBin, "--store", e.store, "mount", "--foreground", arg)
	f.cmd.Dir = e.dir
	f.cmd.Stdout, f.cmd.Stderr = logf, logf
	if err := f.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		f.cmd.Wait()
		close(f.done)
	}()
	e.t.Cleanup(func() {
		if !f.exited(0) {
			f.cmd.Process.Signal(syscall.SIGTERM)
			if !f.exited(10 * time.Second) {
				f.cmd.Process.Kill()
				<-f.done
			}
		}
		if isMounted(dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); !isMounted(dir); time.Sleep(5 * time.Millisecond) {
		if f.exited(0) {
			e.t.Fatalf("mount --foreground exited (%s) before %s was mounted:\n%s", f.cmd.ProcessState, dir, f.output())
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not mounted 30 s after mount --foreground started:\n%s", dir, f.output())
		}
	}
	return f
}

// exited reports whether the process has exited, waiting up to d for it.
func (f *foreground) exited(d time.Duration) bool {
	if d == 0 {
		select {
		case <-f.done:
			return true
		default:
			return false
		}
	}
	select {
	case <-f.done:
		return true
	case <-time.After(d):
		return false
	}
}

// checkEnded checks that the process exits within d of what ended it (after), with status 0, having
// unmounted mnt and said each of logged on its stderr.
func (f *foreground) checkEnded(t *testing.T, after string, d time.Duration, mnt string, logged ...string) {
	t.Helper()
	if !f.exited(d) {
		t.Fatalf("mount --foreground still running %s after %s:\n%s", d, after, f.output())
	}
	if code := f.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("mount --foreground exited %d after %s, want 0 (%s):\n%s", code, after, f.cmd.ProcessState, f.output())
	}
	if isMounted(mnt) {
		t.Errorf("%s still mounted after %s to mount --foreground", mnt, after)
	}
	log := f.output()
	for _, want := range logged {
		if !strings.Contains(log, want) {
			t.Errorf("stderr of mount --foreground does not say %q:\n%s", want, log)
		}
	}
}

// output is what the process wrote so far.
func (f *foreground) output() string {
	b, _ := os.ReadFile(f.log)
	return string(b)
}

// TestDaemonPromiseForegroundMount: `snapfs mount --foreground DIR` (what a systemd unit runs) serves
// DIR from the process itself, logging to its stderr; commands on the store go through it; `snapfs
// umount DIR` ends it with exit 0, and so does SIGTERM, which unmounts first ("serve from this
// process until unmounted or signalled"; the README's exit codes: 0 is success). Either way the
// store is free for the next command.
func TestDaemonPromiseForegroundMount(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	img := imageVolume(e, "v", 4<<20)
	mnt := e.path("mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}

	t.Run("umount", func(t *testing.T) {
		e := &env{t: t, dir: e.dir, store: e.store}
		fg := e.startForeground(mnt, mnt, "fg1.log")
		if out := strings.TrimSpace(e.ok("snapshot", "create", "v", "--name", "fg")); out != "v/fg" {
			t.Errorf("forwarded snapshot create printed %q, want v/fg", out)
		}
		if log := fg.output(); !strings.Contains(log, "rpc: uid 0: snapshot.create done") {
			t.Errorf("the foreground process did not run the snapshot (not forwarded?); its stderr:\n%s", log)
		}
		if names := snapNames(okJSON[[]chain.Snapshot](e, "snapshot", "ls", "v", "--json")); !slices.Equal(names, []string{"fg"}) {
			t.Errorf("snapshot ls v after the forwarded snapshot: %v, want [fg]", names)
		}
		checkHash(t, filepath.Join(mnt, "chains", "v", "fg.img"), fileHash(t, img))
		pid := fg.cmd.Process.Pid
		if r := e.run("umount", mnt); r.code != 0 {
			t.Fatalf("snapfs umount of a --foreground mount: %s\nits stderr:\n%s", r, fg.output())
		}
		// umount returns once the process serving the mount has exited.
		if alive(pid) {
			t.Errorf("snapfs umount returned while mount --foreground (pid %d) still runs", pid)
		}
		fg.checkEnded(t, "snapfs umount", 10*time.Second, mnt, "serving "+e.store+" at "+mnt, "unmounted "+mnt)
	})

	t.Run("SIGTERM", func(t *testing.T) {
		e := &env{t: t, dir: e.dir, store: e.store}
		fg := e.startForeground(mnt, mnt, "fg2.log")
		// The mount serves the store, and runs what commands forward to it.
		checkHash(t, filepath.Join(mnt, "chains", "v", "fg.img"), fileHash(t, img))
		e.ok("snapshot", "create", "v", "--name", "fg2")
		if err := fg.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		fg.checkEnded(t, "SIGTERM", 30*time.Second, mnt, "rpc: uid 0: snapshot.create done", "terminated: unmounting "+mnt, "unmounted "+mnt)
		// The store's lock is free: a command runs on its own, and finds both snapshots.
		e.ok("snapshot", "create", "v", "--name", "after")
		if names := snapNames(okJSON[[]chain.Snapshot](e, "snapshot", "ls", "v", "--json")); !slices.Equal(names, []string{"fg", "fg2", "after"}) {
			t.Errorf("snapshot ls v after the foreground mount ended: %v", names)
		}
		e.ok("verify")
	})

	// umount waits while the daemon finishes a forwarded restore, however DIR was named when the
	// process was started (a unit's ExecStart= may name it relative to WorkingDirectory=, or by a
	// link): the pid file names the daemon by its pid, start time and mount point as the mount
	// table spells it, not by its command line.
	big := imageVolume(e, "big", 128<<20)
	e.ok("snapshot", "create", "big", "--name", "s1")
	if err := os.Symlink(mnt, e.path("link")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, arg string }{{"absolute", mnt}, {"relative", "mnt"}, {"link", "link"}} {
		t.Run("umount waits/"+c.name, func(t *testing.T) {
			e := &env{t: t, dir: e.dir, store: e.store}
			fg := e.startForeground(mnt, c.arg, "fg-"+c.name+".log")
			restored := e.path("restored-" + c.name + ".img")
			cmd, _, stderr := e.startBin("restore", "big/s1", "--to", restored)
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(fg.output(), "rpc: uid 0: restore started"); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("the foreground mount did not start the restore:\n%s", fg.output())
				}
			}
			pid := fg.cmd.Process.Pid
			r := e.run("umount", mnt)
			busy := alive(pid)
			if err := cmd.Wait(); err != nil {
				t.Errorf("restore running at the unmount: %v\n%s", err, stderr)
			} else {
				checkHash(t, restored, fileHash(t, big))
			}
			if r.code != 0 {
				t.Errorf("snapfs umount: %s", r)
			}
			if busy {
				t.Errorf("snapfs umount %s returned (exit %d) while mount --foreground %s (pid %d) was still finishing the restore",
					mnt, r.code, c.arg, pid)
			}
			if !fg.exited(30 * time.Second) {
				t.Fatalf("mount --foreground still running 30 s after snapfs umount:\n%s", fg.output())
			}
			if code := fg.cmd.ProcessState.ExitCode(); code != 0 || isMounted(mnt) {
				t.Errorf("mount --foreground exited %d after snapfs umount, want 0; still mounted: %v\n%s", code, isMounted(mnt), fg.output())
			}
			os.Remove(restored)
		})
	}
}

// TestDaemonPromiseSIGTERMCancelsForwardedRestore: "SIGTERM to the daemon unmounts and cancels" the
// operations it runs for commands. A restore to a new file that the daemon runs is cancelled: the
// command fails (exit 1, one line, saying it was canceled), the file it was creating is gone, the
// daemon exits and leaves nothing mounted, and the store verifies clean.
func TestDaemonPromiseSIGTERMCancelsForwardedRestore(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	snapshottedVolume(e, "big", 256<<20)
	mnt := e.mount()
	target := e.path("new.img")

	args := []string{"restore", "big/s1", "--to", target}
	cmd, _, stderr := e.startBin(args...)
	waitLog(t, e, "rpc: uid 0: restore started", cmd)
	pid := readPID(t, e.store)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	r := result{stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	if err == nil {
		t.Fatalf("the restore was done before SIGTERM reached the daemon\ndaemon log:\n%s", e.daemonLog())
	}
	checkFailure(t, r, 1, "restore big/s1: ", args)
	// The signal cancels at once: before the restore made its file (nothing to remove), or after
	// (the file it was creating is removed, and it says so).
	if !strings.Contains(r.stderr, "canceled") {
		t.Errorf("stderr %q does not say the restore was canceled", r.stderr)
	}
	checkGone(t, target)
	if !waitExit(pid, 30*time.Second) {
		t.Fatalf("daemon %d still running 30 s after SIGTERM\ndaemon log:\n%s", pid, e.daemonLog())
	}
	if isMounted(mnt) {
		t.Errorf("%s still mounted after SIGTERM to its daemon", mnt)
	}
	if log := e.daemonLog(); !strings.Contains(log, "rpc: uid 0: restore failed") || !strings.Contains(log, "unmounted "+mnt) {
		t.Errorf("daemon log does not show the cancelled restore and the unmount:\n%s", log)
	}
	// The daemon is gone: verify opens the store itself.
	if out := e.ok("verify"); !strings.Contains(out, "verified") {
		t.Errorf("verify after the cancelled restore: %q", out)
	}
}

// TestDaemonPromiseCancelledRestoreRemovesItsFile: a forwarded restore to a new file that is cancelled
// as soon as the file exists fails and removes that file ("A restore or clone that fails
// (interrupted, ...) removes the file it was creating"), each of 20 times. The command is
// interrupted (SIGINT, which closes its connection and cancels the op in the daemon at once) as soon
// as the target appears, to reach the early part of the restore that a SIGTERM to the daemon, which
// unmounts before it cancels, reaches only now and then (a restore cancelled before it wrote a
// byte left its new file behind).
func TestDaemonPromiseCancelledRestoreRemovesItsFile(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	snapshottedVolume(e, "big", 256<<20)
	e.mount()
	target := e.path("new.img")
	const rounds = 20
	interrupted := 0
	for i := range rounds {
		args := []string{"restore", "big/s1", "--to", target}
		cmd, _, stderr := e.startBin(args...)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var err error
	wait:
		for deadline := time.Now().Add(30 * time.Second); ; {
			select {
			case err = <-exited:
				break wait
			default:
			}
			if _, serr := os.Lstat(target); serr == nil {
				cmd.Process.Signal(syscall.SIGINT)
				err = <-exited
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exited
				t.Fatalf("round %d: %s not created 30 s after the restore started\ndaemon log:\n%s", i, target, e.daemonLog())
			}
			time.Sleep(100 * time.Microsecond) // the window looked for lasts milliseconds
		}
		if err == nil {
			os.Remove(target) // finished before the interrupt: nothing to check
			continue
		}
		interrupted++
		r := result{stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
		checkFailure(t, r, 1, "restore big/s1: ", args)
		if !strings.Contains(r.stderr, "canceled") {
			t.Errorf("round %d: stderr %q does not say the restore was canceled", i, r.stderr)
		}
		if _, serr := os.Lstat(target); serr == nil {
			os.Remove(target)
			t.Fatalf("round %d: the interrupted restore left the file it was creating; it said %q", i, r.stderr)
		}
	}
	if interrupted == 0 {
		t.Fatalf("all %d restores finished before the interrupt", rounds)
	}
	t.Logf("%d of %d restores interrupted", interrupted, rounds)
	if out := e.ok("verify"); !strings.Contains(out, "verified") {
		t.Errorf("verify after the interrupted restores: %q", out)
	}
}

// needScript fails (in CI) or skips the test when script(1), which runs a command on a
// pseudo-terminal, is missing.
func needScript(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no script(1) to run commands on a terminal")
		}
		t.Skip("no script(1) to run commands on a terminal")
	}
}

// onTerminal runs `sh -c shell` on a pseudo-terminal (script -qec) and returns what the terminal
// showed. The terminal turns each "\n" into "\r\n".
func onTerminal(t *testing.T, shell string) string {
	t.Helper()
	out, err := exec.Command("script", "-qec", shell, "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("on a terminal: %s: %v\n%q", shell, err, out)
	}
	return string(out)
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// shellLine is the sh command line that runs snapfs on e's store with args.
func (e *env) shellLine(args ...string) string {
	words := []string{shellQuote(snapfsBin), "--store", shellQuote(e.store)}
	for _, a := range args {
		words = append(words, shellQuote(a))
	}
	return strings.Join(words, " ")
}

// bareCR reports whether s holds a carriage return that is not a terminal's line end: what a
// progress bar redraws its line with.
func bareCR(s string) bool { return strings.Contains(strings.ReplaceAll(s, "\r\n", "\n"), "\r") }

// TestOutputPromiseProgressBars: snapshot create, restore and clone draw a progress bar on a
// terminal (stderr), never with --json (whose stdout stays one JSON document), and never when
// stderr is not a terminal.
func TestOutputPromiseProgressBars(t *testing.T) {
	needScript(t)
	t.Parallel()
	e := newEnv(t)
	img := imageVolume(e, "p", 32<<20)

	bar := func(desc string) *regexp.Regexp { return regexp.MustCompile(`\r` + desc + `\s+\d{1,3}%`) }
	for _, c := range []struct {
		args []string
		desc string
		out  string // what stdout says
	}{
		{[]string{"snapshot", "create", "p", "--name", "a"}, "snapshot", "p/a"},
		{[]string{"restore", "p/a", "--to", e.path("restored.img")}, "restore", "restored p/a to " + e.path("restored.img")},
		{[]string{"clone", "p/a", "--to", e.path("clone.img")}, "clone", e.path("clone.img")},
	} {
		out := onTerminal(t, e.shellLine(c.args...))
		if !bar(c.desc).MatchString(out) {
			t.Errorf("%s on a terminal draws no progress bar (\\r%s ... %%): %q", strings.Join(c.args, " "), c.desc, out)
		}
		if !strings.Contains(out, c.out) {
			t.Errorf("%s on a terminal does not print %q: %q", strings.Join(c.args, " "), c.out, out)
		}
	}
	checkHash(t, e.path("restored.img"), fileHash(t, img))
	checkHash(t, e.path("clone.img"), fileHash(t, img))

	// --json on a terminal: what the terminal shows is the JSON alone.
	out := onTerminal(t, e.shellLine("snapshot", "create", "p", "--name", "j1", "--json"))
	if bareCR(out) || strings.Contains(out, "%") {
		t.Errorf("snapshot create --json on a terminal draws a progress bar: %q", out)
	}
	var s chain.Snapshot
	if err := json.Unmarshal([]byte(strings.ReplaceAll(out, "\r\n", "\n")), &s); err != nil || s.Ref() != "p/j1" {
		t.Errorf("snapshot create --json on a terminal: not the new snapshot as JSON (%v): %q", err, out)
	}
	// --json with stdout in a file and stderr on the terminal: no bar there, and the file is JSON.
	jsonOut := e.path("j2.json")
	out = onTerminal(t, e.shellLine("snapshot", "create", "p", "--name", "j2", "--json")+" > "+shellQuote(jsonOut))
	if bareCR(out) || strings.Contains(out, "%") {
		t.Errorf("snapshot create --json draws a progress bar on stderr: %q", out)
	}
	if b, err := os.ReadFile(jsonOut); err != nil {
		t.Error(err)
	} else if err := json.Unmarshal(b, &s); err != nil || s.Ref() != "p/j2" || strings.Contains(string(b), "\r") {
		t.Errorf("snapshot create --json > file: not the new snapshot as JSON (%v): %q", err, b)
	}

	// stderr not a terminal (stdout still one): no bar, on either.
	errOut := e.path("stderr.txt")
	out = onTerminal(t, e.shellLine("snapshot", "create", "p", "--name", "e1")+" 2> "+shellQuote(errOut))
	if b, err := os.ReadFile(errOut); err != nil || len(b) != 0 || bareCR(out) || strings.Contains(out, "%") {
		t.Errorf("snapshot create with stderr in a file: terminal %q, stderr %q (%v); want no progress bar", out, b, err)
	}

	// Neither a terminal: no "\r" anywhere, nothing on stderr.
	for _, args := range [][]string{
		{"snapshot", "create", "p", "--name", "n1"},
		{"restore", "p/n1", "--to", e.path("restored2.img")},
		{"clone", "p/n1", "--to", e.path("clone2.img")},
	} {
		r := e.run(args...)
		if r.code != 0 || strings.Contains(r.stdout, "\r") || r.stderr != "" {
			t.Errorf("%s without a terminal: want exit 0, no \\r and nothing on stderr: %s", strings.Join(args, " "), r)
		}
	}
}

// tokyoEnv runs commands in the client's zone for TestOutputPromiseTables.
var tokyoEnv = []string{"TZ=Asia/Tokyo"}

// tokyo runs snapfs on e's store in Asia/Tokyo and fails the test unless it succeeds.
func (e *env) tokyo(args ...string) string {
	e.t.Helper()
	r := runBinEnv(e.t, tokyoEnv, append([]string{"--store", e.store}, args...)...)
	if r.code != 0 {
		e.t.Fatalf("TZ=Asia/Tokyo snapfs %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// tokyoJSON runs a command with --json in Asia/Tokyo and decodes its output into a T.
func tokyoJSON[T any](e *env, args ...string) T {
	e.t.Helper()
	out := e.tokyo(append(args, "--json")...)
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.t.Fatalf("snapfs %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// parseTable parses an aligned table by its header: each row's cells, keyed by the column names,
// cut where the header's names start. The header must be exactly header, and every cell must start
// at its column (after a gap of two spaces at least).
func parseTable(t *testing.T, text string, header ...string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if got := strings.Fields(lines[0]); !slices.Equal(got, header) {
		t.Fatalf("table header %q, want %q:\n%s", got, header, text)
	}
	starts := make([]int, len(header))
	pos := 0
	for i, h := range header {
		starts[i] = pos + strings.Index(lines[0][pos:], h)
		pos = starts[i] + len(h)
	}
	var rows []map[string]string
	for _, line := range lines[1:] {
		row := map[string]string{}
		for i, h := range header {
			end := len(line)
			if i+1 < len(starts) {
				end = starts[i+1]
			}
			if len(line) <= starts[i] || end > len(line) || line[starts[i]] == ' ' ||
				(i > 0 && line[starts[i]-2:starts[i]] != "  ") {
				t.Fatalf("table row %q: no cell aligned under %s:\n%s", line, h, text)
			}
			row[h] = strings.TrimSpace(line[starts[i]:end])
		}
		rows = append(rows, row)
	}
	return rows
}

// parseRows parses "Label:  value" rows whose values are aligned, in order.
func parseRows(t *testing.T, text string) [][2]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	colon := strings.IndexByte(lines[0], ':')
	if colon < 0 {
		t.Fatalf("no \"Label:\" in %q", lines[0])
	}
	off := colon + 1 + len(lines[0][colon+1:]) - len(strings.TrimLeft(lines[0][colon+1:], " "))
	var rows [][2]string
	for _, line := range lines {
		if len(line) <= off || line[off] == ' ' || line[off-2:off] != "  " || !strings.HasSuffix(strings.TrimSpace(line[:off]), ":") {
			t.Fatalf("row %q: no label and value aligned with the first row's:\n%s", line, text)
		}
		rows = append(rows, [2]string{strings.TrimSpace(line[:off]), line[off:]})
	}
	return rows
}

// utcSnapshot is s with its time in UTC, to compare snapshots decoded from JSON with ==.
func utcSnapshot(s chain.Snapshot) chain.Snapshot {
	s.Created = s.Created.UTC()
	return s
}

// utcChain is c with its time in UTC, to compare chains decoded from JSON with ==.
func utcChain(c chain.Chain) chain.Chain {
	c.Created = c.Created.UTC()
	return c
}

// checkRows compares rows with what they should be, in order.
func checkRows(t *testing.T, what string, got, want [][2]string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s rows:\n got %q\nwant %q", what, got, want)
	}
}

// TestOutputPromiseTables: the tables of snapshot ls, chain ls, snapshot show and chain show, read
// column by column under their headers, say what --json says, with times in the client's zone
// (Asia/Tokyo here) and sizes as humanSize writes them. And they show what the seed asks of them: a
// chain's name, region, total capacity, snapshot count and source disk; each snapshot's time, size
// and the data unique to it.
func TestOutputPromiseTables(t *testing.T) {
	t.Parallel()
	zone, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatalf("no time zone data (the tzdata package): %v", err)
	}
	localTokyo := func(tm time.Time) string { return tm.In(zone).Format("2006-01-02 15:04:05") }

	// Volume v: 8 MiB, data in its first 6 MiB; v/s1, then 5 chunks changed, v/s2; a clone of v/s2
	// registered as volume c (chain c, its first snapshot's origin v/s2); and chain old, whose
	// volume was removed, at another chunk size.
	e := newEnv(t)
	start := time.Now()
	e.ok("init", "--region", "tokyo-1")
	img := e.path("v.img")
	makeImage(t, img, 6<<20)
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	e.ok("volume", "add", "v", "--source", img, "--chunk-size", "64K")
	e.ok("snapshot", "create", "v", "--name", "s1")
	writeRandom(t, img, 10*chunk64K, 5*chunk64K)
	e.ok("snapshot", "create", "v", "--name", "s2")
	cloneImg := e.path("c.img")
	e.ok("clone", "v/s2", "--to", cloneImg, "--volume", "c")
	oldImg := e.path("old.img")
	makeImage(t, oldImg, 1<<20)
	e.ok("volume", "add", "old", "--source", oldImg, "--chunk-size", "128K")
	e.ok("snapshot", "create", "old", "--name", "o1")
	e.ok("volume", "rm", "old")
	end := time.Now()

	// snapshot ls
	snaps := tokyoJSON[[]chain.Snapshot](e, "snapshot", "ls")
	byRef := map[string]chain.Snapshot{}
	for _, s := range snaps {
		byRef[s.Ref()] = s
		if s.Created.Before(start.Add(-time.Second)) || s.Created.After(end.Add(time.Second)) {
			t.Errorf("%s: created %s, not while the test made it (%s to %s)", s.Ref(), s.Created, start, end)
		}
		if _, off := s.Created.Zone(); off != 9*3600 {
			t.Errorf("%s --json: created %s, not in the client's zone", s.Ref(), s.Created)
		}
	}
	var refs []string
	for _, s := range snaps {
		refs = append(refs, s.Ref())
	}
	if want := []string{"c/s2", "old/o1", "v/s1", "v/s2"}; !slices.Equal(refs, want) {
		t.Fatalf("snapshot ls --json: %v, want %v", refs, want)
	}
	v1, v2, c1, o1 := byRef["v/s1"], byRef["v/s2"], byRef["c/s2"], byRef["old/o1"]
	snapHeader := []string{"ID", "CHAIN", "NAME", "CREATED", "SIZE", "CHANGED", "UNIQUE", "STATUS"}
	snapCells := func(s chain.Snapshot) map[string]string {
		return map[string]string{
			"ID": strconv.FormatInt(s.ID, 10), "CHAIN": s.Chain, "NAME": s.Name, "CREATED": localTokyo(s.Created),
			"SIZE": humanSize(s.Size), "CHANGED": humanSize(s.Chunks * s.ChunkSize), "UNIQUE": humanSize(s.UniqueBytes),
			"STATUS": s.Status,
		}
	}
	checkSnapshotTable := func(what, text string, snaps []chain.Snapshot, header []string) {
		t.Helper()
		rows := parseTable(t, text, header...)
		if len(rows) != len(snaps) {
			t.Fatalf("%s: %d rows, --json lists %d snapshots:\n%s", what, len(rows), len(snaps), text)
		}
		for i, s := range snaps {
			want := snapCells(s)
			for _, h := range header {
				if rows[i][h] != want[h] {
					t.Errorf("%s: %s: %s is %q, want %q (from --json)", what, s.Ref(), h, rows[i][h], want[h])
				}
			}
		}
	}
	text := e.tokyo("snapshot", "ls")
	checkSnapshotTable("snapshot ls", text, snaps, snapHeader)
	checkSnapshotTable("snapshot ls v", e.tokyo("snapshot", "ls", "v"),
		tokyoJSON[[]chain.Snapshot](e, "snapshot", "ls", "v"), snapHeader)
	// What the seed asks of a snapshot list, from what the fixture did rather than from --json: the
	// time, the size, and the data unique to each (s1's 5 chunks that s2 replaced; s2 shares all of
	// its data with the clone).
	rowOf := map[string]map[string]string{}
	for _, r := range parseTable(t, text, snapHeader...) {
		rowOf[r["CHAIN"]+"/"+r["NAME"]] = r
	}
	for _, c := range []struct{ ref, size, changed, unique string }{
		{"v/s1", "8.0 MiB", "6.0 MiB", ""}, {"v/s2", "8.0 MiB", "320.0 KiB", "0 B"},
		{"c/s2", "8.0 MiB", "6.0 MiB", "0 B"}, {"old/o1", "1.0 MiB", "1.0 MiB", ""},
	} {
		r := rowOf[c.ref]
		if r["SIZE"] != c.size || r["CHANGED"] != c.changed || (c.unique != "" && r["UNIQUE"] != c.unique) {
			t.Errorf("snapshot ls: %s: size %q, changed %q, unique %q; want %s, %s, %s", c.ref, r["SIZE"], r["CHANGED"], r["UNIQUE"],
				c.size, c.changed, orDash(c.unique))
		}
	}
	// s1's unique data is the 5 chunks s2 replaced (random data: stored about as large); s2 shares
	// all of its data with the clone.
	if u := rowOf["v/s1"]["UNIQUE"]; v1.UniqueBytes < 5*chunk64K || v1.UniqueBytes > 6*chunk64K || u != humanSize(v1.UniqueBytes) {
		t.Errorf("snapshot ls: v/s1 unique %q (%d bytes), want its 5 replaced chunks", u, v1.UniqueBytes)
	}

	// chain ls
	chains := tokyoJSON[[]chain.Chain](e, "chain", "ls")
	chainHeader := []string{"NAME", "REGION", "CAPACITY", "SNAPSHOTS", "STORED", "VOLUME", "SOURCE"}
	text = e.tokyo("chain", "ls")
	crows := parseTable(t, text, chainHeader...)
	if len(crows) != len(chains) {
		t.Fatalf("chain ls: %d rows, --json lists %d chains:\n%s", len(crows), len(chains), text)
	}
	for i, c := range chains {
		want := map[string]string{
			"NAME": c.Name, "REGION": c.Region, "CAPACITY": humanSize(c.Size), "SNAPSHOTS": strconv.FormatInt(c.Snapshots, 10),
			"STORED": humanSize(c.StoredBytes), "VOLUME": orDash(c.Volume), "SOURCE": c.Source,
		}
		for _, h := range chainHeader {
			if crows[i][h] != want[h] {
				t.Errorf("chain ls: %s: %s is %q, want %q (from --json)", c.Name, h, crows[i][h], want[h])
			}
		}
	}
	// The seed's chain: name, region, total capacity, snapshot count and source disk.
	seedChains := []map[string]string{
		{"NAME": "c", "REGION": "tokyo-1", "CAPACITY": "8.0 MiB", "SNAPSHOTS": "1", "VOLUME": "c", "SOURCE": cloneImg},
		{"NAME": "old", "REGION": "tokyo-1", "CAPACITY": "1.0 MiB", "SNAPSHOTS": "1", "VOLUME": "-", "SOURCE": oldImg},
		{"NAME": "v", "REGION": "tokyo-1", "CAPACITY": "8.0 MiB", "SNAPSHOTS": "2", "VOLUME": "v", "SOURCE": img},
	}
	if len(crows) != len(seedChains) {
		t.Fatalf("chain ls: %d rows, want c, old and v:\n%s", len(crows), text)
	}
	for i, want := range seedChains {
		for h, v := range want {
			if crows[i][h] != v {
				t.Errorf("chain ls: row %d (%s): %s is %q, want %q", i, crows[i]["NAME"], h, crows[i][h], v)
			}
		}
	}

	// snapshot show
	showRows := func(s chain.Snapshot) [][2]string {
		data := "-"
		if s.DataBytes >= 0 {
			data = humanSize(s.DataBytes)
		}
		parent := "-"
		if s.Parent != 0 {
			parent = strconv.FormatInt(s.Parent, 10)
		}
		rows := [][2]string{
			{"Snapshot:", s.Ref()},
			{"ID:", strconv.FormatInt(s.ID, 10)},
			{"Volume:", orDash(s.Volume)},
			{"Created:", localTokyo(s.Created)},
			{"Size:", humanSize(s.Size)},
			{"Chunk size:", humanSize(s.ChunkSize)},
			{"Changed:", fmt.Sprintf("%d chunks (%s)", s.Chunks, humanSize(s.Chunks*s.ChunkSize))},
			{"Data:", data},
			{"Unique:", humanSize(s.UniqueBytes)},
			{"Status:", s.Status},
			{"Parent:", parent},
		}
		if s.Origin != 0 {
			rows = append(rows, [2]string{"Origin:", strconv.FormatInt(s.Origin, 10)})
		}
		return rows
	}
	for _, ref := range refs {
		s := tokyoJSON[chain.Snapshot](e, "snapshot", "show", ref)
		if utcSnapshot(s) != utcSnapshot(byRef[ref]) {
			t.Errorf("snapshot show %s --json: %+v, snapshot ls --json: %+v", ref, s, byRef[ref])
		}
		checkRows(t, "snapshot show "+ref, parseRows(t, e.tokyo("snapshot", "show", ref)), showRows(s))
		// By id too.
		checkRows(t, "snapshot show "+strconv.FormatInt(s.ID, 10), parseRows(t, e.tokyo("snapshot", "show", strconv.FormatInt(s.ID, 10))), showRows(s))
	}
	// What the fixture made, not what --json says: parents, the clone's origin, the data held.
	if v2.Parent != v1.ID || v1.Parent != 0 || c1.Parent != 0 || c1.Origin != v2.ID || v2.Origin != 0 || o1.Origin != 0 {
		t.Errorf("parents and origins: v/s1 %d/%d, v/s2 %d/%d, c/s2 %d/%d, old/o1 %d/%d; want v/s2's parent v/s1 (%d) and c/s2's origin v/s2 (%d)",
			v1.Parent, v1.Origin, v2.Parent, v2.Origin, c1.Parent, c1.Origin, o1.Parent, o1.Origin, v1.ID, v2.ID)
	}
	for _, c := range []struct {
		ref, label, want string
	}{
		{"v/s1", "Data:", "6.0 MiB"}, {"v/s2", "Changed:", "5 chunks (320.0 KiB)"},
		{"old/o1", "Chunk size:", "128.0 KiB"}, {"old/o1", "Volume:", "old"},
		{"v/s2", "Parent:", strconv.FormatInt(v1.ID, 10)}, {"c/s2", "Origin:", strconv.FormatInt(v2.ID, 10)},
	} {
		rows := parseRows(t, e.tokyo("snapshot", "show", c.ref))
		i := slices.IndexFunc(rows, func(r [2]string) bool { return r[0] == c.label })
		if i < 0 || rows[i][1] != c.want {
			t.Errorf("snapshot show %s: %s row %v, want %q", c.ref, c.label, rows, c.want)
		}
	}

	// chain show
	for _, name := range []string{"c", "old", "v"} {
		d := tokyoJSON[chainDetail](e, "chain", "show", name)
		if i := slices.IndexFunc(chains, func(c chain.Chain) bool { return c.Name == name }); i < 0 || utcChain(d.Chain) != utcChain(chains[i]) {
			t.Errorf("chain show %s --json: %+v, not as chain ls --json lists it", name, d.Chain)
		}
		text := e.tokyo("chain", "show", name)
		head, list, ok := strings.Cut(text, "\n\n")
		if !ok {
			t.Fatalf("chain show %s: no blank line before its snapshot list:\n%s", name, text)
		}
		c := d.Chain
		checkRows(t, "chain show "+name, parseRows(t, head), [][2]string{
			{"Chain:", c.Name},
			{"Region:", c.Region},
			{"Volume:", orDash(c.Volume)},
			{"Source:", c.Source},
			{"Capacity:", humanSize(c.Size)},
			{"Chunk size:", humanSize(c.ChunkSize)},
			{"Snapshots:", strconv.FormatInt(c.Snapshots, 10)},
			{"Stored:", humanSize(c.StoredBytes)},
			{"Created:", localTokyo(c.Created)},
		})
		checkSnapshotTable("chain show "+name, list, d.SnapshotList, slices.Delete(slices.Clone(snapHeader), 1, 2))
		var want []chain.Snapshot
		for _, s := range snaps {
			if s.Chain == name {
				want = append(want, s)
			}
		}
		if !slices.EqualFunc(d.SnapshotList, want, func(a, b chain.Snapshot) bool { return utcSnapshot(a) == utcSnapshot(b) }) {
			t.Errorf("chain show %s --json lists %v, snapshot ls --json %v", name, d.SnapshotList, want)
		}
	}
	// The seed's chain details, from what the fixture made.
	rowsV := parseRows(t, strings.SplitN(e.tokyo("chain", "show", "v"), "\n\n", 2)[0])
	for _, want := range [][2]string{{"Chain:", "v"}, {"Region:", "tokyo-1"}, {"Capacity:", "8.0 MiB"}, {"Snapshots:", "2"}, {"Source:", img}} {
		if !slices.Contains(rowsV, want) {
			t.Errorf("chain show v: no row %q in %q", want, rowsV)
		}
	}
}

// TestDaemonPromiseSIGTERMCancelsCtlSnapshotWithFileOpen: "SIGTERM to the daemon unmounts and
// cancels" a snapshot started through ctl even while a file under the mount is open, which makes
// the unmount only detach it: the snapshot is cancelled at once, not once that file closes, and it
// leaves nothing. The open file keeps reading meanwhile.
func TestDaemonPromiseSIGTERMCancelsCtlSnapshotWithFileOpen(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	e := newEnv(t)
	img := snapshottedVolume(e, "big", 256<<20)
	makeImage(t, img, 256<<20) // all new: the next snapshot stores every chunk
	mnt := e.mount()
	held, err := os.Open(filepath.Join(mnt, "chains", "big", "s1.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := os.WriteFile(filepath.Join(mnt, "volumes", "big", "ctl"), []byte("snapshot s2\n"), 0); err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, e.store)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ended := func() bool {
		log := e.daemonLog()
		return strings.Contains(log, "snapshot s2 of volume big") || strings.Contains(log, "snapshot big/s2 of volume big")
	}
	for deadline := time.Now().Add(30 * time.Second); !ended(); {
		if time.Now().After(deadline) {
			t.Fatalf("snapshot s2 still running 30 s after SIGTERM, with a file open\ndaemon log:\n%s", e.daemonLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if log := e.daemonLog(); !strings.Contains(log, "snapshot s2 of volume big failed") || !strings.Contains(log, "canceled") {
		t.Fatalf("snapshot s2 ended, but not cancelled\ndaemon log:\n%s", log)
	}
	if _, err := held.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Errorf("read of the open image after SIGTERM: %v", err)
	}
	held.Close()
	if !waitExit(pid, 30*time.Second) {
		t.Fatalf("daemon %d still running 30 s after its last open file closed\ndaemon log:\n%s", pid, e.daemonLog())
	}
	if out := e.ok("snapshot", "ls", "big"); strings.Contains(out, "s2") {
		t.Errorf("the cancelled snapshot is in the store:\n%s", out)
	}
	if out := e.ok("verify"); !strings.Contains(out, "verified") {
		t.Errorf("verify after the cancelled snapshot: %q", out)
	}
}
