package chain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapfs/snapfs/store"
	"golang.org/x/sys/unix"
)

// RestoreOptions tune Restore.
type RestoreOptions struct {
	To    string // "" for the chain's source disk; a path that does not exist is created
	Force bool   // write even when the target is mounted or attached
	// NewDisk restores to the volume's path even when it names another disk than the volume was
	// added with (see ErrOtherDisk), and makes that disk the volume's.
	NewDisk  bool
	Progress Progress
}

// RestoreStats says what a restore did.
type RestoreStats struct {
	Target        string `json:"target"`
	Size          int64  `json:"size"`
	ChunksWritten int64  `json:"chunks_written"`
	ChunksSkipped int64  `json:"chunks_skipped"`
	BytesWritten  int64  `json:"bytes_written"`
	// Warning says what went wrong beside a restore that succeeded (see closeRead), if anything.
	Warning string `json:"warning,omitempty"`
}

// Restore writes a snapshot back to a disk (rolls it back), writing only the chunks whose content
// differs from what the disk holds. It refuses a block device smaller than the snapshot, and a
// target in use (unless Force). A regular-file target ends up exactly the snapshot's size, grown
// or cut (a failed restore leaves its length as it was). Newer snapshots stay.
func (m *Manager) Restore(ctx context.Context, ref string, opts RestoreOptions) (st RestoreStats, err error) {
	im, err := m.OpenImage(ctx, ref)
	if err != nil {
		return RestoreStats{}, err
	}
	defer func() { st.Warning, err = closeRead(im, err) }()
	own := chainDisk{path: opts.To}
	if opts.To == "" {
		if own, err = m.chainSource(ctx, im.info.Chain); err != nil {
			return RestoreStats{}, err
		}
	}
	target := own.path
	// Not the store's own files, not even with Force: that would destroy the snapshots restored.
	tree, err := m.storeTree()
	if err != nil {
		return RestoreStats{}, err
	}
	if err := tree.refuse("target", target); err != nil {
		return RestoreStats{}, err
	}
	d, created, err := openTarget(target, im.Size(), opts.Force)
	if err != nil {
		return RestoreStats{}, err
	}
	defer d.Close()
	if err := lockTarget(d); err != nil {
		// Not removed, even if this restore created it: the one writing it now opened it since.
		return RestoreStats{}, err
	}
	// What fails before a byte is written leaves no file this restore created.
	unmade := func(err error) (RestoreStats, error) {
		if created {
			return RestoreStats{}, removeCreated(d.path, err)
		}
		return RestoreStats{}, err
	}
	if err := tree.refuseOpened("target", d.path, d.f); err != nil {
		return unmade(err)
	}
	if !opts.NewDisk && !created {
		// The chain's own disk, by default: not another disk its path names now.
		if err := checkSameDisk("target", own.volume, own.ident, diskIdent(d), d.path); err != nil {
			return RestoreStats{}, fmt.Errorf("%w: to restore onto it as the volume's disk from now on, restore with --new-disk", err)
		}
	}
	// A snapshot of the disk being restored must not read it half-restored: restoring onto a
	// volume's disk holds the volume's chain, as taking a snapshot of it does.
	if c, ok, err := m.chainOfDisk(ctx, d); err != nil {
		return unmade(fmt.Errorf("restore %s to %s: %w", ref, d.path, err))
	} else if ok {
		defer m.lockChain(c)()
	}
	st = RestoreStats{Target: d.path, Size: im.Size()}
	ungrow := func() error { return nil }
	if d.size < im.Size() {
		if ungrow, err = d.grow(im.Size()); err != nil {
			return st, fmt.Errorf("restore %s to %s: %w (nothing was written)", ref, d.path, err)
		}
	}
	err = m.writeImage(ctx, im.view, d, &st, opts.Progress)
	if err == nil {
		err = d.cutTo(im.Size())
	}
	if err != nil {
		if created {
			return st, removeCreated(d.path, fmt.Errorf("restore %s to %s: %w", ref, d.path, err))
		}
		if uerr := ungrow(); uerr != nil {
			err = fmt.Errorf("%w (and %v)", err, uerr)
		}
		if d.touched.Load() {
			return st, fmt.Errorf("restore %s to %s: %w (%s is partly restored: restore it again)", ref, d.path, err, d.path)
		}
		return st, fmt.Errorf("restore %s to %s: %w (nothing was written)", ref, d.path, err)
	}
	if (created || opts.NewDisk) && opts.To == "" {
		// The volume's image file was gone and is made again, or the user said the disk now at
		// its path is the volume's: it is the volume's disk now.
		if err := m.adoptDisk(ctx, im.info.Chain, d); err != nil {
			return st, fmt.Errorf("restored %s to %s, but %w", ref, d.path, err)
		}
	}
	return st, nil
}

// adoptDisk records d as the disk of the volume of the chain named chainName.
func (m *Manager) adoptDisk(ctx context.Context, chainName string, d *disk) error {
	err := m.st.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		c, err := tx.ChainByName(chainName)
		if err != nil || c.VolumeID == 0 {
			return err
		}
		return tx.SetVolumeIdent(c.VolumeID, diskIdent(d))
	})
	if err != nil {
		return fmt.Errorf("recording it as the volume's disk: %w", err)
	}
	return nil
}

// chainOfDisk returns the chain of the volume whose disk d is, if d is a volume's and that volume has
// a chain.
func (m *Manager) chainOfDisk(ctx context.Context, d *disk) (chainID int64, ok bool, err error) {
	err = m.st.View(ctx, func(tx *store.Tx) error {
		v, found, err := volumeOfDisk(tx, d)
		if err != nil || !found {
			return err
		}
		c, err := tx.ChainByVolume(v.ID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		chainID, ok = c.ID, err == nil
		return err
	})
	return chainID, ok, err
}

// chainSource returns the disk a chain's snapshots are of, and its identity if its volume knows it.
func (m *Manager) chainSource(ctx context.Context, chainName string) (d chainDisk, err error) {
	err = m.st.View(ctx, func(tx *store.Tx) error {
		c, err := tx.ChainByName(chainName)
		if err != nil {
			return err
		}
		d.path = c.Source
		if c.VolumeID == 0 {
			return nil
		}
		v, err := tx.VolumeByID(c.VolumeID)
		if errors.Is(err, ErrNotFound) {
			return nil // forgotten: the chain's source path is all there is
		}
		if err != nil {
			return err // not a reason to skip the identity check
		}
		d.path, d.ident, d.volume = v.Source, v.Ident, v.Name
		return nil
	})
	return d, err
}

// chainDisk is the disk a chain's snapshots are of: its path, and its identity and volume's name
// while a volume has it.
type chainDisk struct {
	path, ident, volume string
}

// openTarget opens (or creates, and then says so) a restore target and checks that it can take size
// bytes. A regular file larger than that is cut to size only once the restore has succeeded (cutTo),
// so that a failed restore has not lost its tail too.
func openTarget(path string, size int64, force bool) (d *disk, created bool, err error) {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("create %s: %w", path, unwrapPath(err))
		}
		f.Close()
		created = true
		if err := os.Truncate(path, size); err != nil {
			os.Remove(path)
			return nil, false, fmt.Errorf("size %s: %w", path, unwrapPath(err))
		}
	}
	d, err = checkTarget(path, size, force)
	if err != nil && created {
		os.Remove(path)
	}
	return d, created, err
}

// checkTarget opens the restore target path and checks that it can take size bytes and is free.
func checkTarget(path string, size int64, force bool) (*disk, error) {
	d, err := openDisk(path, os.O_RDWR)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("target %s is read-only: %w", path, err)
		}
		return nil, fmt.Errorf("target: %w", err)
	}
	if d.size < size && d.block { // an image file grows to size (see grow); a device cannot
		d.Close()
		return nil, fmt.Errorf("%w: target %s is too small: %d bytes, the snapshot needs %d", ErrInvalid, d.path, d.size, size)
	}
	if why := inUse(d); why != "" && !force {
		d.Close()
		return nil, fmt.Errorf("target %s is %s: %w (use --force to write anyway)", d.path, why, ErrInUse)
	}
	if d.block && !force {
		// What the mount table and holders do not show, and what may start using the device while
		// the restore runs.
		if err := d.claim(); err != nil {
			d.Close()
			return nil, fmt.Errorf("%w (use --force to write anyway)", err)
		}
	}
	return d, nil
}

// grow extends a regular-file target shorter than the snapshot's disk (an image shrunk since) to
// size, and returns how to undo it if the restore fails: cut it back to the length it had.
func (d *disk) grow(size int64) (undo func() error, err error) {
	before := d.size
	if err := d.f.Truncate(size); err != nil {
		return nil, fmt.Errorf("extend %s to %d bytes: %w", d.path, size, err)
	}
	d.size = size
	return func() error {
		if err := d.f.Truncate(before); err != nil {
			return fmt.Errorf("cut %s back to its %d bytes: %w", d.path, before, err)
		}
		d.size = before
		return nil
	}, nil
}

// cutTo makes a regular-file target exactly size bytes long, as the snapshot's disk was.
func (d *disk) cutTo(size int64) error {
	if d.block || d.size <= size {
		return nil
	}
	if err := d.f.Truncate(size); err != nil {
		return fmt.Errorf("truncate %s: %w", d.path, err)
	}
	d.size = size
	return d.f.Sync()
}

// restoreSpan is how much of the disk a restore worker takes at a time: it reads that much of the
// target in one call and writes each run of changed chunks in one call, directly where the target
// allows. On the machines measured 4 MiB direct writes ran at 2.3 GB/s, 64 KiB buffered ones at
// 350 MB/s once the final sync was counted.
const restoreSpan = 4 << 20

// writeImage makes d's first v.size bytes equal to the view, span by span on all cores, reading
// what d holds first and writing only chunks that differ. Zero chunks become holes in files.
func (m *Manager) writeImage(ctx context.Context, v *view, d *disk, st *RestoreStats, progress Progress) error {
	total := v.count
	per := max(1, restoreSpan/v.chunkSize)
	var next, done, written, skipped, wbytes atomic.Int64
	var firstErr error
	var errOnce sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fail := func(err error) { errOnce.Do(func() { firstErr = err; cancel() }) }
	var progMu sync.Mutex
	var wg sync.WaitGroup
	d.useDirect()
	// Records are asked for a window ahead of the chunks being written, so that a cold store is read
	// ahead rather than record by record.
	window := max(per, prefetchAhead/v.chunkSize/per*per)
	prefetch := func(from, to int64) {
		if chunks, err := v.span(ctx, from, min(total, to)); err == nil {
			m.st.Prefetch(chunks)
		}
	}
	prefetch(0, window)
	// Two workers a core: each waits on its span's write in turn, and with one a core the disk sat
	// idle while both decoded (restore of the benchmark disk: 2.8 s with 2 workers, 2.45 with 4,
	// 2.6 with 8).
	for range 2 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newSpanWriter(m, v, d, per)
			for ctx.Err() == nil {
				first := next.Add(per) - per
				if first >= total {
					return
				}
				if first%window == 0 && first+window < total {
					prefetch(first+window, first+2*window)
				}
				n := min(per, total-first)
				changed, err := w.sync(ctx, first, n)
				if err != nil {
					fail(err)
					return
				}
				written.Add(changed.chunks)
				wbytes.Add(changed.bytes)
				skipped.Add(n - changed.chunks)
				sum := done.Add(v.spanLen(first, n))
				if progress != nil && progMu.TryLock() {
					progress(sum, v.size)
					progMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	st.ChunksWritten, st.ChunksSkipped, st.BytesWritten = written.Load(), skipped.Load(), wbytes.Load()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
		return fmt.Errorf("sync %s: %w", d.path, err)
	}
	if progress != nil {
		progress(v.size, v.size)
	}
	return nil
}

// spanLen is the length of the n chunks from first.
func (v *view) spanLen(first, n int64) int64 {
	return (n-1)*v.chunkSize + v.chunkLen(first+n-1)
}

// spanWriter brings spans of a target disk in line with a view; one per goroutine.
type spanWriter struct {
	m        *Manager
	v        *view
	d        *disk
	cur      []byte     // what the target holds in the span
	out      []byte     // the view's chunks to write, at their place in the span
	zeroLen  int64      // the length zeroHash is of
	zeroHash store.Hash // the hash of zeroLen zero bytes
}

func newSpanWriter(m *Manager, v *view, d *disk, per int64) *spanWriter {
	n := int(per * v.chunkSize)
	return &spanWriter{m: m, v: v, d: d, cur: store.AlignedBuf(n), out: store.AlignedBuf(n)}
}

// writeCount is what a span's sync wrote.
type writeCount struct{ chunks, bytes int64 }

// sync makes the n chunks from first of the disk match the view and says what it wrote.
func (w *spanWriter) sync(ctx context.Context, first, n int64) (writeCount, error) {
	var wc writeCount
	cs := w.v.chunkSize
	base := first * cs
	length := w.v.spanLen(first, n)
	entries, err := w.v.span(ctx, first, first+n)
	if err != nil {
		return wc, err
	}
	hole, err := w.readTarget(w.cur[:length], base)
	if err != nil {
		return wc, err
	}
	runStart := int64(-1) // first chunk of the run of changed chunks waiting in out, or -1
	flush := func(end int64) error {
		if runStart < 0 {
			return nil
		}
		from, to := (runStart-first)*cs, (end-first-1)*cs+w.v.chunkLen(end-1)
		runStart = -1
		if _, err := w.d.writeAt(w.out[from:to], base+from); err != nil {
			return fmt.Errorf("write %s at %d: %w", w.d.path, base+from, err)
		}
		return nil
	}
	for idx := first; idx < first+n; idx++ {
		at := (idx - first) * cs
		size := w.v.chunkLen(idx)
		cur := w.cur[at : at+size]
		change, err := w.compare(ctx, entries[idx-first], cur, hole, w.out[at:at+size])
		if err != nil {
			return wc, err
		}
		switch change {
		case unchanged, zeroed:
			if err := flush(idx); err != nil {
				return wc, err
			}
			if change == zeroed {
				if err := w.zero(base+at, size); err != nil {
					return wc, err
				}
				wc.chunks, wc.bytes = wc.chunks+1, wc.bytes+size
			}
		case rewrite:
			if runStart < 0 {
				runStart = idx
			}
			wc.chunks, wc.bytes = wc.chunks+1, wc.bytes+size
		}
	}
	return wc, flush(first + n)
}

// chunkChange is what a chunk of the target needs.
type chunkChange int

const (
	unchanged chunkChange = iota
	zeroed                // the view has a hole where the target holds data
	rewrite               // the view's bytes, decoded into out, must be written
)

// compare decides what a chunk of the target, holding cur (or, when hole, zeros: cur is not read),
// needs to become c; for a rewrite it decodes c into out.
func (w *spanWriter) compare(ctx context.Context, c store.Chunk, cur []byte, hole bool, out []byte) (chunkChange, error) {
	n := int64(len(cur))
	if c.ID == 0 {
		if hole || allZero(cur) {
			return unchanged, nil
		}
		return zeroed, nil
	}
	if hole {
		// The target holds zeros there: no need to hash them, only to know the hash of zeros.
		if w.zeroLen != n {
			w.zeroLen, w.zeroHash = n, store.Sum(make([]byte, n))
		}
		if c.Size == n && c.Hash == w.zeroHash {
			return unchanged, nil
		}
	} else if c.Size == n && store.Sum(cur) == c.Hash {
		return unchanged, nil
	}
	data, err := w.m.st.ReadChunk(ctx, out[:0], c)
	if err != nil {
		return unchanged, err
	}
	if int64(len(data)) != n || &data[0] != &out[0] {
		return unchanged, fmt.Errorf("%w: chunk %d decodes to %d bytes, the view says %d", store.ErrCorrupt, c.ID, len(data), n)
	}
	return rewrite, nil
}

// readTarget reads what the disk holds in [off, off+len(p)); where a sparse file holds no data
// there at all it reads nothing, leaves p as it was, and says hole. (Clearing p instead made the
// restore of a sparse 1 TiB disk clear a terabyte of memory: 49 CPU-s for 32 MiB of data.)
func (w *spanWriter) readTarget(p []byte, off int64) (hole bool, err error) {
	if !w.d.block {
		if next, err := unix.Seek(int(w.d.f.Fd()), off, unix.SEEK_DATA); errors.Is(err, unix.ENXIO) || err == nil && next >= off+int64(len(p)) {
			return true, nil
		}
	}
	// Through the page cache: a restore onto a disk reads all of it and writes little, where the
	// kernel's read-ahead beats direct reads of one span per worker (1.3 s against 1.7-1.9 onto
	// the changed benchmark disk), and a disk just used is often cached.
	if n, err := w.d.f.ReadAt(p, off); n < len(p) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return false, fmt.Errorf("read %s at %d: %w", w.d.path, off, err)
	}
	return false, nil
}

// zero clears n bytes at off: a hole in a file, written zeros on a device.
func (w *spanWriter) zero(off, n int64) error {
	w.d.touched.Store(true)
	if !w.d.block {
		err := unix.Fallocate(int(w.d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
	}
	if _, err := w.d.f.WriteAt(make([]byte, n), off); err != nil {
		return fmt.Errorf("write %s at %d: %w", w.d.path, off, err)
	}
	return nil
}

// CloneOptions tune Clone.
type CloneOptions struct {
	To       string // the new image file; it must not exist
	Volume   string // when set, register the file as this volume, its chain starting from the snapshot
	Kind     string // the new volume's kind (default data)
	Instance string // the new volume's instance
	Progress Progress
}

// CloneResult says what a clone made.
type CloneResult struct {
	Path         string  `json:"path"`
	Size         int64   `json:"size"`
	BytesWritten int64   `json:"bytes_written"`
	Volume       *Volume `json:"volume,omitempty"`
	// Warning says what went wrong beside a clone that succeeded (see closeRead), if anything.
	Warning string `json:"warning,omitempty"`
}

// Clone writes a snapshot to a new sparse image file. With Volume set the file is registered as a new
// volume whose chain begins with the snapshot's chunks, shared rather than copied, so that the new
// volume's first own snapshot stores only what changed since the clone.
func (m *Manager) Clone(ctx context.Context, ref string, opts CloneOptions) (res CloneResult, err error) {
	spec := VolumeSpec{Name: opts.Volume, Source: opts.To, Kind: opts.Kind, Instance: opts.Instance, ChunkSize: DefaultChunkSize}
	if opts.Volume != "" {
		if err := spec.validate(); err != nil {
			return CloneResult{}, err
		}
	}
	im, err := m.OpenImage(ctx, ref)
	if err != nil {
		return CloneResult{}, err
	}
	defer func() { res.Warning, err = closeRead(im, err) }()
	if opts.Volume != "" {
		err := m.st.View(ctx, func(tx *store.Tx) error { return checkCloneVolume(tx, spec) })
		if err != nil {
			return CloneResult{}, err
		}
	}
	tree, err := m.storeTree()
	if err != nil {
		return CloneResult{}, err
	}
	if err := tree.refuse("target", opts.To); err != nil {
		return CloneResult{}, err
	}
	d, err := createImageFile(opts.To, im.Size())
	if err != nil {
		return CloneResult{}, err
	}
	if err := lockTarget(d); err != nil {
		d.Close()
		return CloneResult{}, err // not removed: whoever holds it opened it since it was made
	}
	if err := tree.refuseOpened("target", d.path, d.f); err != nil {
		d.Close()
		os.Remove(d.path)
		return CloneResult{}, err
	}
	res = CloneResult{Path: d.path, Size: im.Size()}
	err = m.writeClone(ctx, im, d, &res, opts.Progress)
	d.Close()
	if err == nil && opts.Volume != "" {
		spec.Source = d.path
		var v Volume
		if v, err = m.registerClone(ctx, im, spec, d.size); err == nil {
			res.Volume = &v
		}
	}
	if err != nil {
		return CloneResult{}, removeCreated(d.path, fmt.Errorf("clone %s to %s: %w", ref, opts.To, err))
	}
	return res, nil
}

// closeRead closes the image a restore or clone read, whose outcome is err. Closing the last reader
// of a snapshot deleted meanwhile finishes that delete; a failure there undoes nothing of the
// restore or clone, so it comes back as a warning beside their success (or told with their
// failure), and gc finishes the delete later.
func closeRead(im *Image, err error) (warning string, _ error) {
	cerr := im.Close()
	if cerr == nil {
		return "", err
	}
	w := fmt.Sprintf("the delete of %s, deferred while it was read, did not finish (snapfs gc finishes it): %v", im.info.Ref(), cerr)
	if err != nil {
		return "", fmt.Errorf("%w; %s", err, w)
	}
	return w, nil
}

// removeCreated removes the file a failed restore or clone created at path and says so in err.
func removeCreated(path string, err error) error {
	if rerr := os.Remove(path); rerr != nil {
		return fmt.Errorf("%w (and removing the file it was creating: %v)", err, rerr)
	}
	return fmt.Errorf("%w (the file it was creating is removed)", err)
}

// writeClone writes the image into the new sparse file d: a restore onto a disk of holes, which
// writes every chunk that holds data.
func (m *Manager) writeClone(ctx context.Context, im *Image, d *disk, res *CloneResult, progress Progress) error {
	var st RestoreStats
	err := m.writeImage(ctx, im.view, d, &st, progress)
	res.BytesWritten = st.BytesWritten
	return err
}

// lockTarget takes an exclusive flock on the target d for as long as it is open, or says that
// another restore or clone holds one: two writing one target (through a daemon, which runs both)
// would each report success and leave a mix of two snapshots.
func lockTarget(d *disk) error {
	if err := unix.Flock(int(d.f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("target %s is being written by another restore or clone: %w", d.path, ErrInUse)
		}
		return fmt.Errorf("lock target %s: %w", d.path, err)
	}
	return nil
}

// createImageFile creates a new sparse file of size bytes; an existing path is refused.
func createImageFile(path string, size int64) (*disk, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: no target path", ErrInvalid)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("target %s: %w", path, ErrExists)
		}
		return nil, fmt.Errorf("create %s: %w", path, unwrapPath(err))
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("size %s: %w", path, err)
	}
	f.Close()
	d, err := openDisk(path, os.O_RDWR)
	if err != nil {
		os.Remove(path)
	}
	return d, err
}

// checkCloneVolume refuses a clone volume whose name, or chain name, is taken, before any byte is written.
func checkCloneVolume(tx *store.Tx, spec VolumeSpec) error {
	if _, err := tx.VolumeByName(spec.Name); err == nil {
		return fmt.Errorf("volume %s: %w", spec.Name, ErrExists)
	}
	if _, err := tx.ChainByName(spec.Name); err == nil {
		return fmt.Errorf("chain %s: %w", spec.Name, ErrExists)
	}
	if spec.Kind == KindSystem && spec.Instance != "" {
		return noOtherSystemDisk(tx, spec.Instance)
	}
	return nil
}

// registerClone records the new volume and its chain, whose first snapshot shares the source
// snapshot's chunks (references taken, no bytes copied).
func (m *Manager) registerClone(ctx context.Context, im *Image, spec VolumeSpec, size int64) (Volume, error) {
	var out Volume
	err := m.st.Update(ctx, func(tx *store.Tx) error {
		if err := checkCloneVolume(tx, spec); err != nil {
			return err
		}
		region, err := m.st.Region(ctx)
		if err != nil {
			return err
		}
		now := time.Now().UnixNano()
		v := store.Volume{Name: spec.Name, Kind: spec.Kind, Instance: spec.Instance, Source: spec.Source, Size: size,
			ChunkSize: im.view.chunkSize, Created: now}
		if v.ID, err = tx.InsertVolume(v); err != nil {
			return err
		}
		c := store.Chain{Name: spec.Name, VolumeID: v.ID, Source: spec.Source, Region: region, ChunkSize: im.view.chunkSize, Created: now}
		if c.ID, err = tx.InsertChain(c); err != nil {
			return err
		}
		seq, err := tx.TakeSeq(c.ID)
		if err != nil {
			return err
		}
		s := store.Snapshot{ChainID: c.ID, Seq: seq, Name: im.info.Name, Volume: spec.Name, Size: im.Size(),
			Created: im.info.Created.UnixNano(), Status: StatusReady, Origin: im.info.ID, DataBytes: store.UnknownDataBytes}
		if s.ID, err = tx.InsertSnapshot(s); err != nil {
			return err
		}
		data, err := im.view.eachDeltas(ctx, func(ds []store.Delta) error { return tx.CopyDeltas(s.ID, ds) })
		if err != nil {
			return err
		}
		if err := tx.SetSnapshotDataBytes(s.ID, data); err != nil {
			return err
		}
		out, err = m.volumeView(tx, v)
		return err
	})
	return out, err
}

// eachDeltas calls fn with the view's data chunks as the deltas of a first snapshot (holes need no
// row), a segment of the map at a time, and returns the bytes those chunks hold.
func (v *view) eachDeltas(ctx context.Context, fn func(ds []store.Delta) error) (dataBytes int64, err error) {
	var ds []store.Delta
	for seg := int64(0); seg*v.m.segChunks < v.count; seg++ {
		entries, err := v.segment(ctx, seg)
		if err != nil {
			return 0, err
		}
		ds = ds[:0]
		for i, c := range entries {
			if c.ID != 0 {
				ds = append(ds, store.Delta{Idx: seg*v.m.segChunks + int64(i), Chunk: c.ID})
				dataBytes += c.Size
			}
		}
		if err := fn(ds); err != nil {
			return 0, err
		}
	}
	return dataBytes, nil
}
