package main

// Crash anywhere: the snapfs binary is killed with SIGKILL at random instants during snapshot
// create, delete, clone, restore and gc; after each kill the store must verify, every snapshot that
// was complete before must read bit-exact, the interrupted operation must have happened whole or
// not at all, and gc must leave no byte of pack file that no chunk uses.
//
// What "whole or not at all" means per operation:
//   - create: the snapshot exists and reads exactly as the disk did, or does not exist;
//   - delete: the snapshot is gone, or still there and bit-exact; the others are untouched;
//   - clone --volume: the volume, its chain and its first snapshot all exist (and then the image
//     file is complete) or none of them does; a partly written image file without a volume is
//     expected (the process died while writing it);
//   - restore: the store does not change at all; the target file may be partly written, which is
//     expected from a restore that was killed;
//   - gc: nothing visible changes; the next gc reclaims what the killed one did not.

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/snapfs/snapfs/chain"
	"github.com/snapfs/snapfs/store"
)

var crashPoints = flag.Int("crash.points", crashPointsDefault(), "kill points per operation in the crash tests (env SNAPFS_CRASH_POINTS)")

func crashPointsDefault() int {
	if n, err := strconv.Atoi(os.Getenv("SNAPFS_CRASH_POINTS")); err == nil && n > 0 {
		return n
	}
	return 50
}

// crashRig is one store under a crash test and the model of what it must hold.
type crashRig struct {
	t     *testing.T
	e     *env
	rng   *rand.Rand
	src   *rand.ChaCha8
	disk  string
	data  []byte            // the disk's current contents
	snaps map[string][]byte // CHAIN/NAME -> contents, for every snapshot that must exist
	sums  map[string][][32]byte
	dur   time.Duration // how long an uninterrupted run of the operation takes
	scale float64       // kills land within dur*scale (1 if 0)...
	from  float64       // ...and after dur*from
	until func() bool   // if set, kill as soon as it holds instead (polled every millisecond)
	kills struct{ done, undone int }
}

func newCrashRig(t *testing.T, size int, seed uint64) *crashRig {
	e := newEnv(t)
	r := &crashRig{t: t, e: e, rng: rand.New(rand.NewPCG(seed, seed)),
		src: rand.NewChaCha8([32]byte{byte(seed)}), disk: e.path("disk.img"), snaps: map[string][]byte{},
		sums: map[string][][32]byte{}}
	r.data = make([]byte, size)
	r.scramble(1)
	e.ok("init")
	e.ok("volume", "add", "v", "--source", r.disk, "--chunk-size", "64K")
	return r
}

// scramble rewrites a fraction of the disk's 64 KiB chunks with fresh random bytes.
func (r *crashRig) scramble(frac float64) {
	r.t.Helper()
	for off := 0; off < len(r.data); off += chunk64K {
		if frac >= 1 || r.rng.Float64() < frac {
			r.src.Read(r.data[off : off+chunk64K])
		}
	}
	if err := os.WriteFile(r.disk, r.data, 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// snapshot takes a snapshot that is not interrupted.
func (r *crashRig) snapshot(name string) {
	r.t.Helper()
	r.open(true, func(m *chain.Manager) {
		if _, err := m.CreateSnapshot(context.Background(), "v", chain.CreateOptions{Name: name}); err != nil {
			r.t.Fatal(err)
		}
	})
	r.snaps["v/"+name] = bytes.Clone(r.data)
}

// timeIt runs the operation once, uninterrupted, to learn how long it takes.
func (r *crashRig) timeIt(args ...string) {
	r.t.Helper()
	start := time.Now()
	r.e.ok(args...)
	r.dur = time.Since(start)
	r.t.Logf("%s takes %v uninterrupted", strings.Join(args, " "), r.dur)
}

// killed runs snapfs args and kills it with SIGKILL after a random delay between 0 and the
// operation's uninterrupted run time. It reports whether the process exited (successfully) by
// itself before the kill.
func (r *crashRig) killed(args ...string) (finished bool) {
	r.t.Helper()
	cmd := exec.Command(snapfsBin, append([]string{"--store", r.e.store}, args...)...)
	cmd.Env = append(os.Environ(), "SNAPFS_STORE=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	scale := r.scale
	if scale == 0 {
		scale = 1
	}
	lo := int64(float64(r.dur) * r.from)
	delay := time.Duration(lo + r.rng.Int64N(int64(float64(r.dur)*scale)-lo+1))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.After(delay)
	var tick <-chan time.Time
	if r.until != nil {
		timer = nil
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
wait:
	for {
		select {
		case err := <-done:
			if err != nil {
				r.t.Fatalf("snapfs %s failed without a kill: %v\n%s", strings.Join(args, " "), err, out.String())
			}
			return true
		case <-timer:
			break wait
		case <-tick:
			if r.until() {
				break wait
			}
		}
	}
	cmd.Process.Kill()
	err := <-done
	if err == nil {
		return true // it was exiting already
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		r.t.Fatalf("snapfs %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return false
}

// open opens the store in this process (read-only unless write) and runs fn on it: quicker than the
// binary for the test's own bookkeeping.
//
// A writer holds off this process's forks while it is open: the subtests run in parallel and start
// snapfs processes all the time, and a child forked while the store's lock file is open here keeps
// the lock (its copy of the descriptor) until it execs, so that the next writer, here or in a
// snapfs process, could find the store locked by a process that never used it.
func (r *crashRig) open(write bool, fn func(m *chain.Manager)) {
	r.t.Helper()
	if write {
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
	}
	m, err := chain.Open(context.Background(), r.e.store, chain.Options{ReadOnly: !write})
	// The fork lock shrinks that window but does not close it (a few opens in 20,000 still found the
	// lock held, against a loop of forks, each time for well under a millisecond): only a lock that
	// stays is a failure.
	for deadline := time.Now().Add(10 * time.Second); errors.Is(err, chain.ErrLocked) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		m, err = chain.Open(context.Background(), r.e.store, chain.Options{ReadOnly: !write})
	}
	if err != nil {
		r.t.Fatal(err)
	}
	defer m.Close()
	fn(m)
}

// listed is every ready snapshot the store lists, as CHAIN/NAME.
func (r *crashRig) listed() []string {
	r.t.Helper()
	var refs []string
	r.open(false, func(m *chain.Manager) {
		ss, err := m.Snapshots(context.Background(), "")
		if err != nil {
			r.t.Fatal(err)
		}
		for _, s := range ss {
			refs = append(refs, s.Ref())
		}
	})
	slices.Sort(refs)
	return refs
}

// state is what the store lists (volumes, chains, snapshots).
func (r *crashRig) state() string {
	r.t.Helper()
	var b strings.Builder
	r.open(false, func(m *chain.Manager) {
		ctx := context.Background()
		vs, err1 := m.Volumes(ctx)
		cs, err2 := m.Chains(ctx)
		ss, err3 := m.Snapshots(ctx, "")
		if err := errors.Join(err1, err2, err3); err != nil {
			r.t.Fatal(err)
		}
		fmt.Fprintf(&b, "%+v\n%+v\n%+v\n", vs, cs, ss)
	})
	return b.String()
}

func (r *crashRig) has(ref string) bool { return slices.Contains(r.listed(), ref) }

// check is what must hold after every kill: verify passes, the store lists exactly the model's
// snapshots and each reads bit-exact, and after gc the store holds exactly the chunks the
// snapshots use and its pack files hold nothing else.
func (r *crashRig) check(when string) {
	r.t.Helper()
	if res := r.e.run("verify"); res.code != 0 {
		r.t.Fatalf("%s: verify: %s", when, res)
	}
	want := slices.Sorted(func(yield func(string) bool) {
		for ref := range r.snaps {
			if !yield(ref) {
				return
			}
		}
	})
	if got := r.listed(); !slices.Equal(got, want) {
		r.t.Fatalf("%s: snapshots %v, want %v", when, got, want)
	}
	r.e.ok("gc")
	ctx := context.Background()
	m, err := chain.Open(ctx, r.e.store, chain.Options{ReadOnly: true})
	if err != nil {
		r.t.Fatal(err)
	}
	defer m.Close()
	distinct := map[[32]byte]bool{}
	for ref := range r.sums {
		if r.snaps[ref] == nil {
			delete(r.sums, ref)
		}
	}
	for ref, data := range r.snaps {
		im, err := m.OpenImage(ctx, ref)
		if err != nil {
			r.t.Fatalf("%s: open %s: %v", when, ref, err)
		}
		got := make([]byte, im.Size())
		_, err = im.ReadAt(got, 0)
		im.Close()
		if err != nil {
			r.t.Fatalf("%s: read %s: %v", when, ref, err)
		}
		if !bytes.Equal(got, data) {
			r.t.Fatalf("%s: %s does not read as it was written", when, ref)
		}
		sums, ok := r.sums[ref]
		if !ok {
			sums = chunkSums(data)
			r.sums[ref] = sums
		}
		for _, sum := range sums {
			distinct[sum] = true
		}
	}
	var st store.StoreStats
	if err := m.Store().View(ctx, func(tx *store.Tx) (err error) { st, err = tx.Stats(); return err }); err != nil {
		r.t.Fatal(err)
	}
	if st.Chunks != int64(len(distinct)) {
		r.t.Fatalf("%s: %d chunks stored after gc, the snapshots use %d", when, st.Chunks, len(distinct))
	}
	packs, _ := filepath.Glob(filepath.Join(r.e.store, "packs", "*"))
	var alloc int64
	var files []string
	for _, p := range packs {
		var sb syscall.Stat_t
		if err := syscall.Stat(p, &sb); err == nil {
			alloc += sb.Blocks * 512
			files = append(files, fmt.Sprintf("%s: size %d, %d bytes allocated", filepath.Base(p), sb.Size, sb.Blocks*512))
		}
	}
	// Records are 4 KiB-aligned, so a pack's blocks are its records' bytes; allow a block of
	// slack per file for the filesystem's rounding.
	if alloc > st.StoredBytes+int64(len(packs))*4096 {
		r.t.Fatalf("%s: %d pack files take %d bytes after gc for %d bytes of records: leaked space\n%s",
			when, len(packs), alloc, st.StoredBytes, strings.Join(files, "\n"))
	}
}

// chunkSums lists the hashes of data's 64 KiB chunks that are not all zeros.
func chunkSums(data []byte) [][32]byte {
	var sums [][32]byte
	for off := 0; off < len(data); off += chunk64K {
		if c := data[off:min(off+chunk64K, len(data))]; !allZeros(c) {
			sums = append(sums, blake3.Sum256(c))
		}
	}
	return sums
}

func allZeros(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (r *crashRig) count(finished bool) {
	if finished {
		r.kills.done++
	} else {
		r.kills.undone++
	}
}

func (r *crashRig) report(op string) {
	r.t.Logf("%s: %d kill points: %d left it undone, %d found it done", op, r.kills.done+r.kills.undone, r.kills.undone, r.kills.done)
}

// TestCrashAnywhere kills snapfs at random instants during each operation (see the top of this file
// for what must hold after each kill). -crash.points N (or SNAPFS_CRASH_POINTS) sets the number of
// kill points per operation.
func TestCrashAnywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("kills snapfs hundreds of times")
	}
	n := *crashPoints
	t.Run("create", func(t *testing.T) {
		t.Parallel()
		// 34 MiB of fresh data is more than one 32 MiB batch, so a kill can land between commits.
		r := newCrashRig(t, 34<<20, 1)
		r.timeIt("snapshot", "create", "v", "--name", "timing")
		midway := 0
		r.snaps["v/timing"] = bytes.Clone(r.data)
		for i := range n {
			// Every fourth snapshot rewrites the whole disk (two batches), and is killed in its
			// second half, where the first batch may be committed; the others rewrite a tenth.
			r.until = nil
			if i%4 == 0 {
				r.scramble(1)
				r.from, r.scale = 0.5, 1.1
				if i%8 == 0 { // kill it right after its first batch is committed
					r.until = committedPart(t, r.e.store)
				}
			} else {
				r.scramble(0.1)
				r.from, r.scale = 0, 0.4
			}
			name := fmt.Sprintf("c%d", i)
			finished := r.killed("snapshot", "create", "v", "--name", name)
			if r.has("v/" + name) {
				r.snaps["v/"+name] = bytes.Clone(r.data)
			} else if finished {
				t.Fatalf("snapshot create %s finished but made no snapshot", name)
			}
			r.count(r.snaps["v/"+name] != nil)
			r.open(false, func(m *chain.Manager) { // did the kill land after a batch was committed?
				m.Store().View(context.Background(), func(tx *store.Tx) error {
					if ss, _ := tx.SnapshotsWithStatus(chain.StatusCreating); len(ss) > 0 {
						if ds, _ := tx.Deltas(ss[0].ID); len(ds) > 0 {
							midway++
						}
					}
					return nil
				})
			})
			r.check(fmt.Sprintf("kill %d during snapshot create", i))
			r.trim(2)
		}
		r.report("snapshot create")
		t.Logf("snapshot create: %d kills left a snapshot with committed chunks to roll back", midway)
	})
	t.Run("delete", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, 16<<20, 2)
		r.snapshot("s0")
		r.scramble(0.3)
		r.snapshot("timing")
		r.timeIt("snapshot", "delete", "v/timing")
		delete(r.snaps, "v/timing")
		for i := range n {
			r.scramble(0.3)
			r.snapshot(fmt.Sprintf("s%d", i+1))
			r.trim(4)
			refs := slices.Sorted(func(yield func(string) bool) {
				for ref := range r.snaps {
					if !yield(ref) {
						return
					}
				}
			})
			// Mostly a middle snapshot, whose rows merge into the next one.
			victim := refs[r.rng.IntN(len(refs))]
			finished := r.killed("snapshot", "delete", victim)
			gone := !r.has(victim)
			if finished && !gone {
				t.Fatalf("snapshot delete %s finished but the snapshot is still there", victim)
			}
			if gone {
				delete(r.snaps, victim)
			}
			r.count(gone)
			r.check(fmt.Sprintf("kill %d during snapshot delete %s", i, victim))
		}
		r.report("snapshot delete")
	})
	t.Run("clone", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, 16<<20, 3)
		r.snapshot("a")
		r.scramble(0.5)
		r.snapshot("b")
		r.timeIt("clone", "v/b", "--to", r.e.path("timing.img"), "--volume", "timing")
		r.forgetClone("timing", "b", r.e.path("timing.img"))
		for i := range n {
			src := []string{"a", "b"}[i%2]
			vol, img := fmt.Sprintf("k%d", i), r.e.path(fmt.Sprintf("k%d.img", i))
			finished := r.killed("clone", "v/"+src, "--to", img, "--volume", vol)
			var registered, hasChain bool
			r.open(false, func(m *chain.Manager) {
				_, err := m.Volume(context.Background(), vol)
				registered = err == nil
				_, err = m.Chain(context.Background(), vol)
				hasChain = err == nil
			})
			if finished && !registered {
				t.Fatalf("clone to volume %s finished but registered nothing", vol)
			}
			if registered != hasChain || registered != r.has(vol+"/"+src) {
				t.Fatalf("kill %d during clone: volume %v, chain %v, snapshot %v: a half-registered clone",
					i, registered, hasChain, r.has(vol+"/"+src))
			}
			r.count(registered)
			if registered {
				r.snaps[vol+"/"+src] = r.snaps["v/"+src]
				got, err := os.ReadFile(img)
				if err != nil || !bytes.Equal(got, r.snaps["v/"+src]) {
					t.Fatalf("kill %d: clone volume %s registered but its image is not the snapshot (%v)", i, vol, err)
				}
			}
			r.check(fmt.Sprintf("kill %d during clone", i))
			if registered {
				r.forgetClone(vol, src, img)
			} else {
				os.Remove(img) // a partly written image is expected; it is not the store's
			}
		}
		r.report("clone --volume")
	})
	t.Run("restore", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, 8<<20, 4)
		r.snapshot("a")
		r.scramble(0.5)
		r.snapshot("b")
		target := r.e.path("target.img")
		r.timeIt("restore", "v/a", "--to", target, "--force")
		before := r.state()
		for i := range n {
			src := []string{"a", "b"}[i%2]
			if finished := r.killed("restore", "v/"+src, "--to", target, "--force"); finished {
				if got, _ := os.ReadFile(target); !bytes.Equal(got, r.snaps["v/"+src]) {
					t.Fatalf("restore of v/%s finished but the target differs", src)
				}
				r.count(true)
			} else {
				r.count(false) // the target may be partly written: expected of a killed restore
			}
			if after := r.state(); after != before {
				t.Fatalf("kill %d during restore changed the store:\n%s\nwas:\n%s", i, after, before)
			}
			r.check(fmt.Sprintf("kill %d during restore", i))
		}
		// A restore run to its end after all this repairs the target.
		r.e.ok("restore", "v/b", "--to", target, "--force")
		if got, _ := os.ReadFile(target); !bytes.Equal(got, r.snaps["v/b"]) {
			t.Fatal("restore after the kills: target differs")
		}
		r.report("restore")
	})
	t.Run("daemon", func(t *testing.T) {
		// The mount daemon is the writer while the store is mounted: kill it with SIGKILL in the
		// middle of a snapshot or a delete that a command sent it. The command must fail (or have
		// succeeded), not hang; after a lazy unmount of the dead mount, the store must be as after a
		// killed command, and mounting it again must work.
		needFUSE(t)
		t.Parallel()
		r := newCrashRig(t, 8<<20, 6)
		r.snapshot("s0")
		mnt := r.e.path("mnt")
		os.Mkdir(mnt, 0o755)
		mount := func() {
			t.Helper()
			if res := r.e.run("mount", mnt); res.code != 0 {
				t.Fatalf("mount: %s\n%s", res, r.e.daemonLog())
			}
		}
		t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
		mount()
		r.scramble(0.5)
		r.timeIt("snapshot", "create", "v", "--name", "timing")
		r.snaps["v/timing"] = bytes.Clone(r.data)
		for i := range max(10, n/5) {
			var args []string
			var ref string
			create := i%2 == 0 || len(r.snaps) < 2
			if create {
				r.scramble(0.5)
				ref = fmt.Sprintf("v/d%d", i)
				args = []string{"snapshot", "create", "v", "--name", ref[2:]}
			} else {
				refs := slices.Sorted(maps.Keys(r.snaps))
				ref = refs[r.rng.IntN(len(refs))]
				args = []string{"snapshot", "delete", ref}
			}
			pid := readPID(t, r.e.store)
			cmd := exec.Command(snapfsBin, append([]string{"--store", r.e.store}, args...)...)
			cmd.Env = append(os.Environ(), "SNAPFS_STORE=")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			time.Sleep(time.Duration(r.rng.Int64N(int64(r.dur) + 1)))
			syscall.Kill(pid, syscall.SIGKILL)
			select {
			case <-done:
			case <-time.After(time.Minute):
				cmd.Process.Kill()
				t.Fatalf("snapfs %q still running a minute after its daemon was killed", args)
			}
			for syscall.Kill(pid, 0) == nil {
				time.Sleep(5 * time.Millisecond)
			}
			syscall.Unmount(mnt, syscall.MNT_DETACH)
			happened := r.has(ref) == create
			if happened && create {
				r.snaps[ref] = bytes.Clone(r.data)
			} else if happened {
				delete(r.snaps, ref)
			}
			r.count(happened)
			r.check(fmt.Sprintf("daemon killed during %q (kill %d)", args, i))
			r.trim(3) // in this process, while no daemon holds the store
			mount()
		}
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		r.report("daemon running snapshot create and delete")
	})
	t.Run("gc", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, 16<<20, 5)
		r.snapshot("a")
		junk := func() {
			// Garbage for gc: pack files the metadata does not know, and an interrupted snapshot's
			// uncommitted records (its process is killed before it commits).
			for j := range 3 {
				b := make([]byte, (1+r.rng.IntN(64))<<16)
				for i := range b {
					b[i] = byte(r.rng.Uint32())
				}
				// One named as snapfs names packs, the others not (gc must remove them too).
				name := []string{"%010d.pack", "%d.pack", "0%d.pack"}[j]
				os.WriteFile(filepath.Join(r.e.store, "packs", fmt.Sprintf(name, 900000+j)), b, 0o600)
			}
		}
		junk()
		r.timeIt("gc")
		for i := range n {
			junk()
			finished := r.killed("gc")
			r.count(finished)
			r.check(fmt.Sprintf("kill %d during gc", i))
			if i%10 == 9 {
				r.scramble(0.2)
				r.snapshot(fmt.Sprintf("s%d", i))
			}
		}
		r.report("gc")
	})
}

// committedPart returns a probe of whether a snapshot being created has committed chunks yet.
func committedPart(t *testing.T, storeDir string) func() bool {
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(storeDir, "meta.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return func() bool {
		var n int
		err := db.QueryRow(`SELECT COUNT(*) FROM deltas d JOIN snapshots s ON s.id = d.snapshot_id
			WHERE s.status = 'creating'`).Scan(&n)
		return err == nil && n > 0
	}
}

// trim deletes the oldest snapshots of v, uninterrupted, until at most n are left, to keep the
// store small.
func (r *crashRig) trim(n int) {
	r.t.Helper()
	for len(r.snaps) > n {
		oldest, order := "", 0
		for ref := range r.snaps {
			k, err := strconv.Atoi(strings.TrimLeft(strings.TrimPrefix(ref, "v/"), "abcdefghijklmnopqrstuvwxyz"))
			if err != nil {
				k = -1
			}
			if oldest == "" || k < order {
				oldest, order = ref, k
			}
		}
		r.open(true, func(m *chain.Manager) {
			if _, err := m.DeleteSnapshot(context.Background(), oldest); err != nil {
				r.t.Fatal(err)
			}
		})
		delete(r.snaps, oldest)
	}
}

// forgetClone removes a registered clone: its volume, its chain's snapshot and its image.
func (r *crashRig) forgetClone(vol, snap, img string) {
	r.t.Helper()
	r.open(true, func(m *chain.Manager) {
		ctx := context.Background()
		if err := m.RemoveVolume(ctx, vol); err != nil {
			r.t.Fatal(err)
		}
		if _, err := m.DeleteSnapshot(ctx, vol+"/"+snap); err != nil {
			r.t.Fatal(err)
		}
	})
	delete(r.snaps, vol+"/"+snap)
	os.Remove(img)
}
