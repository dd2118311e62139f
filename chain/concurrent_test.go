package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConcurrentChains runs snapshots, deletes, image reads and restores on three volumes at once,
// each in its own goroutine, with verify and gc running alongside, and checks every snapshot's bytes
// and the store's chunk count at the end.
func TestConcurrentChains(t *testing.T) {
	u := newUnit(t, Options{CacheBytes: 256 << 10})
	rounds := 40
	if testing.Short() || raceEnabled {
		rounds = 12
	}
	type snap struct {
		ref  string
		data []byte
	}
	var mu sync.Mutex
	live := map[string][]snap{}
	shared := map[string][]byte{} // every live snapshot, for the reader
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	fail := func(format string, args ...any) { errs <- fmt.Errorf(format, args...) }
	for w := range 3 {
		name := fmt.Sprintf("w%d", w)
		size := int64(1<<20 + w*40000)
		path := u.disk(name, size)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 77))
			data := make([]byte, size)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				fail("%v", err)
				return
			}
			defer f.Close()
			var mine []snap
			for i := range rounds {
				for range 1 + rng.IntN(4) {
					off := rng.IntN(len(data) - 3*testChunk)
					n := 1 + rng.IntN(3*testChunk)
					for j := off; j < off+n; j++ {
						data[j] = byte(rng.Uint32())
					}
					if _, err := f.WriteAt(data[off:off+n], int64(off)); err != nil {
						fail("%v", err)
						return
					}
				}
				s, err := u.m.CreateSnapshot(u.ctx, name, CreateOptions{Name: fmt.Sprintf("s%d", i)})
				if err != nil {
					fail("snapshot %s: %v", name, err)
					return
				}
				mine = append(mine, snap{s.Ref(), bytes.Clone(data)})
				mu.Lock()
				shared[s.Ref()] = mine[len(mine)-1].data
				mu.Unlock()
				switch rng.IntN(4) {
				case 0: // delete one
					k := rng.IntN(len(mine))
					if rng.IntN(2) == 0 {
						k = len(mine) - 1 // the newest: the next snapshot is made against it
					}
					mu.Lock()
					delete(shared, mine[k].ref)
					mu.Unlock()
					if _, err := u.m.DeleteSnapshot(u.ctx, mine[k].ref); err != nil {
						fail("delete %s: %v", mine[k].ref, err)
						return
					}
					mine = append(mine[:k], mine[k+1:]...)
				case 1: // read one
					if len(mine) == 0 {
						break
					}
					s := mine[rng.IntN(len(mine))]
					im, err := u.m.OpenImage(u.ctx, s.ref)
					if err != nil {
						fail("open %s: %v", s.ref, err)
						return
					}
					got := make([]byte, im.Size())
					_, err = im.ReadAt(got, 0)
					im.Close()
					if err != nil || !bytes.Equal(got, s.data) {
						fail("%s reads wrong (%v)", s.ref, err)
						return
					}
				case 2: // restore one to a file
					if len(mine) == 0 {
						break
					}
					s := mine[rng.IntN(len(mine))]
					to := filepath.Join(u.dir, name+"-restore.img")
					if _, err := u.m.Restore(u.ctx, s.ref, RestoreOptions{To: to}); err != nil {
						fail("restore %s: %v", s.ref, err)
						return
					}
					if got, err := os.ReadFile(to); err != nil || !bytes.Equal(got, s.data) {
						fail("restore of %s differs (%v)", s.ref, err)
						return
					}
					os.Remove(to)
				}
			}
			mu.Lock()
			live[name] = mine
			mu.Unlock()
		}()
	}
	stop := make(chan struct{})
	var side sync.WaitGroup
	side.Add(1)
	go func() { // read any chain's snapshots, holding some open across deletes and snapshots
		defer side.Done()
		rng := rand.New(rand.NewPCG(9, 9))
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			var ref string
			var want []byte
			for r, d := range shared {
				ref, want = r, d
				break
			}
			mu.Unlock()
			if ref == "" {
				time.Sleep(time.Millisecond)
				continue
			}
			im, err := u.m.OpenImage(u.ctx, ref)
			if err != nil {
				if !errors.Is(err, ErrNotFound) {
					fail("open %s: %v", ref, err)
				}
				continue
			}
			got := make([]byte, im.Size())
			if _, err := im.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
				fail("reader: %s reads wrong (%v)", ref, err)
			}
			time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
			if _, err := im.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
				fail("reader: %s reads wrong after a while (%v)", ref, err)
			}
			if err := im.Close(); err != nil {
				fail("close %s: %v", ref, err)
			}
		}
	}()
	side.Add(1)
	go func() { // verify and gc while the others work
		defer side.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if i%3 == 2 {
				if _, err := u.m.GC(u.ctx); err != nil {
					fail("gc: %v", err)
				}
				continue
			}
			rep, err := u.m.Verify(u.ctx, nil, nil)
			if err != nil {
				fail("verify: %v", err)
			}
			for _, f := range rep.Faults {
				fail("verify during the work: %+v", f)
			}
		}
	}()
	wg.Wait()
	close(stop)
	side.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	var images [][]byte
	for _, mine := range live {
		for _, s := range mine {
			if !bytes.Equal(u.image(s.ref), s.data) {
				t.Errorf("%s reads wrong", s.ref)
			}
			images = append(images, s.data)
		}
	}
	if st := u.stats(); st.Chunks != distinctChunks(images...) {
		t.Errorf("store holds %d chunks, the live snapshots %d", st.Chunks, distinctChunks(images...))
	}
	u.verify()
}

// TestDeleteBesideFirstSnapshotOfProcess deletes the newest snapshot of one chain while another
// chain is snapshotted, in a manager just opened (as a daemon just started): the delete punches its
// freed records after its commit, the snapshot makes the process's first append, and the punches
// must not land on the new snapshot's committed records.
func TestDeleteBesideFirstSnapshotOfProcess(t *testing.T) {
	ctx := context.Background()
	for round := range 3 {
		u := newUnit(t, Options{})
		pb := u.disk("b", 1<<20)
		u.write(pb, 0, u.random(1<<20))
		u.snap("b", "b1")
		pa := u.disk("a", 100<<20) // many records to punch: the delete's punches take a while
		u.write(pa, 0, u.random(100<<20))
		u.snap("a", "a1")
		u.m.Close()
		m, err := Open(ctx, filepath.Join(u.dir, "store"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		u.m = m
		u.write(pb, 0, u.random(1<<20))
		want := u.read(pb)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.DeleteSnapshot(ctx, "a/a1"); err != nil {
				t.Error(err)
			}
		}()
		s, err := m.CreateSnapshot(ctx, "b", CreateOptions{Name: "b2"})
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		im, err := m.OpenImage(ctx, s.Ref())
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		_, err = im.ReadAt(got, 0)
		im.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("round %d: snapshot b/b2, committed, does not read back: %v", round, err)
		}
	}
}

// TestCancelReportsWhatHappened cancels snapshot creations and deletes at staggered instants,
// including after their commit: an operation that reports an error left nothing behind (no new
// snapshot; the snapshot to delete still listed), one that reports success did all of it.
func TestCancelReportsWhatHappened(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("v", 1<<20)
	u.write(path, 0, u.random(1<<20))
	u.snap("v", "base")
	tries := 240
	if testing.Short() || raceEnabled {
		tries = 80
	}
	for i := range tries {
		delay := time.Duration(i%80) * 50 * time.Microsecond
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(delay); cancel() }()
		name := fmt.Sprintf("s%d", i)
		_, err := u.m.CreateSnapshot(ctx, "v", CreateOptions{Name: name})
		cancel()
		listed := slices.Contains(u.names("v"), name)
		if err == nil && !listed || err != nil && listed {
			t.Fatalf("create %s cancelled after %v: error %v, listed %v", name, delay, err, listed)
		}
		if !listed {
			continue
		}
		ctx, cancel = context.WithCancel(context.Background())
		go func() { time.Sleep(delay); cancel() }()
		_, err = u.m.DeleteSnapshot(ctx, "v/"+name)
		cancel()
		listed = slices.Contains(u.names("v"), name)
		if err == nil && listed || err != nil && !listed {
			t.Fatalf("delete %s cancelled after %v: error %v, still listed %v", name, delay, err, listed)
		}
		if listed {
			if _, err := u.m.DeleteSnapshot(context.Background(), "v/"+name); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestSnapshotDuringRestore starts a snapshot of a volume while a restore writes the volume's disk:
// the snapshot waits for the restore and holds the restored disk, never a half-restored one.
func TestSnapshotDuringRestore(t *testing.T) {
	ctx := context.Background()
	u := newUnit(t, Options{})
	size := 32 << 20 // several restore spans
	path := u.disk("v", int64(size))
	u.write(path, 0, u.random(size))
	u.snap("v", "old")
	want := u.read(path)
	u.write(path, 0, u.random(size))

	var once sync.Once
	var taken Snapshot
	var snapErr error
	var wg sync.WaitGroup
	progress := func(done, total int64) {
		if done > 0 && done < total {
			once.Do(func() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					taken, snapErr = u.m.CreateSnapshot(ctx, "v", CreateOptions{Name: "during"})
				}()
				time.Sleep(20 * time.Millisecond) // let it read what it can
			})
		}
	}
	if _, err := u.m.Restore(ctx, "v/old", RestoreOptions{Progress: progress}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if snapErr != nil {
		t.Fatal(snapErr)
	}
	if taken.ID == 0 {
		t.Fatal("no snapshot was started during the restore")
	}
	if !bytes.Equal(readImage(t, u.m, taken.Ref()), want) {
		t.Fatal("a snapshot taken during a restore holds a half-restored disk")
	}
}

// TestRemoveVolumeBesideFirstSnapshot removes a volume while its first snapshot starts: either the
// snapshot is taken (the removal leaving its chain, whole), or it fails saying the volume is gone;
// never another error.
func TestRemoveVolumeBesideFirstSnapshot(t *testing.T) {
	ctx := context.Background()
	u := newUnit(t, Options{})
	for i := range 30 {
		name := fmt.Sprintf("v%d", i)
		path := u.disk(name, 1<<20)
		u.write(path, 0, u.random(1<<20))
		var wg sync.WaitGroup
		var snapErr, rmErr error
		var s Snapshot
		wg.Go(func() { s, snapErr = u.m.CreateSnapshot(ctx, name, CreateOptions{Name: "first"}) })
		wg.Go(func() { rmErr = u.m.RemoveVolume(ctx, name) })
		wg.Wait()
		if rmErr != nil {
			t.Fatalf("remove %s: %v", name, rmErr)
		}
		switch {
		case snapErr == nil:
			if !bytes.Equal(readImage(t, u.m, s.Ref()), u.read(path)) {
				t.Fatalf("snapshot of %s taken before its removal reads wrong", name)
			}
		case errors.Is(snapErr, ErrNotFound) && strings.Contains(snapErr.Error(), "volume "+name):
		default:
			t.Fatalf("snapshot of %s beside its removal: %v, want success or the volume not found", name, snapErr)
		}
	}
}
