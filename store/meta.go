package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// Tx is a metadata transaction; see Store.Update and Store.View.
type Tx struct {
	tx       *sql.Tx
	s        *Store
	ctx      context.Context
	readOnly bool
	stmts    map[string]*sql.Stmt
	appended []Extent // records this transaction appended: garbage if it does not commit
	freed    []Extent
}

// Chunk is a stored chunk: its content address and where its record lives.
type Chunk struct {
	ID         int64
	Hash       Hash
	Size       int64 // raw bytes
	StoredSize int64 // bytes the record occupies in its pack
	Pack       int64
	Offset     int64
	Refs       int64
}

// Volume is a registered disk.
type Volume struct {
	ID        int64
	Name      string
	Kind      string
	Instance  string
	Source    string
	Size      int64
	ChunkSize int64
	Managed   bool
	Created   int64 // unix nanoseconds
	// Ident identifies the disk beyond its path ("" when not known); chain defines it.
	Ident string
}

// Chain is the row of a snapshot chain. VolumeID is 0 once its volume was forgotten.
type Chain struct {
	ID        int64
	Name      string
	VolumeID  int64
	Source    string
	Region    string
	ChunkSize int64
	Created   int64
	NextSeq   int64
}

// Snapshot is the row of one snapshot.
type Snapshot struct {
	ID      int64
	ChainID int64
	Seq     int64
	Name    string
	Volume  string
	Size    int64
	Created int64
	Status  string
	Origin  int64 // snapshot a clone's base was made from, 0 otherwise
	// DataBytes is how many bytes of the disk's chunks hold data (are not holes), or
	// UnknownDataBytes for a snapshot made before they were recorded.
	DataBytes int64
}

// UnknownDataBytes is the DataBytes of a snapshot whose data bytes were not recorded.
const UnknownDataBytes = -1

// Delta is one chunk index a snapshot records: Chunk 0 is a hole.
type Delta struct {
	Idx   int64
	Chunk int64
}

// stmt returns q prepared on the transaction's connection, once per transaction: a snapshot's
// batch runs the same few statements thousands of times.
func (t *Tx) stmt(q string) (*sql.Stmt, error) {
	if st, ok := t.stmts[q]; ok {
		return st, nil
	}
	st, err := t.tx.PrepareContext(t.ctx, q)
	if err != nil {
		return nil, err
	}
	if t.stmts == nil {
		t.stmts = map[string]*sql.Stmt{}
	}
	t.stmts[q] = st
	return st, nil
}

func (t *Tx) exec(q string, args ...any) (sql.Result, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(t.ctx, args...)
}

func (t *Tx) query(q string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(t.ctx, args...)
}

// errRow is a *sql.Row stand-in for a statement that failed to prepare.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func (t *Tx) queryRow(q string, args ...any) interface{ Scan(...any) error } {
	st, err := t.stmt(q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(t.ctx, args...)
}

func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return err
}

// --- chunks ---

const chunkCols = `id, hash, size, stored_size, pack_id, offset, refs`

func scanChunk(sc scanner) (Chunk, error) {
	var c Chunk
	var h []byte
	err := sc.Scan(&c.ID, &h, &c.Size, &c.StoredSize, &c.Pack, &c.Offset, &c.Refs)
	copy(c.Hash[:], h)
	return c, err
}

// ChunkByHash finds the stored chunk with content address h.
func (t *Tx) ChunkByHash(h Hash) (Chunk, error) {
	c, err := scanChunk(t.queryRow(`SELECT `+chunkCols+` FROM chunks WHERE hash = ?`, h[:]))
	return c, notFound(err, "chunk "+h.String())
}

// ChunkByID finds a stored chunk by id.
func (t *Tx) ChunkByID(id int64) (Chunk, error) {
	c, err := scanChunk(t.queryRow(`SELECT `+chunkCols+` FROM chunks WHERE id = ?`, id))
	return c, notFound(err, fmt.Sprintf("chunk %d", id))
}

// EachChunk calls fn for every stored chunk, in pack order.
func (t *Tx) EachChunk(fn func(Chunk) error) error {
	rows, err := t.query(`SELECT ` + chunkCols + ` FROM chunks ORDER BY pack_id, offset`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scanChunk(rows)
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return rows.Err()
}

// ChunksAfter returns up to limit chunks in pack order (pack, then offset) that come after the
// position (pack, offset); (-1, -1) starts from the first. Reading a store page by page in short
// transactions lets SQLite checkpoint its WAL meanwhile, which one long read would stop.
func (t *Tx) ChunksAfter(pack, offset int64, limit int) ([]Chunk, error) {
	return queryAll(t, scanChunk, `SELECT `+chunkCols+` FROM chunks WHERE (pack_id, offset) > (?, ?)
		ORDER BY pack_id, offset LIMIT ?`, pack, offset, limit)
}

// MaxChunkID returns the highest id a chunk has, 0 with none.
func (t *Tx) MaxChunkID() (int64, error) {
	var id int64
	if err := t.queryRow(`SELECT COALESCE(MAX(id), 0) FROM chunks`).Scan(&id); err != nil {
		return 0, fmt.Errorf("highest chunk id: %w", err)
	}
	return id, nil
}

// PutChunk appends the encoded record rec of a chunk of rawSize bytes with address h and registers it
// with no references. The record becomes durable before the transaction commits.
func (t *Tx) PutChunk(h Hash, rawSize int, rec []byte) (int64, error) {
	pack, off, err := t.s.chunks.Append(t.ctx, rec)
	if err != nil {
		return 0, err
	}
	t.appended = append(t.appended, Extent{Pack: pack, Offset: off, Len: int64(len(rec))})
	if _, err := t.exec(`INSERT INTO packs(id, size, live_bytes) VALUES (?, 0, 0) ON CONFLICT DO NOTHING`, pack); err != nil {
		return 0, fmt.Errorf("register pack %d: %w", pack, err)
	}
	res, err := t.exec(`INSERT INTO chunks(hash, size, stored_size, pack_id, offset, refs) VALUES (?, ?, ?, ?, ?, 0)`,
		h[:], rawSize, len(rec), pack, off)
	if err != nil {
		return 0, fmt.Errorf("insert chunk %s: %w", h, err)
	}
	if _, err := t.exec(`UPDATE packs SET live_bytes = live_bytes + ?, size = MAX(size, ?) WHERE id = ?`,
		len(rec), off+int64(len(rec)), pack); err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// ReleaseUnreferenced deletes every chunk that no delta references any more; their space is returned
// to the filesystem once the transaction commits. It returns how many chunks and stored bytes it freed.
func (t *Tx) ReleaseUnreferenced() (n, bytes int64, err error) {
	rows, err := t.query(`SELECT ` + chunkCols + ` FROM chunks WHERE refs = 0`)
	if err != nil {
		return 0, 0, err
	}
	var dead []Chunk
	for rows.Next() {
		c, err := scanChunk(rows)
		if err != nil {
			rows.Close()
			return 0, 0, err
		}
		dead = append(dead, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	for _, c := range dead {
		if _, err := t.exec(`DELETE FROM chunks WHERE id = ?`, c.ID); err != nil {
			return 0, 0, fmt.Errorf("delete chunk %d: %w", c.ID, err)
		}
		if _, err := t.exec(`UPDATE packs SET live_bytes = live_bytes - ? WHERE id = ?`, c.StoredSize, c.Pack); err != nil {
			return 0, 0, err
		}
		t.freed = append(t.freed, Extent{Pack: c.Pack, Offset: c.Offset, Len: c.StoredSize})
		n++
		bytes += c.StoredSize
	}
	return n, bytes, nil
}

// --- deltas ---

// InsertDeltas records ds for snapshot snap and takes a reference on each chunk they name.
func (t *Tx) InsertDeltas(snap int64, ds []Delta) error {
	const batch = 300
	for len(ds) > 0 {
		n := min(len(ds), batch)
		var q strings.Builder
		q.WriteString(`INSERT INTO deltas(snapshot_id, idx, chunk_id) VALUES `)
		args := make([]any, 0, 3*n)
		for i, d := range ds[:n] {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?,?,?)")
			var chunk any
			if d.Chunk != 0 {
				chunk = d.Chunk
			}
			args = append(args, snap, d.Idx, chunk)
		}
		if _, err := t.exec(q.String(), args...); err != nil {
			return fmt.Errorf("insert deltas of snapshot %d: %w", snap, err)
		}
		if err := t.addRefs(ds[:n], 1); err != nil {
			return err
		}
		ds = ds[n:]
	}
	return nil
}

// deltaWhere selects rows of deltas aliased d.
type deltaWhere struct {
	cond string
	args []any
}

// dropDeltas deletes the selected rows and their references.
func (t *Tx) dropDeltas(w deltaWhere) error {
	if _, err := t.exec(`
		UPDATE chunks SET refs = refs - c.n
		FROM (SELECT chunk_id, COUNT(*) AS n FROM deltas d WHERE `+w.cond+` AND chunk_id IS NOT NULL GROUP BY chunk_id) AS c
		WHERE chunks.id = c.chunk_id`, w.args...); err != nil {
		return fmt.Errorf("release references: %w", err)
	}
	if _, err := t.exec(`DELETE FROM deltas AS d WHERE `+w.cond, w.args...); err != nil {
		return fmt.Errorf("delete deltas: %w", err)
	}
	return nil
}

// DropDeltas deletes all of snapshot snap's deltas and their references.
func (t *Tx) DropDeltas(snap int64) error {
	return t.dropDeltas(deltaWhere{`d.snapshot_id = ?`, []any{snap}})
}

// DropShadowedDeltas deletes the deltas of snap that snapshot next overrides (next has the same index)
// or that lie at or past index limit, with their references.
func (t *Tx) DropShadowedDeltas(snap, next, limit int64) error {
	return t.dropDeltas(deltaWhere{
		`d.snapshot_id = ? AND (d.idx >= ? OR EXISTS (SELECT 1 FROM deltas n WHERE n.snapshot_id = ? AND n.idx = d.idx))`,
		[]any{snap, limit, next},
	})
}

// MoveDeltas hands every remaining delta of snap to snapshot to; references are unchanged.
func (t *Tx) MoveDeltas(snap, to int64) error {
	if _, err := t.exec(`UPDATE deltas SET snapshot_id = ? WHERE snapshot_id = ?`, to, snap); err != nil {
		return fmt.Errorf("move deltas of snapshot %d to %d: %w", snap, to, err)
	}
	return nil
}

// CopyDeltas records, for snapshot to, the deltas ds (a folded view) and references their chunks.
// It is InsertDeltas under the name a clone reads best with.
func (t *Tx) CopyDeltas(to int64, ds []Delta) error { return t.InsertDeltas(to, ds) }

// Deltas returns snapshot snap's own deltas.
func (t *Tx) Deltas(snap int64) ([]Delta, error) {
	rows, err := t.query(`SELECT idx, COALESCE(chunk_id, 0) FROM deltas WHERE snapshot_id = ? ORDER BY idx`, snap)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ds []Delta
	for rows.Next() {
		var d Delta
		if err := rows.Scan(&d.Idx, &d.Chunk); err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, rows.Err()
}

// DeltaStats returns how many deltas snapshot snap records and the stored bytes of the chunks that
// only it references and that deleting it would free: its deltas that next (0 if none) overrides or
// that lie at or past index limit, whose chunks have no other reference.
func (t *Tx) DeltaStats(snap, next, limit int64) (rows int64, unique int64, err error) {
	if err := t.queryRow(`SELECT COUNT(*) FROM deltas WHERE snapshot_id = ?`, snap).Scan(&rows); err != nil {
		return 0, 0, err
	}
	cond := `d.snapshot_id = ?`
	args := []any{snap}
	if next != 0 {
		cond += ` AND (d.idx >= ? OR EXISTS (SELECT 1 FROM deltas n WHERE n.snapshot_id = ? AND n.idx = d.idx))`
		args = append(args, limit, next)
	}
	err = t.queryRow(`
		SELECT COALESCE(SUM(stored_size), 0) FROM (
			SELECT c.stored_size FROM deltas d JOIN chunks c ON c.id = d.chunk_id
			WHERE `+cond+`
			GROUP BY c.id HAVING COUNT(*) = MAX(c.refs))`, args...).Scan(&unique)
	return rows, unique, err
}

// ChunkUsers returns the ids of snapshots that have a delta naming chunk id.
func (t *Tx) ChunkUsers(id int64) ([]int64, error) {
	rows, err := t.query(`SELECT DISTINCT snapshot_id FROM deltas WHERE chunk_id = ? ORDER BY snapshot_id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		ids = append(ids, s)
	}
	return ids, rows.Err()
}

// FoldChunkRange calls fn with the deltas for chunk indexes in [from, to) of the chain's snapshots
// with seq <= upTo, oldest snapshot first, so that a later call for the same index overrides an
// earlier one; each delta's chunk is described in full (a zero Chunk for a hole). Snapshots still
// being created do not count.
func (t *Tx) FoldChunkRange(chain, upTo, from, to int64, fn func(idx int64, c Chunk)) error {
	rows, err := t.query(`
		SELECT d.idx, COALESCE(c.id, 0), COALESCE(c.hash, x''), COALESCE(c.size, 0), COALESCE(c.stored_size, 0),
		       COALESCE(c.pack_id, 0), COALESCE(c.offset, 0), COALESCE(c.refs, 0)
		FROM snapshots s JOIN deltas d ON d.snapshot_id = s.id LEFT JOIN chunks c ON c.id = d.chunk_id
		WHERE s.chain_id = ? AND s.seq <= ? AND s.status <> 'creating' AND d.idx >= ? AND d.idx < ?
		ORDER BY s.seq`, chain, upTo, from, to)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var idx int64
		var c Chunk
		var h []byte
		if err := rows.Scan(&idx, &c.ID, &h, &c.Size, &c.StoredSize, &c.Pack, &c.Offset, &c.Refs); err != nil {
			return err
		}
		copy(c.Hash[:], h)
		fn(idx, c)
	}
	return rows.Err()
}

// DeltaEnd returns one past the highest chunk index any delta of snapshot snap names, 0 for none.
func (t *Tx) DeltaEnd(snap int64) (int64, error) {
	var end sql.NullInt64
	if err := t.queryRow(`SELECT MAX(idx) + 1 FROM deltas WHERE snapshot_id = ?`, snap).Scan(&end); err != nil {
		return 0, fmt.Errorf("deltas of snapshot %d: %w", snap, err)
	}
	return end.Int64, nil
}
