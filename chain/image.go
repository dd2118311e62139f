package chain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/snapfs/snapfs/store"
)

// Image reads one snapshot as a disk image. It is an io.ReaderAt that knows where the holes are.
type Image struct {
	m     *Manager
	info  Snapshot
	view  *view
	close sync.Once

	prefetchMu sync.Mutex
	prefetched int64 // chunk indexes below this have had their records prefetched
}

// prefetchAhead is how far past a large read the records of the following chunks are asked for.
const prefetchAhead = 16 << 20

// prefetch asks the store to read ahead the records of the chunks that follow a large read ending
// at chunk index end (exclusive), once the read comes within half the window of what was asked for.
func (im *Image) prefetch(end int64) {
	v := im.view
	window := max(1, prefetchAhead/v.chunkSize)
	im.prefetchMu.Lock()
	from := max(im.prefetched, end)
	to := min(v.count, end+window)
	if from >= to || im.prefetched > end+window/2 {
		im.prefetchMu.Unlock()
		return
	}
	im.prefetched = to
	im.prefetchMu.Unlock()
	if chunks, err := v.span(context.Background(), from, to); err == nil {
		im.m.st.Prefetch(chunks)
	}
}

// OpenImage opens the snapshot ref names for reading. While the image is open the snapshot's data is
// pinned: a delete hides the snapshot at once but frees its data only after the last Close.
func (m *Manager) OpenImage(ctx context.Context, ref string) (*Image, error) {
	var im *Image
	m.openMu.Lock()
	defer m.openMu.Unlock()
	err := m.st.View(ctx, func(tx *store.Tx) error {
		s, c, v, err := m.resolveView(tx, ref)
		if err != nil {
			return err
		}
		info := describe(c, s, 0)
		if prev, err := tx.PrevSnapshot(c.ID, s.Seq); err == nil {
			info.Parent = prev.ID
		}
		im = &Image{m: m, info: info, view: v}
		m.pin(s.ID)
		return nil
	})
	return im, err
}

// Info describes the snapshot the image reads (UniqueBytes is not filled in).
func (im *Image) Info() Snapshot { return im.info }

// Size is the disk's size at the snapshot.
func (im *Image) Size() int64 { return im.view.size }

// ChunkSize is the chain's chunk size.
func (im *Image) ChunkSize() int64 { return im.view.chunkSize }

// Close releases the image; it is safe to call more than once. Closing the last image of a deleted
// snapshot finishes the delete, which waits for a snapshot of the same chain being created.
func (im *Image) Close() error {
	var err error
	im.close.Do(func() { err = im.m.unpin(context.Background(), im.info.ID) })
	return err
}

// ReadAt reads the snapshot's bytes at off. It is safe for concurrent use, returns io.EOF at or past
// the end, and fails (wrapping ErrCorrupt) rather than return bytes that do not match their hash.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read image: negative offset %d", off)
	}
	v := im.view
	if off >= v.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := v.size - off; int64(want) > rest {
		p = p[:rest]
	}
	if len(p) >= 128<<10 {
		// A large read, most likely sequential (the kernel's readahead, dd, cp, a restore).
		im.prefetch((off + int64(len(p)) + v.chunkSize - 1) / v.chunkSize)
	}
	n, err := im.readSeq(p, off)
	if err == nil && n < want {
		err = io.EOF
	}
	return n, err
}

// readSeq reads p (within the image) at off, chunk by chunk.
func (im *Image) readSeq(p []byte, off int64) (int, error) {
	v := im.view
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		idx := pos / v.chunkSize
		within := pos - idx*v.chunkSize
		c, err := v.at(context.Background(), idx)
		if err != nil {
			return n, fmt.Errorf("read %s at %d: %w", im.info.Ref(), pos, err)
		}
		if c.ID == 0 {
			k := int(min(int64(len(p)-n), v.chunkLen(idx)-within))
			clear(p[n : n+k])
			n += k
			continue
		}
		if clen := v.chunkLen(idx); within == 0 && c.Size == clen && int64(len(p)-n) >= clen {
			// A whole chunk: decoded straight into p, unless the cache has it. Sequential reads
			// (dd, cp, the kernel's readahead) take this path and allocate nothing; the kernel's
			// page cache keeps what they read.
			if data, ok := im.m.cache.get(c.Hash); ok {
				n += copy(p[n:], data)
				continue
			}
			dst := p[n : n+int(clen) : n+int(clen)]
			if _, err := im.m.st.ReadChunk(context.Background(), dst, c); err != nil {
				return n, fmt.Errorf("read %s at %d: %w", im.info.Ref(), pos, err)
			}
			n += int(clen)
			continue
		}
		data, err := im.m.chunkData(context.Background(), c)
		if err != nil {
			return n, fmt.Errorf("read %s at %d: %w", im.info.Ref(), pos, err)
		}
		if clen := v.chunkLen(idx); int64(len(data)) != clen {
			// A damaged delta naming another chunk: shorter, it would never advance the read.
			return n, fmt.Errorf("read %s at %d: %w: chunk %d holds %d bytes, the image's chunk %d has %d",
				im.info.Ref(), pos, store.ErrCorrupt, c.ID, len(data), idx, clen)
		}
		n += copy(p[n:], data[within:])
	}
	return n, nil
}

// SeekData returns the first offset at or after off that holds data, as lseek(SEEK_DATA); ok is false
// when only holes follow.
func (im *Image) SeekData(off int64) (pos int64, ok bool) {
	v := im.view
	if off < 0 {
		off = 0
	}
	if off >= v.size {
		return 0, false
	}
	pos, found := int64(0), false
	err := v.eachFrom(context.Background(), off/v.chunkSize, func(idx int64, c store.Chunk) bool {
		if c.ID != 0 {
			pos, found = max(off, idx*v.chunkSize), true
		}
		return !found
	})
	if err != nil {
		// The map cannot be read: claim data, never a hole that may not be one; reading it fails.
		return off, true
	}
	return pos, found
}

// SeekHole returns the first offset at or after off inside a hole, as lseek(SEEK_HOLE); the end of the
// image counts as a hole.
func (im *Image) SeekHole(off int64) int64 {
	v := im.view
	if off < 0 {
		off = 0
	}
	pos := max(off, v.size)
	err := v.eachFrom(context.Background(), off/v.chunkSize, func(idx int64, c store.Chunk) bool {
		if c.ID == 0 {
			pos = max(off, idx*v.chunkSize)
			return false
		}
		return true
	})
	if err != nil {
		return max(off, v.size) // as SeekData: no hole is claimed that may not be one
	}
	return pos
}

// --- pins: open images keep their snapshot's data ---

func (m *Manager) pin(id int64) {
	m.pinMu.Lock()
	m.pins[id]++
	m.pinMu.Unlock()
}

// unpin drops one pin; the last one finishes a delete that was waiting for it.
func (m *Manager) unpin(ctx context.Context, id int64) error {
	// Under openMu, under which DeleteSnapshot marks the snapshot and decides whether to wait for
	// images, so that exactly one of the two finishes the delete.
	m.openMu.Lock()
	m.pinMu.Lock()
	m.pins[id]--
	last := m.pins[id] == 0
	if last {
		delete(m.pins, id)
	}
	m.pinMu.Unlock()
	if !last || m.st.ReadOnly() {
		m.openMu.Unlock()
		return nil
	}
	s, deleting, err := m.deleting(ctx, id)
	m.openMu.Unlock()
	if err != nil || !deleting {
		return err
	}
	// Under the chain's lock, as DeleteSnapshot: a snapshot being created was made against the chain
	// as it is, this snapshot's deltas included, and must become ready before they merge into it.
	defer m.lockChain(s.ChainID)()
	// A second delete of the snapshot, which saw no pin left, may have finished it while this
	// waited for the lock: then there is nothing left to do.
	if _, deleting, err = m.deleting(ctx, id); err != nil || !deleting {
		return err
	}
	_, err = m.finishDelete(ctx, id)
	return err
}

// deleting reads snapshot id and reports whether it is marked deleting; a snapshot that is gone is
// not.
func (m *Manager) deleting(ctx context.Context, id int64) (store.Snapshot, bool, error) {
	var s store.Snapshot
	err := m.st.View(ctx, func(tx *store.Tx) (err error) {
		s, err = tx.SnapshotByID(id)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return s, false, nil
	}
	if err != nil {
		// Its delete, if one waits for this image, is left for the next delete of it or the
		// store's next opening to finish.
		return s, false, fmt.Errorf("finish deleting snapshot %d: %w", id, err)
	}
	return s, s.Status == StatusDeleting, nil
}

func (m *Manager) pinned(id int64) bool {
	m.pinMu.Lock()
	defer m.pinMu.Unlock()
	return m.pins[id] > 0
}

// --- cache of decoded chunks ---

// chunkData returns a chunk's verified bytes through the cache. The result must not be modified.
func (m *Manager) chunkData(ctx context.Context, c store.Chunk) ([]byte, error) {
	if data, ok := m.cache.get(c.Hash); ok {
		return data, nil
	}
	data, err := m.st.ReadChunk(ctx, nil, c)
	if err != nil {
		return nil, err
	}
	m.cache.put(c.Hash, data)
	return data, nil
}
