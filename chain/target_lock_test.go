package chain

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestOneWriterPerTarget: a restore or clone onto a target another restore or clone is writing is
// refused (a daemon runs both at once; each would report success, the target holding a mix of the
// two snapshots), and the one writing it finishes it whole.
func TestOneWriterPerTarget(t *testing.T) {
	u := newUnit(t, Options{})
	const size = 32 << 20 // several spans of a restore, each reporting progress
	path := u.disk("v", size)
	u.write(path, 0, u.random(size))
	s1 := u.snap("v", "s1")
	want1 := u.read(path)
	u.write(path, 0, u.random(size))
	s2 := u.snap("v", "s2")

	for _, tc := range []struct {
		name  string
		first func(to string, p Progress) error
	}{
		{"restore", func(to string, p Progress) error {
			_, err := u.m.Restore(u.ctx, s1.Ref(), RestoreOptions{To: to, Progress: p})
			return err
		}},
		{"clone", func(to string, p Progress) error {
			_, err := u.m.Clone(u.ctx, s1.Ref(), CloneOptions{To: to, Progress: p})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "target.img")
			var second error
			var once sync.Once
			err := tc.first(target, func(done, total int64) {
				if done > 0 && done < total {
					once.Do(func() {
						_, second = u.m.Restore(u.ctx, s2.Ref(), RestoreOptions{To: target})
					})
				}
			})
			if err != nil {
				t.Fatalf("the first %s: %v", tc.name, err)
			}
			if once == (sync.Once{}) {
				t.Fatalf("the %s reported no progress part way: nothing was tried beside it", tc.name)
			}
			if !errors.Is(second, ErrInUse) || !strings.Contains(second.Error(), "being written by another restore or clone") {
				t.Errorf("a restore onto the target of a running %s: %v, want refused as in use", tc.name, second)
			}
			if !bytes.Equal(u.read(target), want1) {
				t.Errorf("the target of the %s is not its snapshot", tc.name)
			}
		})
	}
}
