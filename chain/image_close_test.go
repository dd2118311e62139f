package chain

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/snapfs/snapfs/store"
)

// TestCloseAfterDeleteFinishedElsewhere closes the last image of a deleted snapshot while the
// snapshot's chain is locked (a snapshot of it being created, say). Meanwhile a second delete of
// the snapshot, which no longer sees it pinned, finishes the merge first. Close, which waited for
// the lock to finish it too, finds the snapshot gone: that is no error.
func TestCloseAfterDeleteFinishedElsewhere(t *testing.T) {
	u := newUnit(t, Options{})
	path := u.disk("v", 1<<20)
	u.write(path, 0, u.random(1<<20))
	s1 := u.snap("v", "s1")
	u.touch(path, 0, 7)
	want := u.read(path)
	s2 := u.snap("v", "s2")
	im, err := u.m.OpenImage(u.ctx, s1.Ref())
	if err != nil {
		t.Fatal(err)
	}
	if st, err := u.m.DeleteSnapshot(u.ctx, s1.Ref()); err != nil || !st.Deferred {
		t.Fatalf("delete of an open snapshot: %+v, %v", st, err)
	}
	var chainID int64
	err = u.m.Store().View(u.ctx, func(tx *store.Tx) error {
		s, err := tx.SnapshotByID(s1.ID)
		chainID = s.ChainID
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	unlock := u.m.lockChain(chainID)
	closed := make(chan error, 1)
	go func() { closed <- im.Close() }()
	// Close drops the pin and looks at the snapshot under openMu: once the pin is gone and openMu
	// free again, Close has seen the snapshot deleting and goes on to wait for the chain's lock.
	for u.m.pinned(s1.ID) {
		time.Sleep(time.Millisecond)
	}
	u.m.openMu.Lock()
	u.m.openMu.Unlock()
	// What a second DeleteSnapshot of it does once it holds the lock.
	if _, err := u.m.finishDelete(u.ctx, s1.ID); err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := <-closed; err != nil {
		t.Fatalf("close after the delete was finished: %v", err)
	}
	if _, err := u.m.Snapshot(u.ctx, s1.Ref()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted snapshot: %v", err)
	}
	if !bytes.Equal(u.image(s2.Ref()), want) {
		t.Fatal("the snapshot after the deleted one reads wrong")
	}
	if st := u.stats(); st.Chunks != distinctChunks(want) {
		t.Fatalf("%d chunks stored, the live snapshot has %d", st.Chunks, distinctChunks(want))
	}
	u.verify()
}
