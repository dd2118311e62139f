package chain

// Temporary signatures, replaced file by file as the implementation lands.

import (
	"context"
	"errors"
)

var errTODO = errors.New("not implemented yet")

// Progress reports how many of total bytes an operation has processed.
type Progress func(done, total int64)

// VolumeSpec describes a disk to register.
type VolumeSpec struct {
	Name      string
	Source    string
	Kind      string // KindData (default) or KindSystem
	Instance  string
	ChunkSize int64 // 0: DefaultChunkSize
}

// AddVolume registers a disk.
func (m *Manager) AddVolume(ctx context.Context, spec VolumeSpec) (Volume, error) {
	return Volume{}, errTODO
}

// RemoveVolume forgets a disk; its chain and snapshots stay.
func (m *Manager) RemoveVolume(ctx context.Context, name string) error { return errTODO }

// SystemVolume finds the system disk registered with an instance.
func (m *Manager) SystemVolume(ctx context.Context, instance string) (Volume, error) {
	return Volume{}, errTODO
}

// CreateOptions tune CreateSnapshot.
type CreateOptions struct {
	Name     string   // "" for VOLUME-YYYYMMDD-HHMMSS
	Freeze   string   // mount point to freeze while the disk is read
	Progress Progress // called from one goroutine as the disk is read
}

// CreateSnapshot snapshots a volume.
func (m *Manager) CreateSnapshot(ctx context.Context, volume string, opts CreateOptions) (Snapshot, error) {
	return Snapshot{}, errTODO
}

// DeleteStats says what a delete freed.
type DeleteStats struct {
	FreedChunks int64
	FreedBytes  int64
}

// DeleteSnapshot deletes a snapshot.
func (m *Manager) DeleteSnapshot(ctx context.Context, ref string) (DeleteStats, error) {
	return DeleteStats{}, errTODO
}

// Image reads a snapshot.
type Image struct{}

// OpenImage opens a snapshot for reading.
func (m *Manager) OpenImage(ctx context.Context, ref string) (*Image, error) { return nil, errTODO }

// RestoreOptions tune Restore.
type RestoreOptions struct {
	To       string // "" for the chain's source
	Force    bool   // write even when the target is in use
	Progress Progress
}

// RestoreStats says what a restore did.
type RestoreStats struct {
	Target        string
	BytesWritten  int64
	ChunksWritten int64
	ChunksSkipped int64
	ChunksZeroed  int64
}

// Restore writes a snapshot back to a disk.
func (m *Manager) Restore(ctx context.Context, ref string, opts RestoreOptions) (RestoreStats, error) {
	return RestoreStats{}, errTODO
}

// CloneOptions tune Clone.
type CloneOptions struct {
	To       string // new image file; must not exist
	Volume   string // when set, register the image as this volume, its chain starting from the snapshot
	Kind     string
	Instance string
	Progress Progress
}

// CloneResult says what a clone made.
type CloneResult struct {
	Path         string
	BytesWritten int64
	Volume       *Volume
}

// Clone writes a snapshot to a new sparse image file.
func (m *Manager) Clone(ctx context.Context, ref string, opts CloneOptions) (CloneResult, error) {
	return CloneResult{}, errTODO
}

// Fault is one integrity problem verify found.
type Fault struct {
	Chunk     int64    `json:"chunk"`
	Hash      string   `json:"hash"`
	Problem   string   `json:"problem"`
	Snapshots []string `json:"snapshots"` // CHAIN/NAME of every snapshot whose image uses the chunk
}

// VerifyReport is what verify checked and found.
type VerifyReport struct {
	Chunks int64   `json:"chunks"`
	Bytes  int64   `json:"bytes"`
	Faults []Fault `json:"faults"`
}

// Verify re-reads and re-hashes stored chunks.
func (m *Manager) Verify(ctx context.Context, refs []string, progress Progress) (VerifyReport, error) {
	return VerifyReport{}, errTODO
}

// GCStats says what gc reclaimed.
type GCStats struct {
	PunchedBytes int64
	RemovedPacks int64
	ChunksFreed  int64
}

// GC reclaims stored space that no metadata references.
func (m *Manager) GC(ctx context.Context) (GCStats, error) { return GCStats{}, errTODO }

func (m *Manager) discardSnapshot(ctx context.Context, id int64) error { return errTODO }
func (m *Manager) finishDelete(ctx context.Context, id int64) (DeleteStats, error) {
	return DeleteStats{}, errTODO
}

type chunkCache struct{}

func newChunkCache(n int64) *chunkCache { return &chunkCache{} }

// ReadAt reads the snapshot's bytes; safe for concurrent use. It returns io.EOF past the end.
func (im *Image) ReadAt(p []byte, off int64) (int, error) { return 0, errTODO }

// Size is the disk's size at the snapshot.
func (im *Image) Size() int64 { return 0 }

// Info describes the snapshot the image reads.
func (im *Image) Info() Snapshot { return Snapshot{} }

// SeekData returns the first offset >= off that holds data, as lseek(SEEK_DATA); ok is false when
// there is none before the end.
func (im *Image) SeekData(off int64) (pos int64, ok bool) { return 0, false }

// SeekHole returns the first offset >= off in a hole, as lseek(SEEK_HOLE); the end counts as a hole.
func (im *Image) SeekHole(off int64) int64 { return 0 }

// Close releases the image. A snapshot deleted while open is freed after its last image closes.
func (im *Image) Close() error { return nil }
