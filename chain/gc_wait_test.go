package chain

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestGCWaitingHoldsUpNoSnapshot: gc waits for the snapshots being created before it reclaims
// space; while it waits, snapshots of other volumes go on starting and finishing, and cancelling
// the gc ends its wait. (Waiting in RWMutex.Lock held every new snapshot until the running one
// ended, and could not be cancelled.)
func TestGCWaitingHoldsUpNoSnapshot(t *testing.T) {
	u := newUnit(t, Options{})
	a := u.disk("a", 4<<20)
	u.write(a, 0, u.random(4<<20))
	b := u.disk("b", 1<<20)
	u.write(b, 0, u.random(1<<20))

	release, held := make(chan struct{}), make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		first := true
		_, err := u.m.CreateSnapshot(u.ctx, "a", CreateOptions{Name: "held", Progress: func(int64, int64) {
			if first {
				first = false
				close(held)
				<-release // a snapshot being created, for as long as the test wants
			}
		}})
		aDone <- err
	}()
	<-held
	defer func() {
		close(release)
		if err := <-aDone; err != nil {
			t.Errorf("the held snapshot: %v", err)
		}
	}()

	gcCtx, cancelGC := context.WithCancel(u.ctx)
	gcDone := make(chan error, 1)
	go func() { _, err := u.m.GC(gcCtx); gcDone <- err }()
	time.Sleep(100 * time.Millisecond) // gc is waiting for the held snapshot

	bDone := make(chan error, 1)
	go func() { _, err := u.m.CreateSnapshot(u.ctx, "b", CreateOptions{Name: "beside"}); bDone <- err }()
	select {
	case err := <-bDone:
		if err != nil {
			t.Fatalf("snapshot of another volume while gc waits: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a snapshot of another volume waits for the gc waiting for the held one")
	}
	select {
	case err := <-gcDone:
		t.Fatalf("gc returned (%v) while a snapshot was being created", err)
	default:
	}
	cancelGC()
	select {
	case err := <-gcDone:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled gc: %v, want %v", err, context.Canceled)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a cancelled gc goes on waiting")
	}
}
