package chain

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"
)

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
	var once sync.Once
	done := make(chan struct{})
	var errDuring error
	var during Snapshot
	_, err := u.m.Restore(u.ctx, s1.Ref(), RestoreOptions{Progress: func(n, total int64) {
		if n > 0 && n < total {
			once.Do(func() {
				go func() {
					defer close(done)
					during, errDuring = u.m.CreateSnapshot(u.ctx, "v", CreateOptions{Name: "during"})
				}()
				time.Sleep(100 * time.Millisecond)
			})
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if errDuring != nil {
		t.Fatalf("snapshot queued behind the restore: %v", errDuring)
	}
	if !bytes.Equal(u.image(during.Ref()), want) {
		t.Fatal("snapshot does not read as the restored disk")
	}
}
