package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// snapfsBin is the binary TestMain builds; every test runs it as a user would.
var snapfsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snapfs-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	snapfsBin = filepath.Join(dir, "snapfs")
	build := exec.Command("go", "build", "-o", snapfsBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build snapfs:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what one run of the binary did.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// env is one store, and the helpers to run snapfs on it.
type env struct {
	t     *testing.T
	dir   string // scratch directory for images
	store string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	return &env{t: t, dir: dir, store: filepath.Join(dir, "store")}
}

// path is a file in the env's scratch directory.
func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// run runs snapfs --store STORE args... and returns what it did.
func (e *env) run(args ...string) result {
	e.t.Helper()
	return runBin(e.t, append([]string{"--store", e.store}, args...)...)
}

// runBin runs the snapfs binary with exactly args, without $SNAPFS_STORE.
func runBin(t *testing.T, args ...string) result {
	t.Helper()
	return runBinEnv(t, nil, args...)
}

// runBinEnv runs the snapfs binary with exactly args and extra environment variables.
func runBinEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(snapfsBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SNAPFS_STORE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return runResult(t, cmd)
}

// runResult runs cmd and returns its output and exit code; it fails the test when cmd cannot run.
func runResult(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %q: %v", cmd.Args, err)
	}
	return r
}

// ok runs snapfs and fails the test unless it succeeds; it returns stdout.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("snapfs %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// okJSON runs snapfs and decodes its stdout into a T.
func okJSON[T any](e *env, args ...string) T {
	e.t.Helper()
	out := e.ok(args...)
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.t.Fatalf("snapfs %s: decode JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// fails runs snapfs and checks that it exits with code and one "snapfs: " line on stderr that
// contains want. It returns stderr.
func (e *env) fails(code int, want string, args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	checkFailure(e.t, r, code, want, args)
	return r.stderr
}

func checkFailure(t *testing.T, r result, code int, want string, args []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("snapfs %q: want exit %d, got %s", args, code, r)
		return
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "snapfs: ") {
		t.Errorf("snapfs %q: want one \"snapfs: \" line on stderr, got %q", args, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("snapfs %q: stderr %q does not say %q", args, r.stderr, want)
	}
	if r.stdout != "" && code == 2 {
		t.Errorf("snapfs %q: usage error printed on stdout: %q", args, r.stdout)
	}
}

// state is everything listing commands show, to check that a failed command changed nothing.
func (e *env) state() string {
	e.t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"volume", "ls", "--json"}, {"chain", "ls", "--json"}, {"snapshot", "ls", "--json"}} {
		b.WriteString(e.ok(args...))
	}
	return b.String()
}

// makeImage writes an image file of size random bytes and returns its contents.
func makeImage(t *testing.T, path string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// scribble overwrites n random bytes of the file at off and returns the file's new hash.
func scribble(t *testing.T, path string, off int64, n int) string {
	t.Helper()
	writeRandom(t, path, off, n)
	return fileHash(t, path)
}

// fileHash is the hex SHA-256 of a file's contents.
func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// runCmd runs a system tool and returns its combined output.
func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// mkfifo makes a named pipe.
func mkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }

// listenUnix makes a unix socket at path.
func listenUnix(path string) (net.Listener, error) { return net.Listen("unix", path) }
