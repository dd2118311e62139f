package chain

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapfs/snapfs/store"
)

// crashEnv tells a re-executed test binary to play the process that dies: "MODE:STORE:VOLUME:REF".
const crashEnv = "SNAPFS_TEST_CRASH_CHILD"

// crashChild runs in the re-executed test binary: it opens the store, gets half-way through an
// operation and kills itself with SIGKILL.
func crashChild(t *testing.T, spec string) {
	parts := strings.SplitN(spec, ":", 4)
	mode, dir, vol, ref := parts[0], parts[1], parts[2], parts[3]
	ctx := context.Background()
	m, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	die := func() { syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	switch mode {
	case "snapshot":
		// Block the reader at the end of the disk: the writer commits its first full batch
		// meanwhile, the last batch never.
		m.CreateSnapshot(ctx, vol, CreateOptions{Name: "crashed", Progress: func(done, total int64) {
			if done == total {
				time.Sleep(1500 * time.Millisecond)
				die()
			}
		}})
	case "delete":
		// A delete deferred by an open image, never finished.
		im, err := m.OpenImage(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if ds, err := m.DeleteSnapshot(ctx, ref); err != nil || !ds.Deferred {
			t.Fatalf("delete: %+v, %v", ds, err)
		}
		defer im.Close() // never runs
		die()
	}
	t.Fatal("child survived")
}

func runCrashChild(t *testing.T, spec string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashRecovery$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+spec)
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v\n%s", err, out)
	}
}

// TestCrashRecovery kills a process in the middle of a snapshot (after it committed part of the
// snapshot's chunks) and while a delete waits for an image, and checks what the next writer finds:
// the interrupted snapshot undone, the delete finished, no garbage left after gc, the rest intact.
func TestCrashRecovery(t *testing.T) {
	if spec := os.Getenv(crashEnv); spec != "" {
		crashChild(t, spec)
		return
	}
	if testing.Short() {
		t.Skip("writes 40 MiB")
	}
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store")
	disk := filepath.Join(dir, "disk.img")
	size := int64(40 << 20) // more than one batch of records
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(data[:8<<20])
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, err := Open(ctx, storeDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.AddVolume(ctx, VolumeSpec{Name: "vol", Source: disk, ChunkSize: testChunk}); err != nil {
		t.Fatal(err)
	}
	base, err := m.CreateSnapshot(ctx, "vol", CreateOptions{Name: "base"})
	if err != nil {
		t.Fatal(err)
	}
	baseData := bytes.Clone(data)
	m.Close()
	rng.Read(data)
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}

	runCrashChild(t, "snapshot:"+storeDir+":vol:")

	// A reader sees only what was committed ready.
	ro, err := Open(ctx, storeDir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if ss, err := ro.Snapshots(ctx, ""); err != nil || len(ss) != 1 || ss[0].Name != "base" {
		t.Fatalf("reader after the crash: %+v, %v", ss, err)
	}
	var crashed store.StoreStats
	ro.Store().View(ctx, func(tx *store.Tx) (err error) { crashed, err = tx.Stats(); return err })
	ro.Close()
	t.Logf("after the crash: %+v", crashed)

	m, err = Open(ctx, storeDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { m.Close() }()
	want := distinctChunks(baseData)
	check := func(when string) {
		t.Helper()
		var st store.StoreStats
		m.Store().View(ctx, func(tx *store.Tx) (err error) { st, err = tx.Stats(); return err })
		if st.Chunks != want {
			t.Fatalf("%s: %d chunks stored, want %d", when, st.Chunks, want)
		}
		rep, err := m.Verify(ctx, nil, nil)
		if err != nil || len(rep.Faults) > 0 {
			t.Fatalf("%s: verify %+v, %v", when, rep.Faults, err)
		}
	}
	check("after recovery")
	if crashed.Chunks <= want {
		t.Logf("the crashed snapshot had committed no chunk: the test did not hit its target")
	}
	if ss, _ := m.Snapshots(ctx, ""); len(ss) != 1 {
		t.Fatalf("snapshots after recovery: %+v", ss)
	}
	gc, err := m.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc after the crash: %+v", gc)
	check("after gc")
	var st store.StoreStats
	m.Store().View(ctx, func(tx *store.Tx) (err error) { st, err = tx.Stats(); return err })
	if alloc := packAllocated(t, m); alloc > st.StoredBytes+64<<10 {
		t.Fatalf("packs take %d bytes after gc for %d bytes of records", alloc, st.StoredBytes)
	}
	if got := readImage(t, m, base.Ref()); !bytes.Equal(got, baseData) {
		t.Fatal("base snapshot changed")
	}
	// The next snapshot goes through.
	next, err := m.CreateSnapshot(ctx, "vol", CreateOptions{Name: "next"})
	if err != nil {
		t.Fatal(err)
	}
	if got := readImage(t, m, next.Ref()); !bytes.Equal(got, data) {
		t.Fatal("snapshot after the crash reads wrong")
	}
	want = distinctChunks(baseData, data)
	check("after the next snapshot")

	// A delete waiting for an image when the process dies is finished by the next writer.
	m.Close()
	runCrashChild(t, "delete:"+storeDir+":vol:"+base.Ref())
	m, err = Open(ctx, storeDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ss, _ := m.Snapshots(ctx, ""); len(ss) != 1 || ss[0].Name != "next" {
		t.Fatalf("snapshots after the interrupted delete: %+v", ss)
	}
	want = distinctChunks(data)
	check("after the interrupted delete")
	if got := readImage(t, m, next.Ref()); !bytes.Equal(got, data) {
		t.Fatal("snapshot reads wrong after the interrupted delete")
	}
}
