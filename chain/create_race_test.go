package chain

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

// TestSnapshotWaitingOnDroppedChain starts two first snapshots of a volume together. The first is
// cancelled, and undoing it drops the chain it had started, which the second had already looked
// up and was waiting to lock. The second must take its snapshot in the volume's chain as it is
// then, not fail to find the one it waited for.
func TestSnapshotWaitingOnDroppedChain(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("v", 8<<20)
	u.write(path, 0, u.random(8<<20))
	want := u.read(path)
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	var once sync.Once
	bDone := make(chan struct{})
	var b Snapshot
	var errB error
	_, errA := u.m.CreateSnapshot(ctxA, "v", CreateOptions{Name: "a", Progress: func(done, total int64) {
		once.Do(func() {
			go func() {
				defer close(bDone)
				b, errB = u.m.CreateSnapshot(context.Background(), "v", CreateOptions{Name: "b"})
			}()
			time.Sleep(200 * time.Millisecond) // b finds the chain a started and waits for its lock
			cancelA()
		})
	}})
	if once == (sync.Once{}) {
		t.Fatal("Progress was never called")
	}
	<-bDone
	if !errors.Is(errA, context.Canceled) {
		t.Fatalf("cancelled snapshot: %v", errA)
	}
	if errB != nil {
		t.Fatalf("snapshot that waited for the cancelled one: %v", errB)
	}
	if b.Chain != "v" || b.Seq != 1 {
		t.Fatalf("snapshot %s, seq %d: want the first of a chain named v", b.Ref(), b.Seq)
	}
	if cs, err := u.m.Chains(u.ctx); err != nil || len(cs) != 1 || cs[0].Snapshots != 1 {
		t.Fatalf("chains %+v, %v: want v with one snapshot", cs, err)
	}
	if !bytes.Equal(u.image(b.Ref()), want) {
		t.Fatal("the snapshot does not read as the disk")
	}
	u.verify()
}

// TestSnapshotQueuedBehindShrinkingRestore restores a smaller snapshot onto the volume's own image
// file and starts a snapshot of the volume meanwhile. The snapshot waits for the restore, then
// takes the disk as the restore left it: cut to the smaller size.
func TestSnapshotQueuedBehindShrinkingRestore(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("v", 16<<20)
	u.write(path, 0, u.random(16<<20))
	small := u.snap("v", "small")
	want := u.read(path)
	if err := os.Truncate(path, 32<<20); err != nil {
		t.Fatal(err)
	}
	u.write(path, 0, u.random(32<<20))
	during, err := u.snapshotDuringRestore(small.Ref(), "v")
	if err != nil {
		t.Fatalf("snapshot queued behind the restore: %v", err)
	}
	if during.Size != 16<<20 {
		t.Fatalf("snapshot of %d bytes, want the restored disk's %d", during.Size, 16<<20)
	}
	if !bytes.Equal(u.image(during.Ref()), want) {
		t.Fatal("the snapshot does not read as the restored disk")
	}
	u.verify()
}

// TestFailedSnapshotOfRemovedVolume removes a volume whose chain has no snapshot left (its only one
// was deleted) while a snapshot of it runs, then cancels the snapshot. The chain, left with neither
// volume nor snapshot, goes: it would otherwise stay listed for good and keep its name from the
// volume were it added again.
func TestFailedSnapshotOfRemovedVolume(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("v", 8<<20)
	u.write(path, 0, u.random(8<<20))
	u.snap("v", "s1")
	if _, err := u.m.DeleteSnapshot(u.ctx, "v/s1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	_, err := u.m.CreateSnapshot(ctx, "v", CreateOptions{Name: "s2", Progress: func(done, total int64) {
		if calls++; calls == 1 {
			if err := u.m.RemoveVolume(context.Background(), "v"); err != nil {
				t.Error(err)
			}
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled snapshot: %v", err)
	}
	if cs, err := u.m.Chains(u.ctx); err != nil || len(cs) != 0 {
		t.Fatalf("chains left: %+v, %v", cs, err)
	}
	// Added again, the volume starts a chain under its own name.
	if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: "v", Source: path, ChunkSize: testChunk}); err != nil {
		t.Fatal(err)
	}
	if s := u.snap("v", "s3"); s.Chain != "v" {
		t.Fatalf("snapshot %s: want it in chain v", s.Ref())
	}
	u.verify()
}
