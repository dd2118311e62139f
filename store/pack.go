package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Backend stores chunk records. The pack-file backend is the only one today; the interface is what an
// object-store backend would implement.
type Backend interface {
	// Append stores one encoded record and says where it went. It is not durable until Sync, which
	// also reports a failure to write it.
	Append(ctx context.Context, rec []byte) (pack, offset int64, err error)
	// Abort says that the transaction appending is being rolled back: records it appended that are
	// not written yet never will be, and once Abort returns nothing more lands in the packs for it.
	// Failed writes of the transaction are forgotten.
	Abort()
	// Settle says that the transaction that appended extents has ended, committed or not: until then
	// their packs must not be removed, even when no committed chunk lives in them.
	Settle(extents []Extent)
	// Read returns the checked raw bytes of chunk c appended to dst[:0]; deep checks them against
	// the content address whatever the record carries (see Header).
	Read(ctx context.Context, dst []byte, c Chunk, deep bool) ([]byte, error)
	// Sync makes every appended record durable.
	Sync() error
	// Free returns the space of records that no committed metadata references any more.
	Free(ctx context.Context, extents []Extent) error
	// Close releases open files.
	Close() error
}

// Extent is a byte range of a pack file.
type Extent struct {
	Pack, Offset, Len int64
}

// PackRollSize is the size past which a new pack file is started.
const PackRollSize = 64 << 20

type packBackend struct {
	dir      string
	db       *sql.DB
	readOnly bool

	mu      sync.Mutex
	files   map[int64]*os.File
	cur     int64    // pack being appended to, 0 before the first append
	curSize int64    // end of the current pack, staged records included
	direct  *os.File // the current pack opened for direct writes; nil where that is refused
	stage   []byte   // a stage buffer: records appended but not yet handed to w, ending at curSize
	staged  int      // bytes of stage in use
	written int64    // the current pack's bytes before this offset are on disk
	w       *writeBehind
	dirty   map[int64]bool
	pending map[int64]int // records appended by transactions still open, per pack
	// removing holds the packs removeIfEmpty is deleting; none of them is picked to append to.
	removing map[int64]bool
	// highID is the highest pack id this process has created or removed: a removed pack's id is
	// never given out again by the same process, whose punches of it may still be pending.
	highID int64

	bufs sync.Pool
}

func newPackBackend(dir string, db *sql.DB, readOnly bool) *packBackend {
	return &packBackend{dir: dir, db: db, readOnly: readOnly, files: map[int64]*os.File{}, dirty: map[int64]bool{},
		pending: map[int64]int{}, removing: map[int64]bool{}, w: newWriteBehind()}
}

func (b *packBackend) path(id int64) string {
	return filepath.Join(b.dir, "packs", fmt.Sprintf("%010d.pack", id))
}

// file returns an open descriptor for pack id. Descriptors stay open: ReadAt on them is safe from many
// goroutines at once.
func (b *packBackend) file(id int64) (*os.File, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fileLocked(id)
}

func (b *packBackend) fileLocked(id int64) (*os.File, error) {
	if f, ok := b.files[id]; ok {
		return f, nil
	}
	flag := os.O_RDWR
	if b.readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(b.path(id), flag, 0)
	if err != nil {
		return nil, err
	}
	b.files[id] = f
	return f, nil
}

func (b *packBackend) Read(ctx context.Context, dst []byte, c Chunk, deep bool) ([]byte, error) {
	if err := checkLocation(c); err != nil {
		return nil, err
	}
	f, err := b.readFile(c)
	if err != nil {
		return nil, fmt.Errorf("open pack %d: %w", c.Pack, err)
	}
	n := int(c.StoredSize)
	bp, _ := b.bufs.Get().(*[]byte)
	if bp == nil || cap(*bp) < n {
		buf := make([]byte, n)
		bp = &buf
	}
	defer b.bufs.Put(bp)
	rec := (*bp)[:n]
	if _, err := f.ReadAt(rec, c.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: pack %d ends before the record", ErrCorrupt, c.Pack)
		}
		return nil, fmt.Errorf("read pack %d: %w", c.Pack, err)
	}
	return decodeRecord(dst, rec, c.Hash, int(c.Size), deep)
}

// checkLocation refuses a chunk row whose sizes or offset no record can have: SQLite keeps no
// checksums, and a damaged row must fail as corrupt, not size a buffer.
func checkLocation(c Chunk) error {
	if c.Offset < 0 || c.Size < 0 || c.Size > MaxChunkSize ||
		c.StoredSize < HeaderSize || c.StoredSize > RecordLen(MaxChunkSize) {
		return fmt.Errorf("%w: chunk %d: impossible location (pack %d, offset %d, size %d, stored %d)",
			ErrCorrupt, c.ID, c.Pack, c.Offset, c.Size, c.StoredSize)
	}
	return nil
}

// readFile returns the descriptor to read chunk c from. A record of the current pack not yet written
// (only its own transaction can know of it) is written out first.
func (b *packBackend) readFile(c Chunk) (*os.File, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.Pack == b.cur && c.Offset+c.StoredSize > b.written {
		if err := b.flushLocked(); err != nil {
			return nil, err
		}
		if err := b.w.wait(); err != nil {
			return nil, err
		}
		b.written = b.curSize
	}
	return b.fileLocked(c.Pack)
}

func (b *packBackend) Append(ctx context.Context, rec []byte) (int64, int64, error) {
	if b.readOnly {
		return 0, 0, errors.New("store opened read-only")
	}
	if len(rec) > stageSize {
		return 0, 0, fmt.Errorf("record of %d bytes is too large", len(rec))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == 0 || b.curSize+int64(len(rec)) > PackRollSize {
		if err := b.flushLocked(); err != nil {
			return 0, 0, err
		}
		if err := b.w.wait(); err != nil {
			return 0, 0, err
		}
		if err := b.rollLocked(ctx); err != nil {
			return 0, 0, err
		}
	}
	if b.staged+len(rec) > stageSize {
		if err := b.flushLocked(); err != nil {
			return 0, 0, err
		}
	}
	if b.stage == nil {
		b.stage = b.w.buffer()
	}
	copy(b.stage[b.staged:], rec)
	b.staged += len(rec)
	off := b.curSize
	b.curSize += int64(len(rec))
	b.dirty[b.cur] = true
	b.pending[b.cur]++
	return b.cur, off, nil
}

// flushLocked starts writing the staged records to the current pack. Failures show at the next
// wait of b.w. The offsets of records that fail to be written are not reused, so that nothing their
// failed transaction frees can be taken by a later record.
func (b *packBackend) flushLocked() error {
	if b.staged == 0 {
		return nil
	}
	f, err := b.fileLocked(b.cur)
	if err != nil {
		return fmt.Errorf("open pack %d: %w", b.cur, err)
	}
	b.w.write(b.cur, b.direct, f, b.stage, b.stage[:b.staged], b.curSize-int64(b.staged))
	b.stage, b.staged = nil, 0
	return nil
}

func (b *packBackend) Abort() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.staged = 0
	b.w.reset()
	b.written = b.curSize
}

// setCurrentLocked makes pack id, open as f, the one appended to from offset end. The caller has
// flushed the previous pack and waited for its writes.
func (b *packBackend) setCurrentLocked(id int64, f *os.File, end int64) {
	if b.direct != nil {
		b.direct.Close()
		b.direct = nil
	}
	b.files[id] = f
	b.cur, b.curSize, b.staged, b.written = id, end, 0, end
	if d, err := os.OpenFile(b.path(id), os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
		b.direct = d
	}
}

func (b *packBackend) Settle(extents []Extent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range extents {
		if b.pending[e.Pack]--; b.pending[e.Pack] <= 0 {
			delete(b.pending, e.Pack)
		}
	}
}

// rollLocked picks the pack to append to: on the first append of this process the newest pack if it
// has room, otherwise a new one. Appends go on from the pack file's end, never from below it, even
// where what lies there is no committed record: a delete in this process may have committed the
// release of records at the pack's tail and not punched them yet, and its punch must not hit a
// record appended since. What an interrupted writer left past the last committed record is punched
// (returned to the filesystem) instead of cut off.
func (b *packBackend) rollLocked(ctx context.Context) error {
	if b.cur == 0 {
		if ok, err := b.reuseNewestLocked(ctx); err != nil || ok {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(b.dir, "packs"), 0o700); err != nil {
		return fmt.Errorf("create pack directory: %w", err)
	}
	id, err := b.newPackID(ctx)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(b.path(id), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create pack %d: %w", id, err)
	}
	if err := syncDir(filepath.Join(b.dir, "packs")); err != nil {
		f.Close()
		return err
	}
	b.highID = max(b.highID, id)
	b.setCurrentLocked(id, f, 0)
	return nil
}

// reuseNewestLocked makes the newest pack the current one if it has room, and reports whether it did.
func (b *packBackend) reuseNewestLocked(ctx context.Context) (bool, error) {
	var id, committed int64
	err := b.db.QueryRowContext(ctx, `
		SELECT p.id, COALESCE((SELECT MAX(offset + stored_size) FROM chunks WHERE pack_id = p.id), 0)
		FROM packs p ORDER BY p.id DESC LIMIT 1`).Scan(&id, &committed)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find newest pack: %w", err)
	}
	if b.removing[id] {
		return false, nil
	}
	f, err := b.fileLocked(id)
	if err != nil {
		return false, nil // a pack that cannot be opened is not appended to; a new one is started
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() >= PackRollSize || fi.Size() < committed {
		// A pack shorter than its committed records has lost its tail (reads of those records
		// fail): appending at its end would put new records where those rows point, and freeing
		// them would punch the new ones. It is left as it is for verify to report.
		return false, nil
	}
	if fi.Size() > committed {
		// Best effort, as gc's punching of the same bytes would be: nothing references them.
		b.punchFile(f, Extent{Pack: id, Offset: committed, Len: fi.Size() - committed})
	}
	// From a whole block, as every record starts: a writer killed part-way through a buffered
	// write can leave the file's size anywhere.
	b.setCurrentLocked(id, f, (fi.Size()+RecordAlign-1)/RecordAlign*RecordAlign)
	return true, nil
}

// newPackID picks an id above every pack the metadata or the directory knows, and above every pack
// this process has created or removed. The pack's row is written by the transaction that commits
// its first chunk, so a pack whose records never commit leaves only a file, which gc removes.
func (b *packBackend) newPackID(ctx context.Context) (int64, error) {
	var id int64
	if err := b.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM packs`).Scan(&id); err != nil {
		return 0, fmt.Errorf("find newest pack: %w", err)
	}
	files, _ := filepath.Glob(filepath.Join(b.dir, "packs", "*.pack"))
	for _, f := range files {
		if n, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(f), ".pack"), 10, 64); err == nil {
			id = max(id, n)
		}
	}
	return max(id, b.cur, b.highID) + 1, nil
}

func (b *packBackend) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		return err
	}
	if err := b.w.wait(); err != nil {
		return err
	}
	b.written = b.curSize
	for id := range b.dirty {
		f, err := b.fileLocked(id)
		if err != nil {
			return err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("sync pack %d: %w", id, err)
		}
		delete(b.dirty, id)
	}
	return nil
}

func (b *packBackend) Free(ctx context.Context, extents []Extent) error {
	packs := map[int64]bool{}
	for _, e := range extents {
		if err := b.punch(e); err != nil {
			return err
		}
		packs[e.Pack] = true
	}
	for id := range packs {
		if err := b.removeIfEmpty(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

func (b *packBackend) punch(e Extent) error {
	f, err := b.file(e.Pack)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pack %d: %w", e.Pack, err)
	}
	return b.punchFile(f, e)
}

// punchFile punches e in f, pack e.Pack's open file; the caller need not hold b.mu. The call holds
// f's descriptor through the runtime (SyscallConn), so that a removeIfEmpty closing f meanwhile
// cannot hand the number to another file before the punch: the punch would hole that file.
func (b *packBackend) punchFile(f *os.File, e Extent) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("punch pack %d: %w", e.Pack, err)
	}
	cerr := rc.Control(func(fd uintptr) {
		err = unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, e.Offset, e.Len)
	})
	if cerr != nil {
		return nil // closed meanwhile: its pack was removed, nothing left to punch
	}
	if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("punch pack %d at %d: %w", e.Pack, e.Offset, err)
	}
	return nil
}

// removeIfEmpty deletes a pack that holds no committed chunk, row and file, unless it is being
// appended to. It holds b.mu only around its checks, not while it waits for the metadata's write
// lock: a transaction holding that lock may be waiting for b.mu to append.
func (b *packBackend) removeIfEmpty(ctx context.Context, id int64) error {
	b.mu.Lock()
	if id == b.cur || b.pending[id] > 0 || b.removing[id] {
		b.mu.Unlock()
		return nil
	}
	b.removing[id] = true
	b.mu.Unlock()

	// Only appending to the pack could add a chunk to it, and it is not picked while removing: what
	// the check finds stays true until the row and the file are gone.
	empty, err := b.forgetIfEmpty(ctx, id)

	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.removing, id)
	if err != nil || !empty {
		return err
	}
	b.highID = max(b.highID, id)
	// A pack a rolled-back transaction appended to is still marked for the next Sync, which must
	// not try to open it now that it is gone: no record in it needs syncing.
	delete(b.dirty, id)
	if f, ok := b.files[id]; ok {
		f.Close()
		delete(b.files, id)
	}
	if err := os.Remove(b.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove empty pack %d: %w", id, err)
	}
	return nil
}

// forgetIfEmpty deletes pack id's row (if it has one) when no chunk lives in it, and reports whether
// it was empty.
func (b *packBackend) forgetIfEmpty(ctx context.Context, id int64) (bool, error) {
	var used bool
	if err := b.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM chunks WHERE pack_id = ?)`, id).Scan(&used); err != nil {
		return false, fmt.Errorf("check pack %d: %w", id, err)
	}
	if used {
		return false, nil
	}
	if _, err := b.db.ExecContext(ctx, `DELETE FROM packs WHERE id = ?`, id); err != nil {
		return false, fmt.Errorf("forget empty pack %d: %w", id, err)
	}
	return true, nil
}

func (b *packBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.staged = 0 // records of no committed transaction
	b.w.reset()
	var first error
	if b.direct != nil {
		first = b.direct.Close()
		b.direct = nil
	}
	for id, f := range b.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
		delete(b.files, id)
	}
	return first
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Prefetch asks the kernel to start reading the records of chunks (holes, ID 0, skipped) into the
// page cache, without waiting: a sequential reader of an image calls it ahead of what it reads, so
// that a cold read finds the pack pages in memory instead of waiting on the disk chunk by chunk.
// Records next to each other in a pack are asked for in one call. It is a hint: errors are ignored.
func (s *Store) Prefetch(chunks []Chunk) {
	b, ok := s.chunks.(*packBackend)
	if !ok {
		return
	}
	var pack, start, end int64
	flush := func() {
		if end > start {
			if f, err := b.file(pack); err == nil {
				unix.Fadvise(int(f.Fd()), start, end-start, unix.FADV_WILLNEED)
			}
		}
	}
	for _, c := range chunks {
		if c.ID == 0 {
			continue
		}
		if c.Pack == pack && c.Offset >= start && c.Offset <= end+RecordAlign*16 {
			end = max(end, c.Offset+c.StoredSize)
			continue
		}
		flush()
		pack, start, end = c.Pack, c.Offset, c.Offset+c.StoredSize
	}
	flush()
}
