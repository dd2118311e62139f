package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snapfs/snapfs/chain"
)

// rssLimit is the most resident memory a snapshot or the daemon may take, whatever the disk size.
const rssLimit = 256 << 20

// TestMemoryOfATebibyteDisk snapshots a sparse 1 TiB disk (16 Mi chunks of 64 KiB: a structure of
// even 16 bytes a chunk would pass the limit), once whole and once after changes, restores the
// second to a new file, deletes the first and clones the second's image with cp through the mount:
// each command and the daemon stay under rssLimit, and the restored file and the clone are the
// disk, holes included.
func TestMemoryOfATebibyteDisk(t *testing.T) {
	needFUSE(t)
	const size = 1 << 40
	e := newEnv(t)
	e.ok("init")
	disk := e.path("big.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, size); err != nil {
		t.Skipf("this filesystem takes no 1 TiB sparse file: %v", err)
	}
	// 32 MiB of data in 1 MiB pieces spread over the whole disk, none of them chunk-aligned.
	for k := range int64(32) {
		writeRandom(t, disk, k*(size/32)+k*4096+123, 1<<20)
	}
	e.ok("volume", "add", "big", "--source", disk)
	e.checkRSS("full snapshot", "snapshot", "create", "big", "--name", "full")
	// Each piece lies across 17 chunks of 64 KiB.
	if full := okJSON[chain.Snapshot](e, "snapshot", "show", "big/full", "--json"); full.DataBytes != 32*17<<16 {
		t.Errorf("big/full holds %d bytes of data, want %d", full.DataBytes, 32*17<<16)
	}

	for k := int64(0); k < 32; k += 4 { // rewrite some pieces, and add data between them
		writeRandom(t, disk, k*(size/32)+k*4096+123+512<<10, 64<<10)
		writeRandom(t, disk, k*(size/32)+size/64, 256<<10)
	}
	e.checkRSS("incremental snapshot", "snapshot", "create", "big", "--name", "incr")
	restored := e.path("restored.img")
	e.checkRSS("restore to a new file", "restore", "big/incr", "--to", restored)
	sameSparseFiles(t, restored, disk)
	e.checkRSS("delete of the first snapshot", "snapshot", "delete", "big/full")

	mnt := e.mount()
	img := filepath.Join(mnt, "chains", "big", "incr.img")
	// cp reads only the data (SEEK_DATA) of a file with fewer blocks than its size needs; shown all
	// blocks, it would read the whole terabyte.
	var ist syscall.Stat_t
	if err := syscall.Stat(img, &ist); err != nil {
		t.Fatal(err)
	}
	if ist.Blocks*512 > 64<<20 {
		t.Fatalf("incr.img shows %d MiB of blocks for ~36 MiB of data: cp would read every hole", ist.Blocks*512>>20)
	}
	clone := e.path("clone.img")
	if out, err := runCmd("cp", "--sparse=always", img, clone); err != nil {
		t.Fatalf("cp --sparse=always of the image: %v\n%s", err, out)
	}
	if hwm := vmHWM(t, readPID(t, e.store)); hwm >= rssLimit {
		t.Errorf("daemon peak RSS %d MiB after cloning the image, want under %d", hwm>>20, rssLimit>>20)
	}
	sameSparseFiles(t, clone, disk)
	var st syscall.Stat_t
	if err := syscall.Stat(clone, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 64<<20 {
		t.Errorf("the clone takes %d MiB of disk for ~36 MiB of data: holes were written out", used>>20)
	}
}

// checkRSS runs snapfs with args and fails the test unless it succeeds with a peak RSS under
// rssLimit.
func (e *env) checkRSS(what string, args ...string) {
	e.t.Helper()
	cmd := exec.Command(snapfsBin, append([]string{"--store", e.store}, args...)...)
	cmd.Env = append(os.Environ(), "SNAPFS_STORE=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("snapfs %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux
	e.t.Logf("%s: peak RSS %d MiB", what, rss>>20)
	if rss >= rssLimit {
		e.t.Errorf("%s: peak RSS %d MiB, want under %d", what, rss>>20, rssLimit>>20)
	}
}

// vmHWM is the peak resident memory of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM of %d: %q", pid, line)
			}
			return kib << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// writeRandom writes n random bytes into the file at off.
func writeRandom(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	rand.Read(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// sameSparseFiles checks that two sparse files of one size hold the same bytes, reading only where
// either holds data (holes read as zeros in both).
func sameSparseFiles(t *testing.T, a, b string) {
	t.Helper()
	fa, fb := openFile(t, a), openFile(t, b)
	size := fileSize(t, fa)
	if sb := fileSize(t, fb); sb != size {
		t.Fatalf("%s is %d bytes, %s %d", a, size, b, sb)
	}
	extents := append(dataExtents(t, fa, size), dataExtents(t, fb, size)...)
	bufA, bufB := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, x := range extents {
		for off := x[0]; off < x[1]; off += int64(len(bufA)) {
			n := int(min(int64(len(bufA)), x[1]-off))
			readAt(t, fa, bufA[:n], off)
			readAt(t, fb, bufB[:n], off)
			if !bytes.Equal(bufA[:n], bufB[:n]) {
				t.Fatalf("%s and %s differ in [%d, %d)", a, b, off, off+int64(n))
			}
		}
	}
}

// dataExtents lists the [start, end) ranges of f that SEEK_DATA and SEEK_HOLE say hold data.
func dataExtents(t *testing.T, f *os.File, size int64) [][2]int64 {
	t.Helper()
	var out [][2]int64
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA %s at %d: %v", f.Name(), off, err)
		}
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE %s at %d: %v", f.Name(), start, err)
		}
		out = append(out, [2]int64{start, end})
		off = end
	}
	return out
}

func openFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func fileSize(t *testing.T, f *os.File) int64 {
	t.Helper()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func readAt(t *testing.T, f *os.File, p []byte, off int64) {
	t.Helper()
	if _, err := f.ReadAt(p, off); err != nil {
		t.Fatalf("read %s at %d: %v", f.Name(), off, err)
	}
}
