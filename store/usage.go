package store

// ChunkDelta is a delta that names a chunk: which index of which snapshot, and where that snapshot
// stands in its chain.
type ChunkDelta struct {
	Snapshot int64 // the snapshot whose delta it is
	Chain    int64 // that snapshot's chain
	Seq      int64 // that snapshot's place in its chain
	Idx      int64 // the chunk index the delta sets
}

// ChunkDeltas returns every delta naming chunk id, by snapshot id and then index. It reads only
// those deltas (through the index on deltas.chunk_id), however large the chunk maps that hold them.
func (t *Tx) ChunkDeltas(id int64) ([]ChunkDelta, error) {
	return queryAll(t, func(sc scanner) (ChunkDelta, error) {
		var d ChunkDelta
		err := sc.Scan(&d.Snapshot, &d.Chain, &d.Seq, &d.Idx)
		return d, err
	}, `SELECT d.snapshot_id, s.chain_id, s.seq, d.idx
		FROM deltas d JOIN snapshots s ON s.id = d.snapshot_id
		WHERE d.chunk_id = ? ORDER BY d.snapshot_id, d.idx`, id)
}
