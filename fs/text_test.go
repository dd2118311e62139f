package fs_test

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTextFileTimes: status and the info files keep their times while their content stays the same,
// and get later ones when it changes. With the time of every stat, tar found each of them "changed
// as we read it" (failing), and find -newer matched them every time.
func TestTextFileTimes(t *testing.T) {
	needFUSE(t, "tar")
	s := oneSnapshot(t)
	mnt := mountStore(t, s.dir)
	files := []string{"volumes/d/status", "volumes/d/info", "chains/d/info"}
	stat := func(name string) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(mnt, name), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	first := map[string]unix.Stat_t{}
	for _, name := range files {
		first[name] = stat(name)
	}
	time.Sleep(20 * time.Millisecond) // a clock that moves on between the stats
	for _, name := range files {
		if a, b := first[name], stat(name); a.Mtim != b.Mtim || a.Ctim != b.Ctim {
			t.Errorf("%s unchanged: mtime %v then %v, ctime %v then %v", name, a.Mtim, b.Mtim, a.Ctim, b.Ctim)
		}
	}
	if out, err := exec.Command("tar", "-cf", "/dev/null", "-C", mnt, "volumes", "chains").CombinedOutput(); err != nil {
		t.Errorf("tar of the tree: %v\n%s", err, out)
	}

	// A snapshot changes the status and the chain's info, not the volume's info.
	time.Sleep(20 * time.Millisecond)
	if err := writeCtl(filepath.Join(mnt, "volumes", "d", "ctl"), "snapshot s2"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, filepath.Join(mnt, "volumes", "d", "status"), regexp.MustCompile(`^done s2$`), "s2:")
	for name, changed := range map[string]bool{"volumes/d/status": true, "chains/d/info": true, "volumes/d/info": false} {
		a, b := first[name], stat(name)
		later := time.Unix(b.Mtim.Unix()).After(time.Unix(a.Mtim.Unix()))
		if changed && (!later || b.Ctim != b.Mtim) {
			t.Errorf("%s changed: mtime %v then %v, ctime %v; want a later mtime, and ctime the same", name, a.Mtim, b.Mtim, b.Ctim)
		}
		if !changed && (a.Mtim != b.Mtim || a.Ctim != b.Ctim) {
			t.Errorf("%s unchanged: mtime %v then %v", name, a.Mtim, b.Mtim)
		}
	}
}
