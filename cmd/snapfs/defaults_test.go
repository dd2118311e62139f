package main

// The default store (README: --store DIR, else $SNAPFS_STORE, else /var/lib/snapfs for root, else
// $XDG_DATA_HOME/snapfs, by default ~/.local/share/snapfs): what cron jobs and scripts that name no
// store rely on to find the same store every time.

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobodyUID is the uid of nobody, the unprivileged user the tests of the default store run snapfs as.
const nobodyUID = 65534

// defaultStoreEnv is a directory every user can reach, with a copy of the binary in it (TestMain
// builds it in a directory only root may enter).
type defaultStoreEnv struct {
	t   *testing.T
	dir string
	bin string
}

func newDefaultStoreEnv(t *testing.T) *defaultStoreEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "snapfs-default-store-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "snapfs")
	src, err := os.Open(snapfsBin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return &defaultStoreEnv{t: t, dir: dir, bin: bin}
}

// userDir makes the directory name (and its parents) in the env, owned by uid.
func (d *defaultStoreEnv) userDir(name string, uid int) string {
	d.t.Helper()
	path := filepath.Join(d.dir, name)
	if err := os.MkdirAll(path, 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Chown(path, uid, uid); err != nil {
		d.t.Fatal(err)
	}
	return path
}

// run runs name args... in cwd with only PATH and env in its environment (no $SNAPFS_STORE, and no
// HOME or XDG_DATA_HOME but those env sets), as uid when uid is not 0.
func (d *defaultStoreEnv) run(uid int, cwd string, env []string, name string, args ...string) result {
	d.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = cwd
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	return runResult(d.t, cmd)
}

// checkInit checks that r is `snapfs init` creating the store want, then finding it again.
func checkDefaultInit(t *testing.T, r result, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || r.stderr != "" || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "created store "+want+" (region ") ||
		!strings.HasPrefix(lines[1], "store "+want+" exists (region ") {
		t.Fatalf("snapfs init, twice: want \"created store %s\", then \"store %s exists\"; got %s", want, want, r)
	}
}

// checkAbsent fails the test if path exists: a store made where it should not be.
func checkNoStoreAt(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (%v): a store was made there", path, err)
	}
}

// TestDefaultStoreUser: without --store or $SNAPFS_STORE, a user's store is $XDG_DATA_HOME/snapfs
// when that is an absolute path, else ~/.local/share/snapfs; the same store is found again; a user
// without a home is told to use --store.
func TestDefaultStoreUser(t *testing.T) {
	needRoot(t) // to run snapfs as another user
	d := newDefaultStoreEnv(t)
	for _, c := range []struct {
		name   string
		setXDG bool   // set XDG_DATA_HOME
		xdg    string // its value; "ABS/dir" is dir in the case's directory, by its absolute path
		want   string // the store, relative to the case's directory
	}{
		{name: "home", want: "home/.local/share/snapfs"},
		{name: "xdg", setXDG: true, xdg: "ABS/xdg", want: "xdg/snapfs"},
		{name: "xdg-relative", setXDG: true, xdg: "xdg", want: "home/.local/share/snapfs"},
		{name: "xdg-empty", setXDG: true, xdg: "", want: "home/.local/share/snapfs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := d.userDir(c.name, nobodyUID)
			home := d.userDir(filepath.Join(c.name, "home"), nobodyUID)
			cwd := d.userDir(filepath.Join(c.name, "cwd"), nobodyUID)
			env := []string{"HOME=" + home}
			if c.setXDG {
				xdg := c.xdg
				if rest, ok := strings.CutPrefix(xdg, "ABS/"); ok {
					xdg = d.userDir(filepath.Join(c.name, rest), nobodyUID)
				}
				env = append(env, "XDG_DATA_HOME="+xdg)
			}
			want := filepath.Join(base, c.want)
			r := d.run(nobodyUID, cwd, env, "sh", "-c", `"$0" init && "$0" init`, d.bin)
			checkDefaultInit(t, r, want)
			var st syscall.Stat_t
			if err := syscall.Stat(want, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Uid != nobodyUID {
				t.Fatalf("store %s: %v, mode %o, owner %d; want a directory of uid %d", want, err, st.Mode, st.Uid, nobodyUID)
			}
			if r := d.run(nobodyUID, cwd, env, d.bin, "volume", "ls", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
				t.Errorf("snapfs volume ls --json in the default store: %s", r)
			}
			// Nowhere else: not under the home when $XDG_DATA_HOME is used, not under a relative
			// $XDG_DATA_HOME, resolved from the working directory.
			for _, other := range []string{"home/.local", "xdg/snapfs", "cwd/xdg"} {
				if path := filepath.Join(base, other); !strings.HasPrefix(want, path) {
					checkNoStoreAt(t, path)
				}
			}
		})
	}
	t.Run("no-home", func(t *testing.T) {
		cwd := d.userDir("no-home", nobodyUID)
		r := d.run(nobodyUID, cwd, nil, d.bin, "init")
		checkFailure(t, r, 1, "use --store", []string{"init"})
		if entries, _ := os.ReadDir(cwd); len(entries) != 0 {
			t.Errorf("snapfs init without a home made %d files in its working directory", len(entries))
		}
	})
}

// TestDefaultStoreRoot: without --store or $SNAPFS_STORE, root's store is /var/lib/snapfs, whatever
// HOME and XDG_DATA_HOME say. It runs in a mount namespace of its own with a tmpfs on /var/lib, so
// the machine's /var/lib is left alone.
func TestDefaultStoreRoot(t *testing.T) {
	needRoot(t) // to mount
	if _, err := exec.LookPath("unshare"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs unshare")
		}
		t.Skip("needs unshare")
	}
	const want = "/var/lib/snapfs"
	_, err := os.Lstat(want)
	hadStore := err == nil
	d := newDefaultStoreEnv(t)
	home := d.userDir("home", 0)
	xdg := d.userDir("xdg", 0)
	// unshare -m makes the namespace's mounts private: the tmpfs is seen by nothing outside it, and
	// goes with it when the shell exits.
	script := `mount -t tmpfs tmpfs /var/lib || exit 99; "$0" init; "$0" init; "$0" volume ls --json; test -d ` + want
	r := d.run(0, d.dir, []string{"HOME=" + home, "XDG_DATA_HOME=" + xdg},
		"unshare", "-m", "--propagation", "private", "sh", "-c", script, d.bin)
	if r.code == 99 {
		t.Fatalf("mount a tmpfs on /var/lib in a new mount namespace: %s", r)
	}
	lines := strings.SplitN(r.stdout, "\n", 3)
	if len(lines) != 3 {
		t.Fatalf("snapfs init, twice, and volume ls, as root: %s", r)
	}
	checkDefaultInit(t, result{stdout: lines[0] + "\n" + lines[1] + "\n", stderr: r.stderr}, want)
	if strings.TrimSpace(lines[2]) != "[]" || r.code != 0 {
		t.Fatalf("snapfs volume ls --json in the default store, then test -d %s: %s", want, r)
	}
	checkNoStoreAt(t, filepath.Join(home, ".local"))
	checkNoStoreAt(t, filepath.Join(xdg, "snapfs"))
	if !hadStore {
		checkNoStoreAt(t, want) // the tmpfs was the namespace's alone
	}
}
