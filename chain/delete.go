package chain

import (
	"context"
	"errors"
	"fmt"

	"github.com/snapfs/snapfs/store"
)

// DeleteStats says what a delete freed.
type DeleteStats struct {
	FreedChunks int64 `json:"freed_chunks"`
	FreedBytes  int64 `json:"freed_bytes"`
	// Deferred is true when an open image still reads the snapshot: it is hidden now and its data is
	// freed when the last image closes.
	Deferred bool `json:"deferred"`
	// Warning says what went wrong after the delete committed (returning its space), if anything.
	Warning string `json:"warning,omitempty"`
}

// DeleteSnapshot deletes the snapshot ref names, wherever it stands in its chain. Chunks a later
// snapshot still needs pass on to it; chunks only this snapshot references are freed. The disk is
// not touched. A snapshot whose delete failed part way (on a full filesystem, say) is hidden already;
// deleting it again finishes the delete. On a full filesystem the store's reserve is given up to
// make room: deleting is how a full store gets space back.
func (m *Manager) DeleteSnapshot(ctx context.Context, ref string) (DeleteStats, error) {
	var s store.Snapshot
	var c store.Chain
	err := m.st.View(ctx, func(tx *store.Tx) (err error) {
		s, c, err = resolve(tx, ref)
		return err
	})
	resume := err != nil && s.ID != 0 && s.Status == StatusDeleting
	if err != nil && !resume {
		return DeleteStats{}, err
	}
	defer m.lockChain(c.ID)()
	m.openMu.Lock()
	err = m.withRoom(func() error {
		return m.st.Update(ctx, func(tx *store.Tx) error {
			cur, err := tx.SnapshotByID(s.ID)
			if err != nil {
				return lookupErr("snapshot "+ref, err)
			}
			switch {
			case cur.Status == StatusReady:
				return tx.SetSnapshotStatus(s.ID, StatusDeleting)
			case cur.Status == StatusDeleting && resume && !m.pinned(s.ID):
				// A delete cut short. One deferred until an image closes did not fail: to
				// its caller the snapshot is gone.
				return nil
			default:
				return fmt.Errorf("snapshot %s: %w", ref, ErrNotFound)
			}
		})
	})
	deferred := err == nil && m.pinned(s.ID)
	m.openMu.Unlock()
	if err != nil {
		return DeleteStats{}, err
	}
	if deferred {
		return DeleteStats{Deferred: true}, nil
	}
	// Hidden now: a cancel from here on would leave it hidden and its space held, and tell the
	// caller the delete failed. The merge is short (its own changes), so it runs to its end.
	st, err := m.finishDelete(context.WithoutCancel(ctx), s.ID)
	if err == nil {
		m.st.EnsureReserve() // for the next delete on a full filesystem, now that there is room
	}
	return st, err
}

// withRoom runs fn, a transaction that deletes or undoes, once more after giving up the store's
// reserve if the filesystem was full: even a delete needs a little room (SQLite journals it before
// anything is freed).
func (m *Manager) withRoom(fn func() error) error {
	err := fn()
	if err != nil && store.IsFull(err) && !store.Committed(err) && m.st.ReleaseReserve() {
		err = fn()
	}
	return err
}

// finishDelete merges a snapshot marked deleting into its successor and frees what only it used:
//  1. its deltas that the next snapshot overrides (or that lie past the next snapshot's size) are
//     dropped with their references;
//  2. its other deltas move to the next snapshot, which inherited them until now;
//  3. with no next snapshot, all its deltas are dropped;
//  4. chunks left without references are deleted and their space returned after the commit.
func (m *Manager) finishDelete(ctx context.Context, id int64) (DeleteStats, error) {
	var st DeleteStats
	err := m.withRoom(func() error { return m.mergeAway(ctx, id, &st) })
	if store.Committed(err) {
		st.Warning, err = err.Error(), nil
	}
	if err != nil {
		return DeleteStats{}, fmt.Errorf("delete snapshot %d: %w", id, err)
	}
	return st, nil
}

// mergeAway is finishDelete's transaction.
func (m *Manager) mergeAway(ctx context.Context, id int64, st *DeleteStats) error {
	return m.st.Update(ctx, func(tx *store.Tx) error {
		s, err := tx.SnapshotByID(id)
		if err != nil {
			return err
		}
		c, err := tx.ChainByID(s.ChainID)
		if err != nil {
			return err
		}
		next, err := tx.NextSnapshot(s.ChainID, s.Seq)
		switch {
		case err == nil:
			if err := tx.DropShadowedDeltas(s.ID, next.ID, chunkCount(next.Size, c.ChunkSize)); err != nil {
				return err
			}
			if err := tx.MoveDeltas(s.ID, next.ID); err != nil {
				return err
			}
		case errors.Is(err, ErrNotFound):
			if err := tx.DropDeltas(s.ID); err != nil {
				return err
			}
		default:
			return err
		}
		if err := tx.DeleteSnapshotRow(s.ID); err != nil {
			return err
		}
		if c.VolumeID == 0 {
			if err := dropEmptyChain(tx, c.ID); err != nil {
				return err
			}
		}
		st.FreedChunks, st.FreedBytes, err = tx.ReleaseUnreferenced()
		return err
	})
}

// dropEmptyChain removes a chain that has no snapshot left. Callers drop only chains whose volume was
// forgotten, or that the failed first snapshot of a volume started: a volume's chain otherwise stays
// while the volume does, even when empty.
func dropEmptyChain(tx *store.Tx, chain int64) error {
	left, err := tx.Snapshots(chain, "")
	if err != nil || len(left) > 0 {
		return err
	}
	return tx.DeleteChain(chain)
}
