package chain

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"
)

// snapshotDuringRestore restores ref onto volume vol's disk and, part way through, starts a
// snapshot of vol called "during"; it returns that snapshot once both have ended.
func (u *unit) snapshotDuringRestore(ref, vol string) (Snapshot, error) {
	u.t.Helper()
	var once sync.Once
	done := make(chan struct{})
	var during Snapshot
	var errDuring error
	_, err := u.m.Restore(u.ctx, ref, RestoreOptions{Progress: func(n, total int64) {
		if n > 0 && n < total {
			once.Do(func() {
				go func() {
					defer close(done)
					during, errDuring = u.m.CreateSnapshot(u.ctx, vol, CreateOptions{Name: "during"})
				}()
				time.Sleep(100 * time.Millisecond) // the snapshot reaches the chain's lock
			})
		}
	}})
	if err != nil {
		u.t.Fatal(err)
	}
	if once == (sync.Once{}) {
		u.t.Fatal("no snapshot started during the restore")
	}
	<-done
	return during, errDuring
}

// TestSnapshotQueuedBehindRecreatingRestore: a restore that recreates a volume's lost image file
// records the new file as the volume's disk under the chain's lock. A snapshot started meanwhile
// waits for that lock and takes the disk as the restore left it, instead of failing at once with
// "another disk than volume v was added with" against the identity the volume had before.
func TestSnapshotQueuedBehindRecreatingRestore(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("v", 16<<20)
	u.write(path, 0, u.random(16<<20))
	s1 := u.snap("v", "s1")
	want := u.read(path)
	if err := os.Remove(path); err != nil { // the volume's image is lost
		t.Fatal(err)
	}
	during, err := u.snapshotDuringRestore(s1.Ref(), "v")
	if err != nil {
		t.Fatalf("snapshot queued behind the restore: %v", err)
	}
	if !bytes.Equal(u.image(during.Ref()), want) {
		t.Fatal("snapshot does not read as the restored disk")
	}
}
