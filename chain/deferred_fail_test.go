package chain

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapfs/snapfs/store"
)

// TestDeferredDeleteThatFailsAtClose: a snapshot deleted while a restore or clone reads it is
// deleted when that read closes. When that finish fails (here the metadata's WAL is made
// immutable), the restore or clone, which did its work, succeeds with a warning that says so and
// names gc; the snapshot stays hidden and whole, and gc finishes the delete once it can.
func TestDeferredDeleteThatFailsAtClose(t *testing.T) {
	requireRoot(t, "chattr")
	for _, kind := range []string{"restore", "clone"} {
		t.Run(kind, func(t *testing.T) {
			u := newUnit(t, Options{})
			path := u.disk("v", 1<<20)
			u.write(path, 0, u.random(1<<20))
			s1 := u.snap("v", "s1")
			u.touch(path, 2, 3)
			u.snap("v", "s2")
			wantS2 := u.read(path)
			wal := filepath.Join(u.dir, "store", "meta.db-wal")

			deleted := false
			progress := func(done, total int64) {
				if deleted {
					return
				}
				deleted = true
				st, err := u.m.DeleteSnapshot(context.Background(), "v/s1")
				if err != nil || !st.Deferred {
					t.Errorf("delete while %s reads it: %+v, %v, want it deferred", kind, st, err)
				}
				immutable(t, wal)
			}
			to := filepath.Join(u.dir, kind+".img")
			var warning string
			var err error
			if kind == "restore" {
				var st RestoreStats
				st, err = u.m.Restore(u.ctx, "v/s1", RestoreOptions{To: to, Progress: progress})
				warning = st.Warning
			} else {
				var res CloneResult
				res, err = u.m.Clone(u.ctx, "v/s1", CloneOptions{To: to, Progress: progress})
				warning = res.Warning
			}
			if err != nil {
				t.Fatalf("%s whose deferred delete fails at close: %v, want success", kind, err)
			}
			if !strings.Contains(warning, "v/s1") || !strings.Contains(warning, "gc") {
				t.Errorf("%s's warning: %q, want it to name v/s1 and gc", kind, warning)
			}
			if got, _ := os.ReadFile(to); len(got) != 1<<20 {
				t.Errorf("%s wrote %d bytes", kind, len(got))
			}
			if st := u.status(s1.ID); st != StatusDeleting {
				t.Fatalf("v/s1 after the failed finish: %q, want deleting", st)
			}

			exec.Command("chattr", "-i", wal).Run()
			gc, err := u.m.GC(u.ctx)
			if err != nil || gc.DeletesFinished != 1 {
				t.Fatalf("gc: %+v, %v, want one delete finished", gc, err)
			}
			if st := u.status(s1.ID); st != "" {
				t.Errorf("v/s1 after gc: %q, want gone", st)
			}
			if !bytes.Equal(u.image("v/s2"), wantS2) {
				t.Error("v/s2 changed")
			}
			u.verify()
			if gc, err := u.m.GC(u.ctx); err != nil || gc.DeletesFinished != 0 {
				t.Errorf("second gc: %+v, %v, want nothing left to finish", gc, err)
			}
		})
	}
}

// immutable makes path immutable until the end of the test, or skips the test where the
// filesystem does not take it (fails under CI=true).
func immutable(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chattr +i: %v %s (CI=true: end-to-end tests must run)", err, out)
		}
		t.Skipf("chattr +i (the filesystem under the test's directory may not take it): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", path).Run() })
}

// status is the status of snapshot id, "" when it is gone.
func (u *unit) status(id int64) string {
	u.t.Helper()
	var s store.Snapshot
	err := u.m.Store().View(u.ctx, func(tx *store.Tx) (err error) {
		s, err = tx.SnapshotByID(id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil {
		u.t.Fatal(err)
	}
	return s.Status
}
