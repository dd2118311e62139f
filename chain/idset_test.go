package chain

import "testing"

func TestIDSet(t *testing.T) {
	s := newIDSet(100)
	for _, tc := range []struct {
		id    int64
		added bool
	}{{1, true}, {63, true}, {64, true}, {1, false}, {100, true}, {1000, true}, {1000, false}, {64, false}} {
		if got := s.add(tc.id); got != tc.added {
			t.Errorf("add(%d) = %v, want %v", tc.id, got, tc.added)
		}
	}
	for id := int64(-1); id <= 1100; id++ {
		want := id == 1 || id == 63 || id == 64 || id == 100 || id == 1000
		if s.has(id) != want {
			t.Errorf("has(%d) = %v", id, !want)
		}
	}
}
