// Package store keeps snapfs's bytes and metadata: the SQLite database (schema and migrations), the
// pack files that hold compressed, hash-addressed chunk records, chunk reference counts and the return
// of freed space to the filesystem. It knows nothing of chains or snapshots' meaning.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"
)

// ErrLocked means another process holds the store's writer lock.
var ErrLocked = errors.New("store is locked by another snapfs process")

// ErrNotDir means the store's path names something other than a directory.
var ErrNotDir = errors.New("not a directory")

// ErrNoStore means the directory holds no store and the caller asked not to create one.
var ErrNoStore = errors.New("no store here (run snapfs init)")

// Options say how to open a store.
type Options struct {
	// ReadOnly opens the metadata read-only and takes no lock; such a store can read chunks but not
	// change anything.
	ReadOnly bool
	// Region is recorded when the store is created.
	Region string
}

// DefaultRegion is the region of a store created without one.
const DefaultRegion = "local"

// Store is an open store directory.
type Store struct {
	dir      string
	db       *sql.DB // writes: every transaction BEGIN IMMEDIATE
	rdb      *sql.DB // reads: deferred transactions, which WAL serves while a write runs
	readOnly bool
	lock     *os.File
	chunks   Backend

	// writing is held by the one Update running: appended records are staged per backend, not per
	// transaction, so a second appender must wait for the first to commit or abort. SQLite's write
	// lock cannot stand in for it: database/sql rolls a transaction back, releasing that lock, the
	// moment its context is cancelled, while fn still runs.
	writing chan struct{}

	heldMu   sync.Mutex
	heldStmt *sql.Stmt // see Held; prepared on first use
}

// Open opens the store in dir. A writer (not ReadOnly) creates the store when absent and holds an
// exclusive lock until Close; a second writer gets ErrLocked.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	s := &Store{dir: dir, readOnly: opts.ReadOnly, writing: make(chan struct{}, 1)}
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("open store %s: %w", dir, ErrNotDir)
	}
	if opts.ReadOnly {
		if _, err := os.Stat(filepath.Join(dir, "meta.db")); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open store %s: %w", dir, ErrNoStore)
		}
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create store %s: %w", dir, err)
		}
		if err := s.takeLock(); err != nil {
			return nil, err
		}
	}
	err := s.openDB(ctx, opts)
	if err != nil && !opts.ReadOnly && IsFull(err) && s.ReleaseReserve() {
		// SQLite needs room for its WAL index even to open; the reserve is there for this: the
		// writer that opens a full store is most likely there to delete from it.
		s.closeDBs()
		err = s.openDB(ctx, opts)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	s.chunks = newPackBackend(s.dir, s.db, s.readOnly)
	return s, nil
}

// closeDBs closes both connection pools.
func (s *Store) closeDBs() error {
	var err error
	for _, db := range []*sql.DB{s.rdb, s.db} {
		if db != nil {
			if e := db.Close(); err == nil {
				err = e
			}
		}
	}
	s.rdb, s.db = nil, nil
	return err
}

func (s *Store) takeLock() error {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open store lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%s: %w", s.dir, ErrLocked)
		}
		return fmt.Errorf("lock store: %w", err)
	}
	s.lock = f
	return nil
}

func (s *Store) openDB(ctx context.Context, opts Options) error {
	q := url.Values{}
	q.Set("_busy_timeout", "30000")
	q.Set("_foreign_keys", "on")
	if opts.ReadOnly {
		q.Set("mode", "ro")
	} else {
		q.Set("_journal_mode", "WAL")
		// FULL makes every commit durable across power loss, not only consistent.
		q.Set("_synchronous", "FULL")
		q.Set("_txlock", "immediate")
	}
	path := "file:" + filepath.Join(s.dir, "meta.db") + "?"
	db, err := sql.Open("sqlite3", path+q.Encode())
	if err != nil {
		return fmt.Errorf("open metadata: %w", err)
	}
	s.db = db
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("open metadata: %w", err)
	}
	q.Del("_txlock")
	if s.rdb, err = sql.Open("sqlite3", path+q.Encode()); err != nil {
		return fmt.Errorf("open metadata: %w", err)
	}
	if opts.ReadOnly {
		var v int
		if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
			return fmt.Errorf("read metadata: %w", err)
		}
		switch {
		case v > SchemaVersion:
			return fmt.Errorf("open metadata: %w", newerSchema(v))
		case v < SchemaVersion:
			// A reader does not change the store; the first command that writes upgrades it.
			return fmt.Errorf("open metadata: the store is on schema version %d, this snapfs reads %d: "+
				"any command that changes the store upgrades it first (snapfs gc, for one)", v, SchemaVersion)
		}
		return nil
	}
	// The store holds whole disks: only its owner may read it.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Chmod(filepath.Join(s.dir, "meta.db"+suffix), 0o600)
	}
	os.Chmod(s.dir, 0o700)
	if err := migrate(ctx, db); err != nil {
		return err
	}
	region := opts.Region
	if region == "" {
		region = DefaultRegion
	}
	_, err = db.ExecContext(ctx, `INSERT OR IGNORE INTO config(key, value) VALUES ('region', ?)`, region)
	return err
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// ReadOnly reports whether the store was opened without the writer lock.
func (s *Store) ReadOnly() bool { return s.readOnly }

// Region is the region recorded when the store was created.
func (s *Store) Region(ctx context.Context) (string, error) {
	var r string
	err := s.rdb.QueryRowContext(ctx, `SELECT value FROM config WHERE key = 'region'`).Scan(&r)
	if errors.Is(err, sql.ErrNoRows) {
		return DefaultRegion, nil
	}
	return r, err
}

// Close releases the database, the pack files and the writer lock.
func (s *Store) Close() error {
	var err error
	if s.chunks != nil {
		err = s.chunks.Close()
	}
	s.heldMu.Lock()
	if s.heldStmt != nil {
		s.heldStmt.Close()
	}
	s.heldMu.Unlock()
	if e := s.closeDBs(); err == nil {
		err = e
	}
	if s.lock != nil {
		s.lock.Close() // closing the descriptor releases the flock
	}
	return err
}

// Update runs fn in a write transaction. Records appended through the transaction are made durable
// before it commits; space of chunks it freed is returned to the filesystem after it commits.
func (s *Store) Update(ctx context.Context, fn func(tx *Tx) error) error {
	if s.readOnly {
		return errors.New("store opened read-only")
	}
	select {
	case s.writing <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	tx, err := s.begin(ctx)
	if err != nil {
		<-s.writing
		return err
	}
	err = fn(tx)
	if err == nil && len(tx.appended) > 0 {
		if err = s.chunks.Sync(); err != nil {
			err = fmt.Errorf("sync packs: %w", err)
		}
	}
	if err != nil {
		// While this is the one Update running: no other one appends meanwhile.
		s.chunks.Abort()
		tx.tx.Rollback()
		s.chunks.Settle(tx.appended)
		<-s.writing
		// Records no committed row references are garbage: give their space back now.
		s.chunks.Free(context.WithoutCancel(ctx), tx.appended)
		return sayFull(err)
	}
	err = tx.tx.Commit()
	s.chunks.Settle(tx.appended)
	<-s.writing
	if err != nil {
		if !commitMayHaveLanded(err) {
			// Whether a failed COMMIT left anything committed is for the database to say: punch
			// only records that no committed row covers.
			s.chunks.Free(context.WithoutCancel(ctx), s.uncommitted(tx.appended))
		}
		return fmt.Errorf("commit: %w", sayFull(err))
	}
	// Punching only after the commit: a crash before it leaves the records referenced and intact.
	// Committed, the transaction has succeeded: a cancel does not stop the space's return.
	if len(tx.freed) > 0 {
		if err := s.chunks.Free(context.WithoutCancel(ctx), tx.freed); err != nil {
			return &FreeError{Err: err}
		}
	}
	return nil
}

// begin starts Update's SQL transaction. Not with ctx itself: database/sql would roll the
// transaction back from another goroutine when ctx is cancelled, while fn may still be appending;
// the statements fn runs still stop on ctx, and Update rolls back when fn returns.
func (s *Store) begin(ctx context.Context) (*Tx, error) {
	sqlTx, err := s.db.BeginTx(context.WithoutCancel(ctx), nil)
	if err != nil {
		return nil, fmt.Errorf("begin transaction: %w", sayFull(err))
	}
	return &Tx{tx: sqlTx, s: s, ctx: ctx}, nil
}

// commitMayHaveLanded reports whether a failed COMMIT may still have made its transaction durable:
// an I/O error writing or syncing the WAL can leave a whole commit frame in it, which the next open
// replays even though this connection saw the transaction roll back. Records it references must
// then stay as they are; gc punches them if the transaction did not land after all.
func commitMayHaveLanded(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrIoErr
}

// FreeError is what Update returns when its transaction committed but the space it freed could not
// all be returned to the filesystem; Reclaim (snapfs gc) returns the rest. The transaction's work is
// done: it must not be run again.
type FreeError struct{ Err error }

func (e *FreeError) Error() string {
	return "committed, but returning the freed space failed (snapfs gc returns it): " + e.Err.Error()
}

func (e *FreeError) Unwrap() error { return e.Err }

// Committed reports whether err, from Update, comes after its transaction committed (a FreeError):
// the work is done and must not be run again.
func Committed(err error) bool {
	var fe *FreeError
	return errors.As(err, &fe)
}

// uncommitted returns the extents that no committed chunk row covers; on doubt, none.
func (s *Store) uncommitted(exts []Extent) []Extent {
	var out []Extent
	for _, e := range exts {
		var used bool
		err := s.rdb.QueryRow(`SELECT EXISTS (SELECT 1 FROM chunks WHERE pack_id = ? AND offset = ?)`, e.Pack, e.Offset).Scan(&used)
		if err != nil {
			return nil
		}
		if !used {
			out = append(out, e)
		}
	}
	return out
}

// View runs fn in a read transaction, which sees one consistent state of the metadata.
func (s *Store) View(ctx context.Context, fn func(tx *Tx) error) error {
	sqlTx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer sqlTx.Rollback()
	return fn(&Tx{tx: sqlTx, s: s, ctx: ctx, readOnly: true})
}

// heldGroup is how many hashes one statement of Held looks up: the chunks of a 1 MiB block of the
// default chunk size. Shorter lists are padded with their last hash, so that one statement,
// prepared once, serves them all.
const heldGroup = 16

// Held reports which of hashes name chunks the store holds, as of one committed state per group of
// heldGroup hashes. It costs a fraction of a read transaction (a snapshot asks once per block of
// the disk that changed): one prepared statement, no BEGIN and COMMIT.
func (s *Store) Held(ctx context.Context, hashes []Hash) (map[Hash]bool, error) {
	held := make(map[Hash]bool, len(hashes))
	if len(hashes) == 0 {
		return held, nil
	}
	st, err := s.heldStatement(ctx)
	if err != nil {
		return nil, fmt.Errorf("look up chunks: %w", err)
	}
	args := make([]any, heldGroup)
	for start := 0; start < len(hashes); start += heldGroup {
		part := hashes[start:min(start+heldGroup, len(hashes))]
		for i := range args {
			args[i] = part[min(i, len(part)-1)][:]
		}
		if err := scanHeld(ctx, st, args, held); err != nil {
			return nil, fmt.Errorf("look up chunks: %w", err)
		}
	}
	return held, nil
}

// heldStatement returns Held's statement, preparing it the first time; a failure is not kept, so
// that a cancelled first caller does not fail the next ones.
func (s *Store) heldStatement(ctx context.Context) (*sql.Stmt, error) {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if s.heldStmt == nil {
		q := `SELECT hash FROM chunks WHERE hash IN (?` + strings.Repeat(",?", heldGroup-1) + `)`
		st, err := s.rdb.PrepareContext(ctx, q)
		if err != nil {
			return nil, err
		}
		s.heldStmt = st
	}
	return s.heldStmt, nil
}

func scanHeld(ctx context.Context, st *sql.Stmt, args []any, held map[Hash]bool) error {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			return err
		}
		held[Hash(h)] = true
	}
	return rows.Err()
}

// ReadChunk returns the raw bytes of the chunk c appended to dst[:0], checked against the record's
// payload checksum, or against the chunk's hash where the record has none: bytes that are not the
// chunk's are never returned.
func (s *Store) ReadChunk(ctx context.Context, dst []byte, c Chunk) ([]byte, error) {
	return s.readChunk(ctx, dst, c, false)
}

// VerifyChunk is ReadChunk that also hashes the decoded bytes against the chunk's address, as a
// deep check of the store does.
func (s *Store) VerifyChunk(ctx context.Context, dst []byte, c Chunk) ([]byte, error) {
	return s.readChunk(ctx, dst, c, true)
}

func (s *Store) readChunk(ctx context.Context, dst []byte, c Chunk, deep bool) ([]byte, error) {
	out, err := s.chunks.Read(ctx, dst, c, deep)
	if errors.Is(err, os.ErrNotExist) {
		// The metadata names a pack file that is gone: the store is damaged, the chunk not merely
		// absent (callers and the daemon's error classes take ErrNotExist for "no such thing").
		err = fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read chunk %d (%s): %w", c.ID, c.Hash, err)
	}
	return out, nil
}
