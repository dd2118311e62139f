package fs_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapfs/snapfs/chain"
)

// binPath is the snapfs binary TestMain builds; buildErr says why it could not.
var (
	binPath  string
	buildErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snapfs-fs-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "snapfs")
	if slices.ContainsFunc(os.Args, func(a string) bool { return strings.HasPrefix(a, "-test.fuzzworker") }) {
		buildErr = errors.New("not built in a fuzz worker") // fuzz targets run no binary
	} else {
		buildErr = buildSnapfs(binPath)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildSnapfs builds ./cmd/snapfs from the module root into bin.
func buildSnapfs(bin string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/snapfs")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/snapfs: %v\n%s", err, out)
	}
	return nil
}

// needFUSE skips the test when this machine cannot mount FUSE file systems as root, or lacks a
// tool the test runs, except in CI (CI=true), where that is a failure.
func needFUSE(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		msg := "needs " + strings.Join(missing, ", ") + " (run scripts/setup.sh as root)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// run runs the snapfs binary and returns its combined output.
func run(t *testing.T, store string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"--store", store}, args...)...)
	cmd.Env = append(os.Environ(), "SNAPFS_STORE=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mountStore mounts store on a new directory through `snapfs mount` (a daemon) and unmounts it when
// the test ends.
func mountStore(t *testing.T, store string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, store, "mount", dir); err != nil {
		t.Fatalf("snapfs mount: %v\n%s\ndaemon log:\n%s", err, out, daemonLog(store))
	}
	t.Cleanup(func() { unmount(t, store, dir) })
	return dir
}

// unmount unmounts dir with `snapfs umount`, falling back to a lazy umount so that cleanup always
// leaves the directory free.
func unmount(t *testing.T, store, dir string) {
	t.Helper()
	if !mounted(dir) {
		return
	}
	if out, err := run(t, store, "umount", dir); err != nil {
		t.Errorf("snapfs umount: %v\n%s", err, out)
	}
	if mounted(dir) {
		t.Errorf("%s still mounted after snapfs umount", dir)
		syscall.Unmount(dir, syscall.MNT_DETACH)
	}
}

// mounted reports whether dir is a mount point in the mount table.
func mounted(dir string) bool {
	mounts, _ := chain.MountTable()
	for _, e := range mounts {
		if e.Dir == dir {
			return true
		}
	}
	return false
}

// daemonLog is the store's daemon log, for failure messages.
func daemonLog(store string) string {
	b, _ := os.ReadFile(filepath.Join(store, "daemon.log"))
	return string(b)
}

// daemonPID is the pid of the daemon serving store.
func daemonPID(t *testing.T, store string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(store, "daemon.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(b) + " ")[0]) // "PID START DIR"
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitGone waits until process pid has exited.
func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running after %s:\n%s", pid, d, processDiagnostics(pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processDiagnostics describes where a process that should have exited is stuck: its state and the
// kernel stacks of its threads, and the store's daemon log when the process is a daemon.
func processDiagnostics(pid int) string {
	var b strings.Builder
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	fmt.Fprintf(&b, "stat: %s\n", stat)
	stacks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stack", pid))
	for _, s := range stacks {
		st, _ := os.ReadFile(s)
		if len(st) > 0 {
			fmt.Fprintf(&b, "%s:\n%s", s, st)
		}
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil {
		fmt.Fprintf(&b, "cwd: %s\n", cwd)
	}
	// A daemon is started with SNAPFS_STORE naming its store, whose log says what it did.
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	for _, kv := range strings.Split(string(env), "\x00") {
		if store, ok := strings.CutPrefix(kv, "SNAPFS_STORE="); ok && store != "" {
			fmt.Fprintf(&b, "daemon log:\n%s", daemonLog(store))
		}
	}
	return b.String()
}

// processAlive reports whether pid exists and is not a zombie. A zombie leader whose other threads
// are still exiting (and so still hold the process's files) counts as alive, as in cmd/snapfs.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X') {
		return true
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return err == nil && len(tasks) > 1
}

// sha256File hashes a file.
func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// disk is a sparse image file used as a volume's source.
type disk struct {
	t    *testing.T
	path string
}

// newDisk makes a sparse file of size bytes.
func newDisk(t *testing.T, dir, name string, size int64) *disk {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return &disk{t: t, path: path}
}

// scribble writes n random bytes at off.
func (d *disk) scribble(off, n int64) {
	d.t.Helper()
	buf := make([]byte, n)
	rand.Read(buf)
	f, err := os.OpenFile(d.path, os.O_WRONLY, 0)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(buf, off); err != nil {
		d.t.Fatal(err)
	}
}

// store is a store set up through the chain API, closed before the daemon takes its writer lock.
type store struct {
	t    *testing.T
	dir  string
	m    *chain.Manager
	sums map[string]string // CHAIN/NAME → sha256 of the source when the snapshot was taken
}

func newStore(t *testing.T) *store {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	m, err := chain.Open(context.Background(), dir, chain.Options{Region: "test"})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	s := &store{t: t, dir: dir, m: m, sums: map[string]string{}}
	t.Cleanup(func() { s.close() })
	return s
}

func (s *store) addVolume(name, source string) {
	s.t.Helper()
	if _, err := s.m.AddVolume(context.Background(), chain.VolumeSpec{Name: name, Source: source}); err != nil {
		s.t.Fatalf("add volume %s: %v", name, err)
	}
}

// snapshot snapshots volume as name and remembers the source's hash.
func (s *store) snapshot(volume, name string, d *disk) chain.Snapshot {
	s.t.Helper()
	snap, err := s.m.CreateSnapshot(context.Background(), volume, chain.CreateOptions{Name: name})
	if err != nil {
		s.t.Fatalf("snapshot %s: %v", volume, err)
	}
	s.sums[snap.Ref()] = sha256File(s.t, d.path)
	return snap
}

func (s *store) delete(ref string) {
	s.t.Helper()
	if _, err := s.m.DeleteSnapshot(context.Background(), ref); err != nil {
		s.t.Fatalf("delete %s: %v", ref, err)
	}
	delete(s.sums, ref)
}

// close releases the writer lock, so that a daemon can take it.
func (s *store) close() {
	if s.m != nil {
		if err := s.m.Close(); err != nil {
			s.t.Errorf("close store: %v", err)
		}
		s.m = nil
	}
}

// isErrno reports whether err is one of the errnos.
func isErrno(err error, errnos ...syscall.Errno) bool {
	for _, e := range errnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
