package fs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snapfs/snapfs/chain"
)

// TestDeleteDuringListing deletes a snapshot while a listing of its chain, loaded before the delete,
// is half read. The rest of the listing still names the image, and the kernel learns of it again from
// READDIRPLUS; its path must not work for all that: stat and open fail, while a reader that had it
// open goes on reading the deleted snapshot. A snapshot made again under the name opens by path.
func TestDeleteDuringListing(t *testing.T) {
	needFUSE(t)
	s := newStore(t)
	d := newDisk(t, filepath.Dir(s.dir), "v.img", mib)
	s.addVolume("v", d.path)
	// Long names, so that the chain takes several READDIRPLUS replies of a page; the victim, made
	// last, is listed last, in a reply the kernel asks for only after the delete.
	const count = 30
	var victim string
	for i := range count {
		d.scribble(int64(i)*4096, 4096)
		victim = fmt.Sprintf("snapshot-%02d-%s", i, strings.Repeat("x", 100))
		s.snapshot("v", victim, d)
	}
	oldSum := s.sums["v/"+victim]
	s.close()
	mnt := mountStore(t, s.dir)
	chainDir := filepath.Join(mnt, "chains", "v")
	img := filepath.Join(chainDir, victim+".img")

	reader, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()

	fd, err := unix.Open(chainDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// A buffer of 256 bytes takes two or three entries: the listing has started, most of it unread.
	if n, err := unix.Getdents(fd, make([]byte, 256)); err != nil || n <= 0 {
		t.Fatalf("getdents: %d, %v", n, err)
	}
	if out, err := run(t, s.dir, "snapshot", "delete", "v/"+victim); err != nil {
		t.Fatalf("snapshot delete: %v\n%s", err, out)
	}
	var rest []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents: %v", err)
		}
		if n == 0 {
			break
		}
		rest = append(rest, buf[:n]...)
	}
	if !bytes.Contains(rest, []byte(victim+".img\x00")) {
		t.Fatalf("the listing loaded before the delete did not name %s.img: the test shows nothing", victim)
	}

	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of the deleted image after the listing: %v, want ENOENT", err)
	}
	if f, err := os.Open(img); !errors.Is(err, os.ErrNotExist) {
		if err == nil {
			f.Close()
		}
		t.Errorf("open of the deleted image after the listing: %v, want ENOENT", err)
	}
	if got := hashFrom(t, reader); got != oldSum {
		t.Errorf("the reader that had the image open: sha256 %s, want the deleted snapshot's %s", got, oldSum)
	}
	reader.Close()

	// Made again under the same name, once the last reader has let go of the old one's.
	d.scribble(0, mib)
	newSum := sha256File(t, d.path)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := run(t, s.dir, "snapshot", "create", "v", "--name", victim)
		if err == nil {
			break
		}
		if !strings.Contains(out, "exists") || time.Now().After(deadline) {
			t.Fatalf("snapshot create %s again: %v\n%s", victim, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := sha256File(t, img); got != newSum {
		t.Errorf("the image made again under the name: sha256 %s, want %s", got, newSum)
	}
}

// hashFrom hashes what f reads from its start.
func hashFrom(t *testing.T, f *os.File) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		t.Fatalf("read %s: %v", f.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestSIGTERMWithDeferredDelete: SIGTERM cancels a snapshot being made through ctl even when the last
// reader of a deleted snapshot of the same chain has just closed it. Finishing that delete waits for
// the snapshot (both need the chain); the daemon must not wait with it, but unmount and cancel the
// snapshot, and the delete then finishes.
func TestSIGTERMWithDeferredDelete(t *testing.T) {
	needFUSE(t)
	s := newStore(t)
	const size = 512 * mib
	d := newDisk(t, filepath.Dir(s.dir), "v.img", size)
	d.scribble(0, mib)
	s.addVolume("v", d.path)
	s.snapshot("v", "s1", d)
	// The whole disk changes, so that the next snapshot has 512 MiB to read, hash and store: it is
	// still running when the daemon gets the signal.
	for off := int64(0); off < size; off += 32 * mib {
		d.scribble(off, 32*mib)
	}
	s.close()
	mnt := mountStore(t, s.dir)
	status := filepath.Join(mnt, "volumes", "v", "status")

	reader, err := os.Open(filepath.Join(mnt, "chains", "v", "s1.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if out, err := run(t, s.dir, "snapshot", "delete", "v/s1"); err != nil {
		t.Fatalf("snapshot delete: %v\n%s", err, out)
	}
	if err := writeCtl(filepath.Join(mnt, "volumes", "v", "ctl"), "snapshot big"); err != nil {
		t.Fatal(err)
	}
	// The last reader closes: the delete waits for the snapshot.
	reader.Close()
	time.Sleep(200 * time.Millisecond)
	if st := readStatus(t, status); !progressRE.MatchString(st) {
		t.Fatalf("status %q: the snapshot is not running, the test shows nothing", st)
	}

	pid := daemonPID(t, s.dir)
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 2*time.Minute)
	t.Logf("daemon gone %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	if mounted(mnt) {
		t.Errorf("still mounted after SIGTERM")
	}

	m, err := chain.Open(context.Background(), s.dir, chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	snaps, err := m.Snapshots(context.Background(), "v")
	if err != nil {
		t.Fatal(err)
	}
	for _, snap := range snaps {
		t.Errorf("snapshot %s left after SIGTERM: the snapshot was not cancelled, or the delete not done\ndaemon log:\n%s",
			snap.Ref(), daemonLog(s.dir))
	}
}
