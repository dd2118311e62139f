package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapfs/snapfs/store"
	"golang.org/x/sys/unix"
)

// Progress reports how many of total bytes an operation has processed. It is called from one
// goroutine at a time.
type Progress func(done, total int64)

// CreateOptions tune CreateSnapshot.
type CreateOptions struct {
	Name     string   // "" for VOLUME-YYYYMMDD-HHMMSS (local time), with -2, -3… on collision
	Freeze   string   // mount point of a filesystem on the disk to freeze while it is read
	Progress Progress // bytes of the disk consumed so far
	// Now overrides the clock for the default name and the creation time: tests set the time, a
	// daemon the time zone of the command it applies.
	Now func() time.Time
	// NewDisk takes the snapshot even when the volume's path names another disk than the one it
	// was added with (see ErrOtherDisk), and makes that disk the volume's from then on.
	NewDisk bool
	// batchBufs, set by tests only, caps the record buffers (one per block of the disk that holds
	// new chunks) a batch holds, so that a small disk is committed in several batches; 0 for
	// batchBytes' worth.
	batchBufs int
}

// readBlock is how much of the disk the reader hands to a hasher at a time.
const readBlock = 1 << 20

// batchBytes bounds the record buffers a batch keeps in memory before it is committed (each one
// block's records; on the benchmark disk they are two thirds full). Each batch costs a commit,
// whose fsyncs (pack, WAL) wait behind the disk's queue and whose pack writes drain before it: on
// the benchmark disk 58 batches of 20 MiB of records spent 1.3 s in fsyncs, 25 of 48 MiB about
// half. Two batches are held at most.
const batchBytes = 48 << 20

// CreateSnapshot snapshots a volume: it reads the disk once, stores the chunks that differ from the
// chain's newest snapshot and makes the snapshot visible, complete, in a last transaction. On any
// error, cancellation included, nothing of it stays visible.
func (m *Manager) CreateSnapshot(ctx context.Context, volume string, opts CreateOptions) (Snapshot, error) {
	if opts.Name != "" {
		if err := ValidateName(opts.Name); err != nil {
			return Snapshot{}, err
		}
	}
	if opts.Freeze != "" {
		if err := checkFreezable(opts.Freeze, m.st.Dir()); err != nil {
			return Snapshot{}, err
		}
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if err := m.discardAbandoned(ctx); err != nil {
		return Snapshot{}, err
	}
	m.st.EnsureReserve()
	var vol store.Volume
	hasChain := false
	err := m.st.View(ctx, func(tx *store.Tx) (err error) {
		if vol, err = tx.VolumeByName(volume); err != nil {
			return err
		}
		_, err = tx.ChainByVolume(vol.ID)
		hasChain = err == nil
		if errors.Is(err, ErrNotFound) {
			err = nil
		}
		return err
	})
	if err != nil {
		return Snapshot{}, err
	}
	if !hasChain {
		// The disk of a volume without a chain is checked before one is started: a volume whose
		// disk is missing or another gets no chain. It is opened again under the chain's lock,
		// where a volume with a chain has its disk checked only: a restore holding that lock may
		// be recreating the disk, or taking another one on as the volume's.
		src, _, err := openSource(vol, opts.NewDisk)
		if err != nil {
			return Snapshot{}, err
		}
		src.Close()
	}
	for {
		c, started, err := m.chainFor(ctx, vol)
		if err != nil {
			return Snapshot{}, err
		}
		s, err := m.snapshotIn(ctx, c, started, vol, opts, now)
		if !errors.Is(err, errChainGone) {
			return s, err
		}
		// The chain went while this waited for its lock: the volume's first snapshot, which had
		// started it, failed and was undone. The volume's chain is looked up, or started, anew.
	}
}

// errChainGone says that the chain a snapshot waited to lock is no longer its volume's.
var errChainGone = errors.New("chain dropped while the snapshot waited for it")

// snapshotIn takes a snapshot of vol in c, the chain chainFor returned for it (started says that
// it started it), holding the chain's lock. It returns errChainGone if, once the lock is held, c is
// no longer the volume's chain.
func (m *Manager) snapshotIn(ctx context.Context, c store.Chain, started bool, vol store.Volume, opts CreateOptions, now func() time.Time) (Snapshot, error) {
	defer m.lockChain(c.ID)()
	// What fails before the snapshot is recorded leaves no chain it started: a first snapshot that
	// fails leaves nothing. (Another snapshot of the volume waiting for the lock starts one anew.)
	fail := func(err error) (Snapshot, error) {
		if started && !errors.Is(err, errChainGone) {
			derr := m.st.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error { return dropEmptyChain(tx, c.ID) })
			if derr != nil {
				err = fmt.Errorf("%w (and dropping the chain it started: %v)", err, derr)
			}
		}
		return Snapshot{}, err
	}
	// The disk is opened, and its size and identity read, only now: a restore onto it holds this
	// lock until it has cut the disk to its snapshot's size and recorded the disk it restored to
	// as the volume's.
	err := m.st.View(ctx, func(tx *store.Tx) (err error) {
		vol, err = currentVolume(tx, vol)
		return err
	})
	if err != nil {
		return fail(err)
	}
	src, ident, err := openSource(vol, opts.NewDisk)
	if err != nil {
		return fail(err)
	}
	defer src.Close()

	m.appendMu.RLock()
	defer m.appendMu.RUnlock()
	job := &createJob{m: m, chain: c, src: src, progress: opts.Progress, maxBatchBufs: opts.batchBufs}
	if ident != vol.Ident && ident != "" {
		job.ident = ident // a volume from before identities were kept, or a new disk
	}
	if err := job.begin(ctx, vol, opts.Name, now()); err != nil {
		return fail(err)
	}
	defer m.setActive(job.snap.ID, false)
	src.useDirect() // what the page cache does not hold is read directly
	if err := job.run(ctx, opts.Freeze); err != nil {
		if derr := m.discardSnapshot(context.WithoutCancel(ctx), job.snap.ID); derr != nil {
			err = fmt.Errorf("%w (and undoing it: %v)", err, derr)
		}
		return Snapshot{}, fmt.Errorf("snapshot %s/%s: %w", job.chain.Name, job.snap.Name, err)
	}
	// Committed: neither a cancel from now on nor a failed look-up of what was made may make the
	// caller think it failed (a script would take another).
	made, err := m.Snapshot(context.WithoutCancel(ctx), fmt.Sprint(job.snap.ID))
	if err != nil {
		s := job.snap
		s.Status, s.DataBytes = StatusReady, job.dataBytes.Load()
		return describe(job.chain, s, 0), nil
	}
	return made, nil
}

// openSource opens vol's disk for a snapshot and, unless newDisk, refuses another disk than the one
// the volume was added with (ErrOtherDisk). It returns the disk's identity too.
func openSource(vol store.Volume, newDisk bool) (*disk, string, error) {
	src, err := openDisk(vol.Source, 0)
	if err != nil {
		return nil, "", fmt.Errorf("source: %w", err)
	}
	ident := diskIdent(src)
	if !newDisk {
		if err := checkSameDisk("source", vol.Name, vol.Ident, ident, vol.Source); err != nil {
			src.Close()
			return nil, "", fmt.Errorf("%w: if it is the volume's disk now, snapshot it with --new-disk", err)
		}
	}
	return src, ident, nil
}

// chainFor returns the volume's chain, starting it (named after the volume) if the volume has none;
// started says it did.
func (m *Manager) chainFor(ctx context.Context, vol store.Volume) (c store.Chain, started bool, err error) {
	err = m.st.Update(ctx, func(tx *store.Tx) error {
		if err := volumeStillThere(tx, vol); err != nil {
			return err
		}
		var err error
		c, err = tx.ChainByVolume(vol.ID)
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		started = true
		region, err := m.st.Region(ctx)
		if err != nil {
			return err
		}
		c = store.Chain{VolumeID: vol.ID, Source: vol.Source, Region: region, ChunkSize: vol.ChunkSize,
			Created: time.Now().UnixNano()}
		for n := 1; ; n++ {
			c.Name = suffixed(vol.Name, n)
			if _, err := tx.ChainByName(c.Name); errors.Is(err, ErrNotFound) {
				break
			} else if err != nil {
				return err
			}
		}
		c.ID, err = tx.InsertChain(c)
		return err
	})
	return c, started, err
}

// suffixed returns name for n == 1 and name-n after, keeping within the 128-character limit.
func suffixed(name string, n int) string {
	if n == 1 {
		return name
	}
	s := fmt.Sprintf("-%d", n)
	if len(name)+len(s) > 128 {
		name = name[:128-len(s)]
	}
	return name + s
}

// createJob is one snapshot being created.
type createJob struct {
	m        *Manager
	chain    store.Chain
	src      *disk
	progress Progress
	snap     store.Snapshot
	prev     *view // the newest snapshot's chunk map; nil for the first snapshot
	// rowsEnd is one past the highest chunk index a delta of the chain names: past it (and past
	// prev) a hole needs no delta row, as nothing could show through it. A first snapshot of a
	// sparse 1 TiB disk would otherwise write 16 million rows saying "hole".
	rowsEnd int64
	// dataBytes counts the bytes of the disk's chunks that hold data, holes and zeros left out.
	dataBytes atomic.Int64
	// ident, if not "", is recorded as the volume's disk identity with the snapshot.
	ident string
	// maxBatchBufs, if not 0, overrides batchBufs (CreateOptions.batchBufs).
	maxBatchBufs int
}

// begin loads the newest snapshot's chunk map and records the new snapshot, invisible, as creating.
func (j *createJob) begin(ctx context.Context, vol store.Volume, name string, now time.Time) error {
	return j.m.st.Update(ctx, func(tx *store.Tx) error {
		if err := volumeStillThere(tx, vol); err != nil {
			return err
		}
		// The chain may have gone while the snapshot waited for its lock (see discardOnce), and
		// the volume have started another since.
		c, err := tx.ChainByVolume(vol.ID)
		if errors.Is(err, ErrNotFound) || err == nil && c.ID != j.chain.ID {
			return errChainGone
		} else if err != nil {
			return err
		}
		j.chain = c
		snaps, err := tx.Snapshots(j.chain.ID, "")
		if err != nil {
			return err
		}
		for _, s := range snaps {
			end, err := tx.DeltaEnd(s.ID)
			if err != nil {
				return err
			}
			j.rowsEnd = max(j.rowsEnd, end)
		}
		for i := len(snaps) - 1; i >= 0; i-- {
			if snaps[i].Status != StatusCreating {
				j.prev = loadView(j.m, j.chain, snaps[i])
				break
			}
		}
		if name == "" {
			if name, err = freeName(tx, j.chain.ID, vol.Name, now); err != nil {
				return err
			}
		} else if _, err := tx.SnapshotByName(j.chain.ID, name); err == nil {
			return fmt.Errorf("snapshot %s/%s: %w", j.chain.Name, name, ErrExists)
		}
		seq, err := tx.TakeSeq(j.chain.ID)
		if err != nil {
			return err
		}
		j.snap = store.Snapshot{ChainID: j.chain.ID, Seq: seq, Name: name, Volume: vol.Name, Size: j.src.size,
			Created: now.UnixNano(), Status: StatusCreating, DataBytes: store.UnknownDataBytes}
		if j.snap.ID, err = tx.InsertSnapshot(j.snap); err != nil {
			return err
		}
		// Marked before the commit makes the row visible, so that no concurrent clean-up takes it
		// for abandoned.
		j.m.setActive(j.snap.ID, true)
		return nil
	})
}

// freeName returns the default name of a new snapshot of volume vol in a chain: see
// DefaultSnapshotName.
func freeName(tx *store.Tx, chain int64, vol string, now time.Time) (string, error) {
	return DefaultSnapshotName(vol, now, func(name string) (bool, error) {
		_, err := tx.SnapshotByName(chain, name)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	})
}

// DefaultSnapshotName returns VOLUME-YYYYMMDD-HHMMSS (now's local time), or that with -2, -3…, the
// first that taken says is free. The volume's name is cut short where the whole would pass the
// 128-character limit; the time and the suffix are kept.
func DefaultSnapshotName(vol string, now time.Time, taken func(name string) (bool, error)) (string, error) {
	stamp := now.Format("-20060102-150405")
	for n := 1; ; n++ {
		tail := stamp
		if n > 1 {
			tail += fmt.Sprintf("-%d", n)
		}
		name := vol[:min(len(vol), 128-len(tail))] + tail
		used, err := taken(name)
		if err != nil {
			return "", err
		}
		if !used {
			return name, nil
		}
	}
}

// run reads the disk (frozen if asked), stores what changed and publishes the snapshot.
func (j *createJob) run(ctx context.Context, freezeAt string) error {
	if freezeAt != "" {
		thaw, err := freeze(freezeAt, j.m.st.Dir())
		if err != nil {
			return err
		}
		err = j.pipeline(ctx)
		if terr := thaw(); err == nil {
			err = terr
		}
		if err != nil {
			return err
		}
	} else if err := j.pipeline(ctx); err != nil {
		return err
	}
	return j.m.st.Update(ctx, func(tx *store.Tx) error {
		c, err := tx.ChainByID(j.chain.ID)
		if err != nil {
			return err // the volume's size and identity would go unrecorded
		}
		if c.VolumeID != 0 {
			if err := tx.UpdateVolumeSize(c.VolumeID, j.src.size); err != nil {
				return err
			}
			if j.ident != "" {
				if err := tx.SetVolumeIdent(c.VolumeID, j.ident); err != nil {
					return err
				}
			}
		}
		if err := tx.SetSnapshotDataBytes(j.snap.ID, j.dataBytes.Load()); err != nil {
			return err
		}
		return tx.SetSnapshotStatus(j.snap.ID, StatusReady)
	})
}

// result is one chunk that differs from the previous snapshot: a hole (size 0), a chunk the store
// held when it was hashed (no record), or a new chunk and its record.
type result struct {
	idx  int64
	hash store.Hash
	size int
	rec  []byte // exactly the record's bytes
}

// blockResults are the results of one block of the disk, their records encoded into buf, a buffer
// of the pipeline's record pool (nil when there are none).
type blockResults struct {
	rs  []result
	buf []byte
}

// pipeline: readers read whole blocks of the disk in turn (holes skipped), one hasher per core
// hashes and encodes their chunks; one writer gathers the results in batches, which one committer
// stores while the next batch fills.
func (j *createJob) pipeline(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	workers := runtime.GOMAXPROCS(0)
	readers := workers
	if j.src.block || j.src.direct != nil {
		// Direct reads wait on the disk with nothing read ahead: more of them in flight keep it
		// busy while the hashers work.
		readers = 2 * workers
	}
	results := make(chan blockResults, 4*workers)
	blocks := make(chan diskBlock, workers)
	free := make(chan []byte, readers+workers)
	blockBytes := int(j.blockChunks() * j.chain.ChunkSize)
	for _, b := range store.AlignedBufs(readers+workers, blockBytes) {
		free <- b
	}
	// Records are encoded into block-sized buffers that stay in their batch until it is committed,
	// then serve again: no copy of the records between the hashers and the packs' stages, and no
	// fresh memory for each (fresh memory for 1.15 GiB of records cost 0.8 CPU-s of page faults
	// in a full snapshot of the benchmark disk; copying them into batch arenas 0.44 CPU-s).
	recs := j.newRecPool(cap(results) + workers)
	var next atomic.Int64
	progress := j.progressFunc()
	var rwg, wg sync.WaitGroup
	for range readers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			if err := j.read(ctx, &next, free, blocks); err != nil {
				cancel(err)
			}
		}()
	}
	go func() { rwg.Wait(); close(blocks) }()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := j.hash(ctx, blocks, free, recs, results, progress); err != nil {
				cancel(err)
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()

	if err := j.write(ctx, cancel, results, recs); err != nil {
		cancel(err)
	}
	for range results { // drain so that workers finish
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if err := parent.Err(); err != nil {
		return err
	}
	// A disk that shrank while being read cannot have been read whole.
	if size, err := j.src.currentSize(); err != nil {
		return err
	} else if size < j.src.size {
		return fmt.Errorf("source %s shrank from %d to %d bytes while being read", j.src.path, j.src.size, size)
	}
	return nil
}

// blockChunks is how many chunks a block of readBlock bytes holds (one at least).
func (j *createJob) blockChunks() int64 { return max(1, readBlock/j.chain.ChunkSize) }

// blockRecordBound is the most room a block's records may take.
func (j *createJob) blockRecordBound() int {
	return int(j.blockChunks()) * store.RecordBound(int(j.chain.ChunkSize))
}

// progressFunc returns what workers call with the bytes of each block they consumed; it reports the
// running total to j.progress, one call at a time, never going back.
func (j *createJob) progressFunc() func(n int64) {
	var mu sync.Mutex
	var done, reported int64
	return func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		done += n
		if j.progress != nil && done > reported {
			reported = done
			j.progress(done, j.src.size)
		}
	}
}

// diskBlock is a piece of the disk a reader hands to a hasher: n chunks from chunk idx, length
// bytes, data nil for a hole.
type diskBlock struct {
	idx, n, length int64
	data           []byte
	buf            []byte // what data lies in, to give back to the free list
}

// read takes the disk's blocks of readBlock bytes in turn from next (the first chunk index of the
// next block), reads those that SEEK_DATA does not say are holes into buffers from free, and hands
// them to the hashers. A hole that goes on past its block is handed on whole, up to a segment's
// worth of chunks: a sparse 1 TiB disk is a million blocks, most of them holes (its snapshot took
// 1.32 s block by block, 0.14-0.19 s so).
func (j *createJob) read(ctx context.Context, next *atomic.Int64, free chan []byte, out chan<- diskBlock) error {
	cs := j.chain.ChunkSize
	per := j.blockChunks()
	total := chunkCount(j.src.size, cs)
	for ctx.Err() == nil {
		idx := next.Add(per) - per
		if idx >= total {
			return nil
		}
		b := diskBlock{idx: idx, n: min(per, total-idx)}
		off := idx * cs
		b.length = min(b.n*cs, j.src.size-off)
		hole := false
		if !j.src.block {
			var dataAt int64
			if hole, dataAt = j.holeUntil(off, b.length); hole {
				j.extendHole(&b, next, dataAt)
			}
		}
		if !hole {
			select {
			case b.buf = <-free:
			case <-ctx.Done():
				return nil
			}
			b.data = b.buf[:b.length]
			if err := j.readFull(b.data, off); err != nil {
				free <- b.buf
				return err
			}
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// hash turns the blocks readers hand it into results: holes, and chunks whose content differs
// from the previous snapshot, hashed and encoded.
func (j *createJob) hash(ctx context.Context, in <-chan diskBlock, free chan<- []byte, recs *recPool, out chan<- blockResults, progress func(int64)) error {
	var enc store.Encoder
	for b := range in {
		var br blockResults
		if b.data != nil {
			if br.buf = recs.get(ctx); br.buf == nil {
				return nil
			}
		}
		var err error
		br.rs, err = j.hashBlock(ctx, &enc, b.idx, b.n, b.data, br.buf)
		if b.buf != nil {
			free <- b.buf
		}
		if err != nil {
			return err
		}
		if !hasRecords(br.rs) && br.buf != nil {
			recs.put(br.buf)
			br.buf = nil
		}
		if len(br.rs) > 0 {
			select {
			case out <- br:
			case <-ctx.Done():
				return nil
			}
		}
		progress(b.length)
	}
	return nil
}

func hasRecords(rs []result) bool {
	for _, r := range rs {
		if r.rec != nil {
			return true
		}
	}
	return false
}

// recPool hands out the buffers records are encoded into, one a block, made when first needed (a
// snapshot that stores little makes few) up to as many as the pipeline can hold at once: two
// batches and what is between the hashers and the writer. Holding that many, a hasher that waits
// for one waits only for a commit.
type recPool struct {
	free  chan []byte
	size  int // bytes a buffer
	mu    sync.Mutex
	made  int
	limit int
}

// recGroup is how many record buffers are made at a time.
const recGroup = 8

func (j *createJob) newRecPool(inFlight int) *recPool {
	size := j.blockRecordBound()
	limit := 2*j.batchBufs() + inFlight
	return &recPool{free: make(chan []byte, limit), size: size, limit: limit}
}

// batchBufs is how many record buffers a batch holds at most.
func (j *createJob) batchBufs() int {
	if j.maxBatchBufs > 0 {
		return j.maxBatchBufs
	}
	return max(1, batchBytes/j.blockRecordBound())
}

// get returns a free buffer, or nil once ctx is done.
func (p *recPool) get(ctx context.Context) []byte {
	select {
	case b := <-p.free:
		return b
	default:
	}
	p.mu.Lock()
	if p.made < p.limit {
		n := min(recGroup, p.limit-p.made)
		p.made += n
		p.mu.Unlock()
		bufs := store.AlignedBufs(n, p.size)
		for _, b := range bufs[1:] {
			p.free <- b
		}
		return bufs[0]
	}
	p.mu.Unlock()
	select {
	case b := <-p.free:
		return b
	case <-ctx.Done():
		return nil
	}
}

func (p *recPool) put(b []byte) { p.free <- b[:cap(b)] }

// holeUntil reports whether [off, off+length) of a regular file holds no data, and if so where
// its next data lies (the disk's size when none follows).
func (j *createJob) holeUntil(off, length int64) (hole bool, dataAt int64) {
	next, err := unix.Seek(int(j.src.f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true, j.src.size // no data after off
	}
	return err == nil && next >= off+length, next
}

// extendHole stretches the hole block b over the whole blocks after it that lie before dataAt, up
// to segmentChunks chunks in all, when next still points just past b (no other reader took the
// following block meanwhile); the blocks it takes are b's.
func (j *createJob) extendHole(b *diskBlock, next *atomic.Int64, dataAt int64) {
	cs, per := j.chain.ChunkSize, j.blockChunks()
	total := chunkCount(j.src.size, cs)
	end := dataAt / cs // the chunks wholly before dataAt
	if dataAt >= j.src.size {
		end = total
	}
	end = min(end, b.idx+max(segmentChunks, per), total)
	if end < total {
		end = end / per * per // the blocks after stay whole
	}
	if end <= b.idx+b.n || !next.CompareAndSwap(b.idx+b.n, end) {
		return
	}
	b.n = end - b.idx
	b.length = min(b.n*cs, j.src.size-b.idx*cs)
	j.m.counts.holeSpans.Add(1)
}

func (j *createJob) readFull(p []byte, off int64) error {
	n, err := j.src.readAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("source %s shrank while being read (short read at %d)", j.src.path, off+int64(n))
	}
	return fmt.Errorf("read source %s at %d: %w", j.src.path, off+int64(n), err)
}

// hashBlock turns the n chunks of a block starting at chunk idx (data nil for a hole) into results:
// holes, and chunks whose content differs from the previous snapshot, hashed. Those the store does
// not hold already are encoded into recBuf one after the other; those it holds are not compressed
// again (a disk copied from one already snapshotted, data moved within a disk).
func (j *createJob) hashBlock(ctx context.Context, enc *store.Encoder, idx, n int64, data, recBuf []byte) ([]result, error) {
	var rs []result
	cs := j.chain.ChunkSize
	prevs, err := j.prevChunks(ctx, idx, n)
	if err != nil {
		return nil, err
	}
	var hashes []store.Hash
	for i := range n {
		var prev store.Chunk
		hadPrev := i < int64(len(prevs))
		if hadPrev {
			prev = prevs[i]
		}
		var chunk []byte
		if data != nil {
			chunk = data[i*cs : min((i+1)*cs, int64(len(data)))]
		}
		if chunk == nil || allZero(chunk) {
			// A hole row only where something could show through: prev's data, or an older
			// snapshot's row past prev's end (the disk shrank and grew back).
			if hadPrev && prev.ID != 0 || !hadPrev && idx+i < j.rowsEnd {
				rs = append(rs, result{idx: idx + i})
			}
			continue
		}
		j.dataBytes.Add(int64(len(chunk)))
		sum := store.Sum(chunk)
		if hadPrev && prev.ID != 0 && prev.Hash == sum && prev.Size == int64(len(chunk)) {
			continue
		}
		rs = append(rs, result{idx: idx + i, hash: sum, size: len(chunk)})
		hashes = append(hashes, sum)
	}
	// One look-up a block, of the chunks that changed only (~30 µs): an incremental snapshot asks
	// little, a full one once per MiB.
	held, err := j.m.st.Held(ctx, hashes)
	if err != nil {
		return nil, err
	}
	for k := range rs {
		r := &rs[k]
		if r.size == 0 {
			continue // a hole
		}
		if held[r.hash] {
			j.m.counts.reused.Add(1)
			continue
		}
		j.m.counts.encoded.Add(1)
		off := (r.idx - idx) * cs
		r.rec = enc.EncodeInto(recBuf, data[off:off+int64(r.size)], r.hash)
		recBuf = recBuf[len(r.rec):]
		held[r.hash] = true // a later copy in this block takes this record, in the same batch
	}
	return rs, nil
}

// prevChunks returns the previous snapshot's entries for the n chunks from idx, fewer (or none)
// where that snapshot's disk was smaller.
func (j *createJob) prevChunks(ctx context.Context, idx, n int64) ([]store.Chunk, error) {
	if j.prev == nil || idx >= j.prev.count {
		return nil, nil
	}
	return j.prev.span(ctx, idx, min(idx+n, j.prev.count))
}

// write gathers results in batches of at most batchBufs record buffers and hands each to a
// committer goroutine, so that the disk is read and hashed on while a batch is written and
// committed. At most two batches are held: one committing, one filling. A batch keeps its records
// in the buffers the hashers encoded them into, and gives those back to recs once committed.
func (j *createJob) write(ctx context.Context, cancel context.CancelCauseFunc, in <-chan blockResults, recs *recPool) error {
	type batch struct {
		rs   []result
		bufs [][]byte
	}
	batches := make(chan batch)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range batches {
			if ctx.Err() == nil {
				if j.m.beforeCommit != nil {
					j.m.beforeCommit()
				}
				if err := j.commit(ctx, b.rs); err != nil {
					cancel(err)
				}
			}
			for _, buf := range b.bufs {
				recs.put(buf)
			}
		}
	}()
	defer func() { close(batches); <-done }()
	var cur batch
	full := j.batchBufs()
	for br := range in {
		if ctx.Err() != nil {
			if br.buf != nil {
				recs.put(br.buf)
			}
			continue // drain: the hashers give back what they hold
		}
		cur.rs = append(cur.rs, br.rs...)
		if br.buf != nil {
			cur.bufs = append(cur.bufs, br.buf)
		}
		if len(cur.bufs) >= full || len(cur.rs) >= batchResults {
			select {
			case batches <- cur:
			case <-ctx.Done():
				for _, buf := range cur.bufs {
					recs.put(buf)
				}
			}
			cur = batch{}
		}
	}
	if ctx.Err() != nil || len(cur.rs) == 0 {
		return nil
	}
	select {
	case batches <- cur:
	case <-ctx.Done():
	}
	return nil
}

// batchResults bounds the results of a batch, most of them holes when its records do not fill it
// (a disk emptied since its last snapshot).
const batchResults = 1 << 16

// commit stores a batch's new chunks (reusing any chunk the store already holds) and its deltas.
func (j *createJob) commit(ctx context.Context, batch []result) error {
	if len(batch) == 0 {
		return nil
	}
	return j.m.st.Update(ctx, func(tx *store.Tx) error {
		var items []store.NewChunk
		var of []int // the batch index of each item
		for i, r := range batch {
			if r.size > 0 {
				items = append(items, store.NewChunk{Hash: r.hash, Size: r.size, Rec: r.rec})
				of = append(of, i)
			}
		}
		ids, err := tx.PutChunks(items)
		var missing *store.MissingRecordsError
		if errors.As(err, &missing) {
			// Chunks the store held when they were hashed, freed since by a delete (or the undoing
			// of a failed snapshot): read them from the disk again. Should the disk have changed
			// there meanwhile, the snapshot takes what it reads now, as it would had it read the
			// chunk now in the first place.
			var enc store.Encoder
			for _, k := range missing.Items {
				r := &batch[of[k]]
				if err := j.reread(&enc, r); err != nil {
					return err
				}
				items[k] = store.NewChunk{Hash: r.hash, Size: r.size, Rec: r.rec}
			}
			ids, err = tx.PutChunks(items)
		}
		if err != nil {
			return err
		}
		deltas := make([]store.Delta, len(batch))
		for i, r := range batch {
			deltas[i].Idx = r.idx
			if r.size > 0 {
				deltas[i].Chunk, ids = ids[0], ids[1:]
			}
		}
		return tx.InsertDeltas(j.snap.ID, deltas)
	})
}

// reread reads r's chunk from the disk again, and hashes and encodes it into fresh memory.
func (j *createJob) reread(enc *store.Encoder, r *result) error {
	cs := j.chain.ChunkSize
	buf := store.AlignedBuf(int(cs))
	chunk := buf[:r.size]
	if err := j.readFull(chunk, r.idx*cs); err != nil {
		return err
	}
	r.hash = store.Sum(chunk)
	r.rec = bytes.Clone(enc.Encode(chunk, r.hash))
	j.m.counts.reread.Add(1)
	return nil
}

func allZero(b []byte) bool {
	return len(b) == 0 || b[0] == 0 && bytes.Equal(b[1:], b[:len(b)-1])
}

// --- undoing interrupted snapshots ---

func (m *Manager) setActive(id int64, on bool) {
	m.pinMu.Lock()
	defer m.pinMu.Unlock()
	if on {
		m.active[id] = true
	} else {
		delete(m.active, id)
	}
}

// discardAbandoned rolls back snapshots left creating by a failed or interrupted creation that could
// not undo itself (a full disk, a crash), except those this process is creating now.
func (m *Manager) discardAbandoned(ctx context.Context) error {
	var creating []store.Snapshot
	err := m.st.View(ctx, func(tx *store.Tx) (err error) {
		creating, err = tx.SnapshotsWithStatus(StatusCreating)
		return err
	})
	if err != nil {
		return err
	}
	for _, s := range creating {
		m.pinMu.Lock()
		active := m.active[s.ID]
		m.pinMu.Unlock()
		if !active {
			if err := m.discardSnapshot(ctx, s.ID); err != nil {
				return fmt.Errorf("undo interrupted snapshot %s: %w", s.Name, err)
			}
		}
	}
	return nil
}

// discardSnapshot removes a snapshot that never became ready, with whatever it stored, and its chain
// if that is left empty and the snapshot was its first or its volume is gone. On a full filesystem
// it gives up the store's reserve to make room for the transaction that frees the space.
func (m *Manager) discardSnapshot(ctx context.Context, id int64) error {
	err := m.withRoom(func() error { return m.discardOnce(ctx, id) })
	if store.Committed(err) {
		return nil // discarded; what its records took, gc returns
	}
	return err
}

func (m *Manager) discardOnce(ctx context.Context, id int64) error {
	return m.st.Update(ctx, func(tx *store.Tx) error {
		s, err := tx.SnapshotByID(id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if s.Status != StatusCreating {
			// It became ready since the caller listed it as creating (a clean-up races the end of
			// a creation in this process): it is not abandoned.
			return nil
		}
		if err := tx.DropDeltas(id); err != nil {
			return err
		}
		if err := tx.DeleteSnapshotRow(id); err != nil {
			return err
		}
		if _, _, err := tx.ReleaseUnreferenced(); err != nil {
			return err
		}
		c, err := tx.ChainByID(s.ChainID)
		if err != nil {
			return err
		}
		if s.Seq != 1 && c.VolumeID != 0 {
			// The chain was there before this snapshot, and its volume still is: it stays, even
			// empty, as a delete of its last snapshot leaves it. One whose volume was removed
			// meanwhile goes once empty, as it would have with the volume had this snapshot not
			// been running.
			return nil
		}
		return dropEmptyChain(tx, s.ChainID)
	})
}
