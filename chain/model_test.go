package chain

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapfs/snapfs/store"
	"golang.org/x/sys/unix"
)

// TestModel runs random operations on a store of a few small disks and checks the store after each
// against an in-memory model: the bytes of every live snapshot.
//
//	go test -run Model -model.ops 20000 -model.time 10m -model.seed 7 ./chain/
//
// SNAPFS_MODEL_OPS, SNAPFS_MODEL_SEED and SNAPFS_MODEL_TIME do the same.
var (
	modelOps  = flag.Int("model.ops", 0, "operations TestModel runs (default 2000; 600 with -race, 300 with -short)")
	modelSeed = flag.Uint64("model.seed", 0, "seed of TestModel (default 1)")
	modelTime = flag.Duration("model.time", 0, "time TestModel may run its operations for (default 45s)")
)

func modelParams(t *testing.T) (ops int, seed uint64, budget time.Duration) {
	ops, seed, budget = 2000, 1, 45*time.Second
	if raceEnabled {
		ops = 600
	}
	if testing.Short() {
		ops = 300
	}
	if v, err := strconv.Atoi(os.Getenv("SNAPFS_MODEL_OPS")); err == nil && v > 0 {
		ops = v
	}
	if v, err := strconv.ParseUint(os.Getenv("SNAPFS_MODEL_SEED"), 10, 64); err == nil && v > 0 {
		seed = v
	}
	if v, err := time.ParseDuration(os.Getenv("SNAPFS_MODEL_TIME")); err == nil && v > 0 {
		budget = v
	}
	if *modelOps > 0 {
		ops = *modelOps
	}
	if *modelSeed > 0 {
		seed = *modelSeed
	}
	if *modelTime > 0 {
		budget = *modelTime
	}
	return ops, seed, budget
}

const (
	mChunk     = MinChunkSize // 16 KiB
	mMinSize   = 256 << 10
	mMaxSize   = 3 << 20
	mMaxVols   = 4  // volumes with a disk at once
	mManySnaps = 14 // above this, deletes become likelier
)

type chunkSum [32]byte

// mDisk is a registered volume's disk file and what it holds.
type mDisk struct {
	vol  string
	path string
	data []byte
}

// mSnap is a live snapshot and the bytes it must read as.
type mSnap struct {
	id    int64
	chain string
	name  string
	data  []byte
	sums  map[chunkSum]int // distinct non-zero chunks: hash → length
	vol   string           // the volume it was taken of
	clone bool             // a clone's base
}

func (s *mSnap) ref() string { return s.chain + "/" + s.name }

type model struct {
	t        *testing.T
	ctx      context.Context
	rng      *rand.Rand
	dir      string
	storeDir string
	m        *Manager
	db       *sql.DB // read-only view of the metadata, for what the API does not tell

	disks   []*mDisk
	snaps   []*mSnap          // live snapshots, oldest first
	chunks  map[chunkSum]int  // distinct chunks of live snapshots → how many snapshots have them
	sizes   map[chunkSum]int  // their lengths
	counts  map[string]int    // operations run, by kind
	seq     int               // for unique names
	op      int               // operation number, for messages
	history []string          // the last operations, for a failure's message
	deadVol map[string]string // removed volumes: chain name → path their disk had
}

func TestModel(t *testing.T) {
	ops, seed, budget := modelParams(t)
	t.Logf("seed %d, %d operations, %v budget (rerun with -model.seed %d)", seed, ops, budget, seed)
	dir := t.TempDir()
	md := &model{
		t: t, ctx: context.Background(), rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), dir: dir,
		storeDir: filepath.Join(dir, "store"), chunks: map[chunkSum]int{}, sizes: map[chunkSum]int{},
		counts: map[string]int{}, deadVol: map[string]string{},
	}
	md.open()
	t.Cleanup(func() {
		if md.m != nil {
			md.m.Close()
		}
		if md.db != nil {
			md.db.Close()
		}
	})
	// Three disks: sizes a multiple of the chunk size and not, partly sparse.
	for i, size := range []int64{2<<20 + 1234, 1 << 20, 3<<20 - 5000} {
		d := md.addDisk(fmt.Sprintf("v%d", i), size)
		md.fill(d, 0, len(d.data)/2)
	}
	start := time.Now()
	type op struct {
		name   string
		weight func() int
		run    func()
	}
	table := []op{
		{"write", func() int { return 20 }, md.opWrite},
		{"zero", func() int { return 6 }, md.opZero},
		{"copy", func() int { return 8 }, md.opCopy},
		{"resize", func() int { return 3 }, md.opResize},
		{"snapshot", func() int { return 16 }, md.opSnapshot},
		{"snapshot-deleting", func() int { return min(3, len(md.snaps)) }, md.opSnapshotDeleting},
		{"delete", func() int { return md.deleteWeight() }, md.opDelete},
		{"delete-open", func() int { return min(2, len(md.snaps)) }, md.opDeleteOpen},
		{"clone", func() int { return min(3, len(md.snaps)) }, md.opClone},
		{"clone-file", func() int { return min(1, len(md.snaps)) }, md.opCloneFile},
		{"restore", func() int { return min(4, len(md.snaps)) }, md.opRestore},
		{"restore-file", func() int { return min(1, len(md.snaps)) }, md.opRestoreFile},
		{"verify", func() int { return 2 }, md.opVerify},
		{"gc", func() int { return 1 }, md.opGC},
		{"reopen", func() int { return 1 }, md.opReopen},
		{"remove-volume", func() int { return md.removeWeight() }, md.opRemoveVolume},
		{"cancel", func() int { return 1 }, md.opCancel},
		{"shrink-during", func() int { return 1 }, md.opShrinkDuring},
	}
	done := 0
	for ; done < ops && time.Since(start) < budget; done++ {
		md.op = done
		total := 0
		for _, o := range table {
			total += o.weight()
		}
		pick := md.rng.IntN(total)
		for _, o := range table {
			if pick -= o.weight(); pick < 0 {
				md.note("%s", o.name)
				md.counts[o.name]++
				o.run()
				break
			}
		}
		md.checkStore()
		if done%10 == 9 && len(md.snaps) > 0 {
			md.checkImage(md.snaps[md.rng.IntN(len(md.snaps))])
		}
		if done%100 == 99 {
			md.checkAll()
		}
	}
	elapsed := time.Since(start)
	md.checkAll()
	md.opVerify()
	t.Logf("%d operations in %v: %v", done, elapsed.Round(time.Millisecond), md.summary())
	if done < ops {
		t.Logf("stopped after %d of %d operations: the %v budget ran out", done, ops, budget)
	}
	md.deleteEverything()
}

func (md *model) fatalf(format string, args ...any) {
	md.t.Helper()
	md.t.Fatalf("op %d: %s\nlast operations:\n  %s", md.op, fmt.Sprintf(format, args...), strings.Join(md.history, "\n  "))
}

func (md *model) note(format string, args ...any) {
	md.history = append(md.history, fmt.Sprintf("%d: ", md.op)+fmt.Sprintf(format, args...))
	if len(md.history) > 25 {
		md.history = md.history[1:]
	}
}

func (md *model) summary() string {
	var parts []string
	for k, v := range md.counts {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func (md *model) open() {
	md.t.Helper()
	m, err := Open(md.ctx, md.storeDir, Options{CacheBytes: 4 << 20})
	if err != nil {
		md.fatalf("open: %v", err)
	}
	// Chunk maps in segments of 7 entries, 3 of them cached: every image, restore, clone and
	// snapshot crosses segment boundaries and evicts, as a large disk's would.
	m.segChunks = 7
	m.maps = newMapCache(0, 7)
	m.maps.cap = 3 * 7
	md.m = m
	if md.db == nil {
		db, err := sql.Open("sqlite3", "file:"+filepath.Join(md.storeDir, "meta.db")+"?mode=ro&_busy_timeout=30000")
		if err != nil {
			md.fatalf("open metadata: %v", err)
		}
		md.db = db
	}
}

// --- disks ---

func (md *model) addDisk(name string, size int64) *mDisk {
	md.t.Helper()
	d := &mDisk{vol: name, path: filepath.Join(md.dir, name+".img"), data: make([]byte, size)}
	if err := os.WriteFile(d.path, nil, 0o600); err != nil {
		md.fatalf("%v", err)
	}
	if err := os.Truncate(d.path, size); err != nil {
		md.fatalf("%v", err)
	}
	if _, err := md.m.AddVolume(md.ctx, VolumeSpec{Name: name, Source: d.path, ChunkSize: mChunk}); err != nil {
		md.fatalf("add volume %s: %v", name, err)
	}
	md.disks = append(md.disks, d)
	return d
}

func (md *model) disk() *mDisk { return md.disks[md.rng.IntN(len(md.disks))] }

func (md *model) writeDisk(d *mDisk, off int64, p []byte) {
	md.t.Helper()
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		md.fatalf("%v", err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		md.fatalf("write %s: %v", d.path, err)
	}
	copy(d.data[off:], p)
}

// fill writes random bytes over [off, off+n) of d.
func (md *model) fill(d *mDisk, off, n int) {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(md.rng.Uint32())
	}
	// Some runs compress well.
	if md.rng.IntN(3) == 0 {
		for i := range p {
			p[i] &= 0x3
		}
	}
	md.writeDisk(d, int64(off), p)
}

// span picks a run of up to maxLen bytes inside a disk of size bytes, chunk-aligned half the time.
func (md *model) span(size, maxLen int) (off, n int) {
	if md.rng.IntN(2) == 0 {
		n = min(size, mChunk*(1+md.rng.IntN(max(1, maxLen/mChunk))))
		off = mChunk * md.rng.IntN(size/mChunk+1)
		if off >= size {
			off = size - n
		}
		return max(0, off), min(n, size-max(0, off))
	}
	n = 1 + md.rng.IntN(min(size, maxLen))
	off = md.rng.IntN(size - n + 1)
	return off, n
}

func (md *model) opWrite() {
	d := md.disk()
	maxLen := 4 * mChunk
	if md.rng.IntN(3) == 0 {
		maxLen = 100
	}
	off, n := md.span(len(d.data), maxLen)
	md.note("write %s [%d, +%d)", d.vol, off, n)
	md.fill(d, off, n)
}

func (md *model) opZero() {
	d := md.disk()
	off, n := md.span(len(d.data), 6*mChunk)
	if md.rng.IntN(2) == 0 {
		md.note("zero %s [%d, +%d) by writing", d.vol, off, n)
		md.writeDisk(d, int64(off), make([]byte, n))
		return
	}
	md.note("zero %s [%d, +%d) by punching", d.vol, off, n)
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		md.fatalf("%v", err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n)); err != nil {
		md.fatalf("punch: %v", err)
	}
	clear(d.data[off : off+n])
}

// opCopy copies a run of another disk or of a snapshot into a disk: duplicate chunks.
func (md *model) opCopy() {
	d := md.disk()
	var src []byte
	var from string
	if len(md.snaps) > 0 && md.rng.IntN(2) == 0 {
		s := md.snaps[md.rng.IntN(len(md.snaps))]
		src, from = s.data, s.ref()
	} else {
		o := md.disk()
		src, from = o.data, o.vol
	}
	soff, n := md.span(len(src), 4*mChunk)
	n = min(n, len(d.data))
	var doff int
	if soff%mChunk == 0 && md.rng.IntN(4) != 0 {
		doff = mChunk * md.rng.IntN((len(d.data)-n)/mChunk+1)
	} else {
		doff = md.rng.IntN(len(d.data) - n + 1)
	}
	md.note("copy %s [%d, +%d) to %s at %d", from, soff, n, d.vol, doff)
	md.writeDisk(d, int64(doff), append([]byte(nil), src[soff:soff+n]...))
}

func (md *model) randomSize() int64 {
	size := mMinSize + md.rng.Int64N(mMaxSize-mMinSize)
	if md.rng.IntN(2) == 0 {
		size = size / mChunk * mChunk
	}
	return size
}

func (md *model) resize(d *mDisk, size int64) {
	md.t.Helper()
	if err := os.Truncate(d.path, size); err != nil {
		md.fatalf("truncate: %v", err)
	}
	if int(size) <= len(d.data) {
		d.data = d.data[:size]
	} else {
		d.data = append(d.data, make([]byte, int(size)-len(d.data))...)
	}
}

func (md *model) opResize() {
	d := md.disk()
	size := md.randomSize()
	md.note("resize %s from %d to %d", d.vol, len(d.data), size)
	md.resize(d, size)
}

// --- snapshots ---

func sums(data []byte) map[chunkSum]int {
	out := map[chunkSum]int{}
	for off := 0; off < len(data); off += mChunk {
		c := data[off:min(off+mChunk, len(data))]
		if !allZero(c) {
			out[sha256.Sum256(c)] = len(c)
		}
	}
	return out
}

func (md *model) addSnap(s *mSnap) {
	s.sums = sums(s.data)
	for h, n := range s.sums {
		md.chunks[h]++
		md.sizes[h] = n
	}
	md.snaps = append(md.snaps, s)
}

// dropSnap removes a deleted snapshot from the model.
func (md *model) dropSnap(s *mSnap) {
	md.unlist(s)
	md.release(s)
}

// unlist removes s from the live snapshots; its chunks stay counted until release.
func (md *model) unlist(s *mSnap) {
	i := slices.Index(md.snaps, s)
	md.snaps = slices.Delete(md.snaps, i, i+1)
}

func (md *model) release(s *mSnap) {
	for h := range s.sums {
		if md.chunks[h]--; md.chunks[h] == 0 {
			delete(md.chunks, h)
			delete(md.sizes, h)
		}
	}
}

func (md *model) snapshot(d *mDisk) *mSnap {
	md.t.Helper()
	opts := CreateOptions{}
	if md.rng.IntN(3) > 0 {
		md.seq++
		opts.Name = fmt.Sprintf("s%d", md.seq)
	}
	before := md.stats()
	got, err := md.m.CreateSnapshot(md.ctx, d.vol, opts)
	if err != nil {
		md.fatalf("snapshot %s: %v", d.vol, err)
	}
	md.note("snapshot %s: %s (id %d, %d deltas)", d.vol, got.Ref(), got.ID, got.Chunks)
	if got.Size != int64(len(d.data)) || got.Volume != d.vol || got.Status != StatusReady {
		md.fatalf("snapshot %+v of a %d-byte disk", got, len(d.data))
	}
	if v, err := md.m.Volume(md.ctx, d.vol); err != nil || v.Size != int64(len(d.data)) || v.Chain != got.Chain {
		md.fatalf("volume %s after a snapshot: %+v, %v", d.vol, v, err)
	}
	s := &mSnap{id: got.ID, chain: got.Chain, name: got.Name, data: bytes.Clone(d.data), vol: d.vol}
	// The snapshot stores exactly its chunks that no live snapshot had.
	var fresh int64
	for h := range sums(s.data) {
		if md.chunks[h] == 0 {
			fresh++
		}
	}
	md.addSnap(s)
	if after := md.stats(); after.Chunks-before.Chunks != fresh {
		md.fatalf("snapshot stored %d chunks, %d of its chunks are new", after.Chunks-before.Chunks, fresh)
	}
	md.checkImage(s)
	return s
}

func (md *model) opSnapshot() { md.snapshot(md.disk()) }

// opSnapshotDeleting snapshots a disk while a snapshot of another chain is deleted just before the
// new snapshot's first batch commits: chunks the store held when they were hashed may be gone when
// they are referenced, and must be read from the disk again.
func (md *model) opSnapshotDeleting() {
	d := md.disk()
	v, err := md.m.Volume(md.ctx, d.vol)
	if err != nil {
		md.fatalf("volume %s: %v", d.vol, err)
	}
	var others []*mSnap
	for _, s := range md.snaps {
		if s.chain != v.Chain {
			others = append(others, s)
		}
	}
	if len(others) == 0 {
		md.snapshot(d)
		return
	}
	victim := others[md.rng.IntN(len(others))]
	deleted := false
	var delErr error
	md.m.beforeCommit = func() {
		if !deleted {
			deleted = true
			_, delErr = md.m.DeleteSnapshot(md.ctx, victim.ref())
		}
	}
	reread := md.m.counts.reread.Load()
	got, err := md.m.CreateSnapshot(md.ctx, d.vol, CreateOptions{})
	md.m.beforeCommit = nil
	if err != nil || delErr != nil {
		md.fatalf("snapshot %s while deleting %s: %v; delete: %v", d.vol, victim.ref(), err, delErr)
	}
	if !deleted { // nothing changed: no batch to commit
		if _, err := md.m.DeleteSnapshot(md.ctx, victim.ref()); err != nil {
			md.fatalf("delete %s: %v", victim.ref(), err)
		}
	}
	n := md.m.counts.reread.Load() - reread
	md.counts["chunks read again"] += int(n)
	md.note("snapshot %s while deleting %s: %s, %d chunks read again", d.vol, victim.ref(), got.Ref(), n)
	md.dropSnap(victim)
	s := &mSnap{id: got.ID, chain: got.Chain, name: got.Name, data: bytes.Clone(d.data), vol: d.vol}
	md.addSnap(s)
	md.checkImage(s)
}

func (md *model) deleteWeight() int {
	switch {
	case len(md.snaps) == 0:
		return 0
	case len(md.snaps) > mManySnaps:
		return 30
	default:
		return 8
	}
}

// nextInChain is the live snapshot after s in its chain, which a delete of s merges into.
func (md *model) nextInChain(s *mSnap) *mSnap {
	i := slices.Index(md.snaps, s)
	for _, o := range md.snaps[i+1:] {
		if o.chain == s.chain {
			return o
		}
	}
	return nil
}

func (md *model) opDelete() {
	s := md.snaps[md.rng.IntN(len(md.snaps))]
	next := md.nextInChain(s)
	md.note("delete %s", s.ref())
	info, err := md.m.Snapshot(md.ctx, s.ref())
	if err != nil {
		md.fatalf("describe %s: %v", s.ref(), err)
	}
	ds, err := md.m.DeleteSnapshot(md.ctx, s.ref())
	if err != nil {
		md.fatalf("delete %s: %v", s.ref(), err)
	}
	before := int64(len(md.chunks))
	md.dropSnap(s)
	if ds.Deferred || ds.FreedChunks != before-int64(len(md.chunks)) {
		md.fatalf("delete %s: %+v, but %d chunks went out of use", s.ref(), ds, before-int64(len(md.chunks)))
	}
	if ds.FreedBytes != info.UniqueBytes {
		md.fatalf("delete %s freed %d bytes, its unique bytes were %d", s.ref(), ds.FreedBytes, info.UniqueBytes)
	}
	if next != nil {
		md.checkImage(next)
	}
}

// opDeleteOpen deletes a snapshot an image reads, maybe snapshots its volume meanwhile, and closes.
func (md *model) opDeleteOpen() {
	s := md.snaps[md.rng.IntN(len(md.snaps))]
	md.note("delete %s while an image reads it", s.ref())
	im, err := md.m.OpenImage(md.ctx, s.ref())
	if err != nil {
		md.fatalf("open %s: %v", s.ref(), err)
	}
	ds, err := md.m.DeleteSnapshot(md.ctx, s.ref())
	if err != nil || !ds.Deferred {
		md.fatalf("delete %s with an open image: %+v, %v", s.ref(), ds, err)
	}
	before := md.stats()
	md.unlist(s) // its chunks stay until the image closes
	if _, err := md.m.Snapshot(md.ctx, s.ref()); !errors.Is(err, ErrNotFound) {
		md.fatalf("deleted %s still resolves: %v", s.ref(), err)
	}
	md.checkListed()
	if d := md.diskOf(s.vol); d != nil && md.rng.IntN(2) == 0 {
		md.snapshot(d)
	}
	md.compare(s.ref(), im, s.data)
	if st := md.stats(); st.Chunks < before.Chunks {
		md.fatalf("chunks freed while an image reads them: %d then %d", before.Chunks, st.Chunks)
	}
	if err := im.Close(); err != nil {
		md.fatalf("close %s: %v", s.ref(), err)
	}
	md.release(s)
}

func (md *model) diskOf(vol string) *mDisk {
	for _, d := range md.disks {
		if d.vol == vol {
			return d
		}
	}
	return nil
}

// --- clone and restore ---

func (md *model) opClone() {
	if len(md.disks) >= mMaxVols {
		md.opCloneFile()
		return
	}
	s := md.snaps[md.rng.IntN(len(md.snaps))]
	md.seq++
	name := fmt.Sprintf("c%d", md.seq)
	path := filepath.Join(md.dir, name+".img")
	md.note("clone %s as volume %s", s.ref(), name)
	before := md.stats()
	res, err := md.m.Clone(md.ctx, s.ref(), CloneOptions{To: path, Volume: name})
	if err != nil {
		md.fatalf("clone %s: %v", s.ref(), err)
	}
	if res.Volume == nil || res.Volume.Chain != name || res.Size != int64(len(s.data)) {
		md.fatalf("clone %s: %+v", s.ref(), res)
	}
	if st := md.stats(); st != before {
		md.fatalf("clone stored data: %+v then %+v", before, st)
	}
	md.checkFile(path, s.data)
	d := &mDisk{vol: name, path: path, data: bytes.Clone(s.data)}
	md.disks = append(md.disks, d)
	info, err := md.m.Snapshot(md.ctx, name+"/"+s.name)
	if err != nil || info.Origin != s.id {
		md.fatalf("clone base %s/%s: %+v, %v", name, s.name, info, err)
	}
	base := &mSnap{id: info.ID, chain: name, name: s.name, data: bytes.Clone(s.data), vol: name, clone: true}
	md.addSnap(base)
	md.checkImage(base)
	// Its first own snapshot, of the unchanged clone, stores nothing.
	if md.rng.IntN(2) == 0 {
		got := md.snapshot(d)
		info, _ := md.m.Snapshot(md.ctx, got.ref())
		if info.Chunks != 0 {
			md.fatalf("snapshot of an unchanged clone records %d deltas", info.Chunks)
		}
	}
}

func (md *model) opCloneFile() {
	s := md.snaps[md.rng.IntN(len(md.snaps))]
	path := filepath.Join(md.dir, "clone-file.img")
	md.note("clone %s to a file", s.ref())
	res, err := md.m.Clone(md.ctx, s.ref(), CloneOptions{To: path})
	if err != nil || res.Volume != nil || res.Size != int64(len(s.data)) {
		md.fatalf("clone %s to a file: %+v, %v", s.ref(), res, err)
	}
	md.checkFile(path, s.data)
	os.Remove(path)
}

func (md *model) opRestore() {
	s := md.snaps[md.rng.IntN(len(md.snaps))]
	d := md.disk()
	opts := RestoreOptions{To: d.path}
	if d.vol == s.vol && md.rng.IntN(2) == 0 {
		if _, dead := md.deadVol[s.chain]; !dead {
			opts.To = "" // the chain's own disk
		}
	}
	md.note("restore %s to %s (size %d, snapshot %d)", s.ref(), d.vol, len(d.data), len(s.data))
	if len(d.data) < len(s.data) {
		if _, err := md.m.Restore(md.ctx, s.ref(), opts); !errors.Is(err, ErrInvalid) {
			md.fatalf("restore %s to smaller %s: %v, want ErrInvalid", s.ref(), d.vol, err)
		}
		md.checkFile(d.path, d.data)
		md.resize(d, int64(len(s.data)))
	}
	// Chunks that differ, counted on the model.
	var differ int64
	for off := 0; off < len(s.data); off += mChunk {
		end := min(off+mChunk, len(s.data))
		if !bytes.Equal(s.data[off:end], d.data[off:end]) {
			differ++
		}
	}
	rs, err := md.m.Restore(md.ctx, s.ref(), opts)
	if err != nil {
		md.fatalf("restore %s to %s: %v", s.ref(), d.vol, err)
	}
	if rs.ChunksWritten != differ || rs.ChunksWritten+rs.ChunksSkipped != chunkCount(int64(len(s.data)), mChunk) ||
		rs.Target != d.path {
		md.fatalf("restore %s to %s: %+v, want %d chunks written", s.ref(), d.vol, rs, differ)
	}
	d.data = bytes.Clone(s.data)
	md.checkFile(d.path, d.data)
}

func (md *model) opRestoreFile() {
	s := md.snaps[md.rng.IntN(len(md.snaps))]
	path := filepath.Join(md.dir, "restore-file.img")
	md.note("restore %s to a new file", s.ref())
	if _, err := md.m.Restore(md.ctx, s.ref(), RestoreOptions{To: path}); err != nil {
		md.fatalf("restore %s to a new file: %v", s.ref(), err)
	}
	md.checkFile(path, s.data)
	os.Remove(path)
}

// --- maintenance ---

func (md *model) opVerify() {
	var refs []string
	read := map[chunkSum]bool{} // the distinct chunks the snapshots refs read
	if len(md.snaps) > 0 && md.rng.IntN(3) == 0 {
		for range 2 {
			s := md.snaps[md.rng.IntN(len(md.snaps))]
			refs = append(refs, s.ref())
			for h := range s.sums {
				read[h] = true
			}
		}
	}
	md.note("verify %q", refs)
	rep, err := md.m.Verify(md.ctx, refs, nil)
	if err != nil {
		md.fatalf("verify: %v", err)
	}
	if len(rep.Faults) > 0 {
		md.fatalf("verify found %+v", rep.Faults)
	}
	if refs == nil && rep.Chunks != int64(len(md.chunks)) {
		md.fatalf("verify read %d chunks, the store should hold %d", rep.Chunks, len(md.chunks))
	}
	if refs != nil && rep.Chunks != int64(len(read)) {
		md.fatalf("verify %q read %d chunks, those snapshots read %d", refs, rep.Chunks, len(read))
	}
}

func (md *model) opGC() {
	md.note("gc")
	st, err := md.m.GC(md.ctx)
	if err != nil {
		md.fatalf("gc: %v", err)
	}
	if st != (GCStats{}) {
		md.fatalf("gc found something to do: %+v", st)
	}
}

func (md *model) opReopen() {
	md.note("reopen")
	if err := md.m.Close(); err != nil {
		md.fatalf("close: %v", err)
	}
	md.m = nil
	md.open()
}

func (md *model) removeWeight() int {
	if len(md.disks) >= 3 && len(md.disks[len(md.disks)-1].vol) > 0 && md.disks[len(md.disks)-1].vol[0] == 'c' {
		return 1
	}
	return 0
}

// opRemoveVolume forgets the newest clone volume; its chain and snapshots stay.
func (md *model) opRemoveVolume() {
	d := md.disks[len(md.disks)-1]
	md.note("remove volume %s", d.vol)
	if err := md.m.RemoveVolume(md.ctx, d.vol); err != nil {
		md.fatalf("remove volume %s: %v", d.vol, err)
	}
	md.disks = md.disks[:len(md.disks)-1]
	md.deadVol[d.vol] = d.path
	os.Remove(d.path)
	// The chain stays with its snapshots; a chain left without any goes with its volume.
	c, err := md.m.Chain(md.ctx, d.vol)
	switch {
	case err == nil && c.Volume == "" && c.Snapshots > 0:
	case errors.Is(err, ErrNotFound) && !slices.ContainsFunc(md.snaps, func(s *mSnap) bool { return s.chain == d.vol }):
	default:
		md.fatalf("chain of a removed volume: %+v, %v", c, err)
	}
	if _, err := md.m.Volume(md.ctx, d.vol); !errors.Is(err, ErrNotFound) {
		md.fatalf("removed volume: %v", err)
	}
}

// opCancel cancels a snapshot from its first progress report: nothing of it may stay.
func (md *model) opCancel() {
	d := md.disk()
	md.note("cancelled snapshot of %s", d.vol)
	ctx, cancel := context.WithCancel(md.ctx)
	defer cancel()
	_, err := md.m.CreateSnapshot(ctx, d.vol, CreateOptions{Progress: func(done, total int64) { cancel() }})
	if !errors.Is(err, context.Canceled) {
		md.fatalf("cancelled snapshot: %v", err)
	}
	md.checkListed()
}

// opShrinkDuring shrinks the disk from the snapshot's first progress report: the snapshot fails.
func (md *model) opShrinkDuring() {
	d := md.disk()
	if len(d.data) <= 1<<20 {
		md.resize(d, 2<<20) // so that the disk is read in more than one block
	}
	size := int64(md.rng.IntN(len(d.data) - 1))
	md.note("snapshot of %s shrinking to %d", d.vol, size)
	_, err := md.m.CreateSnapshot(md.ctx, d.vol, CreateOptions{Progress: func(done, total int64) {
		if done < total {
			os.Truncate(d.path, size)
		}
	}})
	if err == nil || !strings.Contains(err.Error(), "shrank") {
		md.fatalf("snapshot of a shrinking disk: %v", err)
	}
	md.resize(d, size)
	md.checkListed()
}

// --- checks ---

func (md *model) stats() store.StoreStats {
	md.t.Helper()
	var st store.StoreStats
	err := md.m.Store().View(md.ctx, func(tx *store.Tx) (err error) { st, err = tx.Stats(); return err })
	if err != nil {
		md.fatalf("stats: %v", err)
	}
	return st
}

// checkStore compares what the store holds with what the live snapshots reference.
func (md *model) checkStore() {
	md.t.Helper()
	st := md.stats()
	var raw int64
	for _, n := range md.sizes {
		raw += int64(n)
	}
	if st.Chunks != int64(len(md.chunks)) || st.RawBytes != raw {
		md.fatalf("store holds %d chunks of %d bytes, the live snapshots reference %d of %d bytes",
			st.Chunks, st.RawBytes, len(md.chunks), raw)
	}
	var live, size sql.NullInt64
	if err := md.db.QueryRow(`SELECT SUM(live_bytes), SUM(size) FROM packs`).Scan(&live, &size); err != nil {
		md.fatalf("pack live bytes: %v", err)
	}
	if live.Int64 != st.StoredBytes {
		md.fatalf("packs hold %d live bytes, chunks %d", live.Int64, st.StoredBytes)
	}
	// Freed records are punched: the pack files hold about the live records, no more.
	alloc := md.packAllocated()
	if alloc < st.StoredBytes || alloc > st.StoredBytes+st.Packs*64<<10 {
		md.fatalf("pack files take %d bytes on disk for %d bytes of live records", alloc, st.StoredBytes)
	}
	md.checkListed()
}

func (md *model) packAllocated() int64 {
	files, _ := filepath.Glob(filepath.Join(md.storeDir, "packs", "*.pack"))
	var n int64
	for _, f := range files {
		var st unix.Stat_t
		if err := unix.Stat(f, &st); err == nil {
			n += st.Blocks * 512
		}
	}
	return n
}

// checkListed compares the listed snapshots with the live ones.
func (md *model) checkListed() {
	md.t.Helper()
	list, err := md.m.Snapshots(md.ctx, "")
	if err != nil {
		md.fatalf("list: %v", err)
	}
	var got, want []string
	for _, s := range list {
		got = append(got, fmt.Sprintf("%d:%s/%s:%d data %d", s.ID, s.Chain, s.Name, s.Size, s.DataBytes))
	}
	for _, s := range md.snaps {
		want = append(want, fmt.Sprintf("%d:%s:%d data %d", s.id, s.ref(), len(s.data), dataBytes(s.data)))
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		md.fatalf("snapshots listed:\n  %q\nlive:\n  %q", got, want)
	}
}

// dataBytes is what a snapshot of a disk holding data reports as its data: the bytes of its chunks
// that are not all zeros.
func dataBytes(data []byte) int64 {
	var n int64
	for off := 0; off < len(data); off += mChunk {
		chunk := data[off:min(off+mChunk, len(data))]
		if slices.ContainsFunc(chunk, func(b byte) bool { return b != 0 }) {
			n += int64(len(chunk))
		}
	}
	return n
}

func (md *model) checkImage(s *mSnap) {
	md.t.Helper()
	im, err := md.m.OpenImage(md.ctx, s.ref())
	if err != nil {
		md.fatalf("open %s: %v", s.ref(), err)
	}
	defer im.Close()
	md.compare(s.ref(), im, s.data)
}

// compare reads the image in runs of odd sizes and compares with want.
func (md *model) compare(ref string, im *Image, want []byte) {
	md.t.Helper()
	if im.Size() != int64(len(want)) {
		md.fatalf("%s is %d bytes, want %d", ref, im.Size(), len(want))
	}
	buf := make([]byte, 3*mChunk+17)
	for off := 0; off < len(want); {
		n := 1 + md.rng.IntN(len(buf))
		got, err := im.ReadAt(buf[:n], int64(off))
		if err != nil && !(errors.Is(err, io.EOF) && off+got == len(want)) {
			md.fatalf("read %s at %d: %v", ref, off, err)
		}
		if got != min(n, len(want)-off) {
			md.fatalf("read %s at %d: %d bytes of %d", ref, off, got, n)
		}
		if !bytes.Equal(buf[:got], want[off:off+got]) {
			md.fatalf("%s differs from the model in [%d, %d)", ref, off, off+got)
		}
		off += got
	}
}

func (md *model) checkFile(path string, want []byte) {
	md.t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		md.fatalf("%v", err)
	}
	if !bytes.Equal(got, want) {
		md.fatalf("%s (%d bytes) differs from the model (%d bytes)", path, len(got), len(want))
	}
}

func (md *model) checkAll() {
	md.t.Helper()
	for _, s := range md.snaps {
		md.checkImage(s)
	}
	for _, d := range md.disks {
		md.checkFile(d.path, d.data)
	}
	md.checkChains()
}

// checkChains compares each chain's description with its live snapshots: their number, the newest
// one's size and the stored bytes of the distinct chunks they read.
func (md *model) checkChains() {
	md.t.Helper()
	chains, err := md.m.Chains(md.ctx)
	if err != nil {
		md.fatalf("chains: %v", err)
	}
	for _, c := range chains {
		var n, size, stored int64
		seen := map[store.Hash]bool{}
		for _, s := range md.snaps {
			if s.chain != c.Name {
				continue
			}
			n++
			size = int64(len(s.data))
			for off := 0; off < len(s.data); off += mChunk {
				chunk := s.data[off:min(off+mChunk, len(s.data))]
				h := store.Sum(chunk)
				if allZero(chunk) || seen[h] {
					continue
				}
				seen[h] = true
				var st int64
				if err := md.db.QueryRow(`SELECT stored_size FROM chunks WHERE hash = ?`, h[:]).Scan(&st); err != nil {
					md.fatalf("chunk %s of chain %s: %v", h, c.Name, err)
				}
				stored += st
			}
		}
		if c.Snapshots != n || c.Size != size || c.StoredBytes != stored {
			md.fatalf("chain %+v: want %d snapshots, size %d, %d stored bytes", c, n, size, stored)
		}
	}
}

// deleteEverything deletes every snapshot, in random order, and checks that the packs are left with
// no allocated data.
func (md *model) deleteEverything() {
	md.t.Helper()
	allocBefore := md.packAllocated()
	for len(md.snaps) > 0 {
		md.op++
		md.opDelete()
		md.checkStore()
	}
	st := md.stats()
	if st.Chunks != 0 || st.StoredBytes != 0 || st.RawBytes != 0 {
		md.fatalf("after deleting every snapshot the store holds %+v", st)
	}
	alloc := md.packAllocated()
	md.t.Logf("pack files took %d bytes on disk, %d after deleting every snapshot (%d packs)", allocBefore, alloc, st.Packs)
	if alloc > 0 {
		md.fatalf("pack files still take %d bytes with no chunk stored", alloc)
	}
	md.opVerify()
}
