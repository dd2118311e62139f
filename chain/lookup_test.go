package chain

import (
	"errors"
	"fmt"
	"testing"

	"github.com/snapfs/snapfs/store"
)

// TestLookupErr checks that only a missing row reads as "not found": a database that fails to
// answer must not make a FUSE lookup or a command say a snapshot does not exist.
func TestLookupErr(t *testing.T) {
	busy := errors.New("database is locked")
	for _, tc := range []struct {
		err      error
		notFound bool
	}{
		{fmt.Errorf("snapshot 7: %w", store.ErrNotFound), true},
		{busy, false},
		{fmt.Errorf("query: %w", busy), false},
	} {
		got := lookupErr("snapshot v/s", tc.err)
		if errors.Is(got, ErrNotFound) != tc.notFound {
			t.Errorf("lookupErr(%v) = %v: not found %v, want %v", tc.err, got, !tc.notFound, tc.notFound)
		}
		if !tc.notFound && !errors.Is(got, busy) {
			t.Errorf("lookupErr(%v) = %v: lost the cause", tc.err, got)
		}
	}
}
