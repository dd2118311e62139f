package store

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/mattn/go-sqlite3"
)

// ErrExists is returned when a row with the same unique name exists.
var ErrExists = errors.New("already exists")

func uniqueErr(err error, what string) error {
	var se sqlite3.Error
	if errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintUnique {
		return fmt.Errorf("%s: %w", what, ErrExists)
	}
	return err
}

// --- volumes ---

const volumeCols = `id, name, kind, instance, source, size, chunk_size, managed, created, ident`

func scanVolume(sc scanner) (Volume, error) {
	var v Volume
	err := sc.Scan(&v.ID, &v.Name, &v.Kind, &v.Instance, &v.Source, &v.Size, &v.ChunkSize, &v.Managed, &v.Created, &v.Ident)
	return v, err
}

// InsertVolume registers v and returns its id.
func (t *Tx) InsertVolume(v Volume) (int64, error) {
	res, err := t.exec(`INSERT INTO volumes(name, kind, instance, source, size, chunk_size, managed, created, ident)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, v.Name, v.Kind, v.Instance, v.Source, v.Size, v.ChunkSize, v.Managed, v.Created, v.Ident)
	if err != nil {
		return 0, uniqueErr(err, "volume "+v.Name)
	}
	return res.LastInsertId()
}

// VolumeByName finds a volume.
func (t *Tx) VolumeByName(name string) (Volume, error) {
	v, err := scanVolume(t.queryRow(`SELECT `+volumeCols+` FROM volumes WHERE name = ?`, name))
	return v, notFound(err, "volume "+name)
}

// VolumeByID finds a volume.
func (t *Tx) VolumeByID(id int64) (Volume, error) {
	v, err := scanVolume(t.queryRow(`SELECT `+volumeCols+` FROM volumes WHERE id = ?`, id))
	return v, notFound(err, fmt.Sprintf("volume %d", id))
}

// VolumesByInstance lists the volumes registered with an instance.
func (t *Tx) VolumesByInstance(instance string) ([]Volume, error) {
	return t.volumes(`SELECT `+volumeCols+` FROM volumes WHERE instance = ? ORDER BY name`, instance)
}

// Volumes lists all volumes by name.
func (t *Tx) Volumes() ([]Volume, error) {
	return t.volumes(`SELECT ` + volumeCols + ` FROM volumes ORDER BY name`)
}

func (t *Tx) volumes(q string, args ...any) ([]Volume, error) {
	return queryAll(t, scanVolume, q, args...)
}

// scanner is what *sql.Row and *sql.Rows have in common.
type scanner interface{ Scan(...any) error }

// queryAll runs q and scans every row it returns.
func queryAll[T any](t *Tx, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// UpdateVolumeSize records a volume's current size.
func (t *Tx) UpdateVolumeSize(id, size int64) error {
	_, err := t.exec(`UPDATE volumes SET size = ? WHERE id = ?`, size, id)
	return err
}

// SetVolumeIdent records what identifies a volume's disk.
func (t *Tx) SetVolumeIdent(id int64, ident string) error {
	_, err := t.exec(`UPDATE volumes SET ident = ? WHERE id = ?`, ident, id)
	return err
}

// DeleteVolume forgets a volume; its chain stays, with no volume.
func (t *Tx) DeleteVolume(id int64) error {
	_, err := t.exec(`DELETE FROM volumes WHERE id = ?`, id)
	return err
}

// --- chains ---

const chainCols = `id, name, COALESCE(volume_id, 0), source, region, chunk_size, created, next_seq`

func scanChain(sc scanner) (Chain, error) {
	var c Chain
	err := sc.Scan(&c.ID, &c.Name, &c.VolumeID, &c.Source, &c.Region, &c.ChunkSize, &c.Created, &c.NextSeq)
	return c, err
}

// InsertChain creates a chain and returns its id.
func (t *Tx) InsertChain(c Chain) (int64, error) {
	var vol any
	if c.VolumeID != 0 {
		vol = c.VolumeID
	}
	res, err := t.exec(`INSERT INTO chains(name, volume_id, source, region, chunk_size, created, next_seq)
		VALUES (?, ?, ?, ?, ?, ?, 1)`, c.Name, vol, c.Source, c.Region, c.ChunkSize, c.Created)
	if err != nil {
		return 0, uniqueErr(err, "chain "+c.Name)
	}
	return res.LastInsertId()
}

// DeleteChain removes a chain that has no snapshots.
func (t *Tx) DeleteChain(id int64) error {
	_, err := t.exec(`DELETE FROM chains WHERE id = ?`, id)
	return err
}

// ChainByName finds a chain.
func (t *Tx) ChainByName(name string) (Chain, error) {
	c, err := scanChain(t.queryRow(`SELECT `+chainCols+` FROM chains WHERE name = ?`, name))
	return c, notFound(err, "chain "+name)
}

// ChainByID finds a chain.
func (t *Tx) ChainByID(id int64) (Chain, error) {
	c, err := scanChain(t.queryRow(`SELECT `+chainCols+` FROM chains WHERE id = ?`, id))
	return c, notFound(err, fmt.Sprintf("chain %d", id))
}

// ChainByVolume finds the chain of a volume.
func (t *Tx) ChainByVolume(volumeID int64) (Chain, error) {
	c, err := scanChain(t.queryRow(`SELECT `+chainCols+` FROM chains WHERE volume_id = ?`, volumeID))
	return c, notFound(err, fmt.Sprintf("chain of volume %d", volumeID))
}

// Chains lists all chains by name.
func (t *Tx) Chains() ([]Chain, error) {
	return queryAll(t, scanChain, `SELECT `+chainCols+` FROM chains ORDER BY name`)
}

// ChainStoredBytes is the stored size of the distinct chunks the chain's snapshots reference.
func (t *Tx) ChainStoredBytes(chain int64) (int64, error) {
	var n int64
	err := t.queryRow(`
		SELECT COALESCE(SUM(c.stored_size), 0) FROM chunks c WHERE c.id IN (
			SELECT d.chunk_id FROM deltas d JOIN snapshots s ON s.id = d.snapshot_id WHERE s.chain_id = ?)`, chain).Scan(&n)
	return n, err
}

// TakeSeq reserves the next sequence number of a chain.
func (t *Tx) TakeSeq(chain int64) (int64, error) {
	var seq int64
	if err := t.queryRow(`SELECT next_seq FROM chains WHERE id = ?`, chain).Scan(&seq); err != nil {
		return 0, notFound(err, fmt.Sprintf("chain %d", chain))
	}
	_, err := t.exec(`UPDATE chains SET next_seq = ? WHERE id = ?`, seq+1, chain)
	return seq, err
}

// --- snapshots ---

const snapshotCols = `id, chain_id, seq, name, volume, size, created, status, origin, data_bytes`

func scanSnapshot(sc scanner) (Snapshot, error) {
	var s Snapshot
	var data sql.NullInt64
	err := sc.Scan(&s.ID, &s.ChainID, &s.Seq, &s.Name, &s.Volume, &s.Size, &s.Created, &s.Status, &s.Origin, &data)
	s.DataBytes = UnknownDataBytes
	if data.Valid {
		s.DataBytes = data.Int64
	}
	return s, err
}

// InsertSnapshot creates a snapshot row and returns its id. A DataBytes below zero is not recorded.
func (t *Tx) InsertSnapshot(s Snapshot) (int64, error) {
	var data sql.NullInt64
	if s.DataBytes >= 0 {
		data = sql.NullInt64{Int64: s.DataBytes, Valid: true}
	}
	res, err := t.exec(`INSERT INTO snapshots(chain_id, seq, name, volume, size, created, status, origin, data_bytes)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, s.ChainID, s.Seq, s.Name, s.Volume, s.Size, s.Created, s.Status, s.Origin, data)
	if err != nil {
		return 0, uniqueErr(err, "snapshot "+s.Name)
	}
	return res.LastInsertId()
}

// SetSnapshotStatus changes a snapshot's status.
func (t *Tx) SetSnapshotStatus(id int64, status string) error {
	_, err := t.exec(`UPDATE snapshots SET status = ? WHERE id = ?`, status, id)
	return err
}

// SetSnapshotDataBytes records how many bytes of a snapshot's disk hold data.
func (t *Tx) SetSnapshotDataBytes(id, n int64) error {
	_, err := t.exec(`UPDATE snapshots SET data_bytes = ? WHERE id = ?`, n, id)
	return err
}

// DeleteSnapshotRow removes a snapshot row that has no deltas left.
func (t *Tx) DeleteSnapshotRow(id int64) error {
	_, err := t.exec(`DELETE FROM snapshots WHERE id = ?`, id)
	return err
}

// SnapshotByID finds a snapshot.
func (t *Tx) SnapshotByID(id int64) (Snapshot, error) {
	s, err := scanSnapshot(t.queryRow(`SELECT `+snapshotCols+` FROM snapshots WHERE id = ?`, id))
	return s, notFound(err, fmt.Sprintf("snapshot %d", id))
}

// SnapshotByName finds a snapshot of a chain.
func (t *Tx) SnapshotByName(chain int64, name string) (Snapshot, error) {
	s, err := scanSnapshot(t.queryRow(`SELECT `+snapshotCols+` FROM snapshots WHERE chain_id = ? AND name = ?`, chain, name))
	return s, notFound(err, "snapshot "+name)
}

// Snapshots lists a chain's snapshots with the given status ("" for any), oldest first.
func (t *Tx) Snapshots(chain int64, status string) ([]Snapshot, error) {
	return queryAll(t, scanSnapshot, `SELECT `+snapshotCols+` FROM snapshots WHERE chain_id = ? AND (? = '' OR status = ?) ORDER BY seq`,
		chain, status, status)
}

// SnapshotsWithStatus lists every snapshot in the store with a status, by id.
func (t *Tx) SnapshotsWithStatus(status string) ([]Snapshot, error) {
	return queryAll(t, scanSnapshot, `SELECT `+snapshotCols+` FROM snapshots WHERE status = ? ORDER BY id`, status)
}

// NextSnapshot returns the oldest snapshot of chain after seq that is not being created, or
// ErrNotFound.
func (t *Tx) NextSnapshot(chain, seq int64) (Snapshot, error) {
	s, err := scanSnapshot(t.queryRow(`SELECT `+snapshotCols+` FROM snapshots
		WHERE chain_id = ? AND seq > ? AND status <> 'creating' ORDER BY seq LIMIT 1`, chain, seq))
	return s, notFound(err, "next snapshot")
}

// PrevReadySnapshot returns the newest ready snapshot of chain before seq, or ErrNotFound.
func (t *Tx) PrevReadySnapshot(chain, seq int64) (Snapshot, error) {
	s, err := scanSnapshot(t.queryRow(`SELECT `+snapshotCols+` FROM snapshots
		WHERE chain_id = ? AND seq < ? AND status = 'ready' ORDER BY seq DESC LIMIT 1`, chain, seq))
	return s, notFound(err, "previous snapshot")
}

// PrevSnapshot returns the newest snapshot of chain before seq that is not being created, or
// ErrNotFound.
func (t *Tx) PrevSnapshot(chain, seq int64) (Snapshot, error) {
	s, err := scanSnapshot(t.queryRow(`SELECT `+snapshotCols+` FROM snapshots
		WHERE chain_id = ? AND seq < ? AND status <> 'creating' ORDER BY seq DESC LIMIT 1`, chain, seq))
	return s, notFound(err, "previous snapshot")
}

// CountSnapshots counts a chain's snapshots with a status.
func (t *Tx) CountSnapshots(chain int64, status string) (int64, error) {
	var n int64
	err := t.queryRow(`SELECT COUNT(*) FROM snapshots WHERE chain_id = ? AND status = ?`, chain, status).Scan(&n)
	return n, err
}

// StoreStats is what the whole store holds.
type StoreStats struct {
	Chunks      int64
	StoredBytes int64 // bytes of live records
	RawBytes    int64 // bytes those records decode to
	Packs       int64
}

// Stats sums the store's chunks and packs.
func (t *Tx) Stats() (StoreStats, error) {
	var st StoreStats
	err := t.queryRow(`SELECT COUNT(*), COALESCE(SUM(stored_size), 0), COALESCE(SUM(size), 0) FROM chunks`).
		Scan(&st.Chunks, &st.StoredBytes, &st.RawBytes)
	if err != nil {
		return st, err
	}
	err = t.queryRow(`SELECT COUNT(*) FROM packs`).Scan(&st.Packs)
	return st, err
}
