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
// The disks are small, so the operations shrink what makes a large disk different: half the
// snapshots are committed in batches of one or two blocks' records (CreateOptions.batchBufs), some
// of them cancelled after batches committed; chunk maps are loaded in segments of 7 entries; one
// disk and its clones use 64 KiB chunks, the others 16 KiB. Up to mMaxPending deletes wait for an
// image at a time, while their neighbours are deleted, the store is reopened or they are deleted
// again.
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
	mChunk      = MinChunkSize     // 16 KiB, most disks' chunk size
	mBigChunk   = DefaultChunkSize // 64 KiB, one disk's
	mMinSize    = 256 << 10
	mMaxSize    = 3 << 20
	mMaxVols    = 4  // volumes with a disk at once
	mManySnaps  = 14 // above this, deletes become likelier
	mMaxPending = 3  // deletes waiting for an image at most
)

type chunkSum [32]byte

// mDisk is a registered volume's disk file and what it holds.
type mDisk struct {
	vol  string
	path string
	data []byte
	cs   int // its chain's chunk size
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
	cs    int              // its chain's chunk size
	ord   int              // order of creation: within a chain, the order of the snapshots
}

// mPending is a snapshot whose delete waits for the image that reads it.
type mPending struct {
	s  *mSnap
	im *Image
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
	pending []*mPending       // deleted snapshots an image still reads, their chunks still counted
	ord     int               // the last mSnap.ord given
	chunks  map[chunkSum]int  // distinct chunks of live and pending snapshots → how many have them
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
	// Three disks: sizes a multiple of the chunk size and not, partly sparse; the last one (and its
	// clones) in chunks of 64 KiB.
	for i, size := range []int64{2<<20 + 1234, 1 << 20, 3<<20 - 5000} {
		cs := mChunk
		if i == 2 {
			cs = mBigChunk
		}
		d := md.addDisk(fmt.Sprintf("v%d", i), size, cs)
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
		{"delete-open", func() int { return min(3, len(md.snaps)) }, md.opDeleteOpen},
		{"delete-beside-pending", func() int { return min(3, len(md.pending)*len(md.snaps)) }, md.opDeleteBesidePending},
		{"close-pending", func() int { return 2 * len(md.pending) }, md.opClosePending},
		{"delete-again", func() int { return min(1, len(md.snaps)+len(md.pending)) }, md.opDeleteAgain},
		{"clone", func() int { return min(3, len(md.snaps)) }, md.opClone},
		{"clone-file", func() int { return min(1, len(md.snaps)) }, md.opCloneFile},
		{"restore", func() int { return min(4, len(md.snaps)) }, md.opRestore},
		{"restore-file", func() int { return min(1, len(md.snaps)) }, md.opRestoreFile},
		{"verify", func() int { return 2 }, md.opVerify},
		{"gc", func() int { return 1 }, md.opGC},
		{"reopen", func() int { return 1 }, md.opReopen},
		{"remove-volume", func() int { return md.removeWeight() }, md.opRemoveVolume},
		{"cancel", func() int { return 1 }, md.opCancel},
		{"cancel-late", func() int { return 1 }, md.opCancelLate},
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

func (md *model) addDisk(name string, size int64, cs int) *mDisk {
	md.t.Helper()
	d := &mDisk{vol: name, path: filepath.Join(md.dir, name+".img"), data: make([]byte, size), cs: cs}
	if err := os.WriteFile(d.path, nil, 0o600); err != nil {
		md.fatalf("%v", err)
	}
	if err := os.Truncate(d.path, size); err != nil {
		md.fatalf("%v", err)
	}
	if _, err := md.m.AddVolume(md.ctx, VolumeSpec{Name: name, Source: d.path, ChunkSize: int64(cs)}); err != nil {
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

// span picks a run of up to maxLen bytes inside a disk of size bytes, aligned to chunks of cs
// bytes half the time.
func (md *model) span(size, maxLen, cs int) (off, n int) {
	if md.rng.IntN(2) == 0 {
		n = min(size, cs*(1+md.rng.IntN(max(1, maxLen/cs))))
		off = cs * md.rng.IntN(size/cs+1)
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
	off, n := md.span(len(d.data), maxLen, d.cs)
	md.note("write %s [%d, +%d)", d.vol, off, n)
	md.fill(d, off, n)
}

func (md *model) opZero() {
	d := md.disk()
	off, n := md.span(len(d.data), 6*mChunk, d.cs)
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
	soff, n := md.span(len(src), 4*mChunk, d.cs)
	n = min(n, len(d.data))
	var doff int
	if soff%d.cs == 0 && md.rng.IntN(4) != 0 {
		doff = d.cs * md.rng.IntN((len(d.data)-n)/d.cs+1)
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

func sums(data []byte, cs int) map[chunkSum]int {
	out := map[chunkSum]int{}
	for off := 0; off < len(data); off += cs {
		c := data[off:min(off+cs, len(data))]
		if !allZero(c) {
			out[sha256.Sum256(c)] = len(c)
		}
	}
	return out
}

func (md *model) addSnap(s *mSnap) {
	md.ord++
	s.ord = md.ord
	s.sums = sums(s.data, s.cs)
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

// smallBatches returns, half the time, a CreateOptions.batchBufs that commits a snapshot in batches
// of one or two blocks' new records, as a disk far larger than the model's is committed; 0 (one
// batch for the whole disk) otherwise.
func (md *model) smallBatches() int {
	if md.rng.IntN(2) == 0 {
		return 1 + md.rng.IntN(2)
	}
	return 0
}

// create snapshots d with opts, running hook (if not nil) before each batch commits, with the
// batch's number from 1. It returns how many batches came to commit.
func (md *model) create(ctx context.Context, d *mDisk, opts CreateOptions, hook func(batch int)) (Snapshot, int, error) {
	batches := 0
	md.m.beforeCommit = func() {
		batches++
		if hook != nil {
			hook(batches)
		}
	}
	got, err := md.m.CreateSnapshot(ctx, d.vol, opts)
	md.m.beforeCommit = nil
	md.counts["batches"] += batches
	if batches > 1 {
		md.counts["snapshots of several batches"]++
	}
	return got, batches, err
}

func (md *model) snapshot(d *mDisk) *mSnap {
	md.t.Helper()
	opts := CreateOptions{batchBufs: md.smallBatches()}
	if md.rng.IntN(3) > 0 {
		md.seq++
		opts.Name = fmt.Sprintf("s%d", md.seq)
	}
	before := md.stats()
	got, batches, err := md.create(md.ctx, d, opts, nil)
	if err != nil {
		md.fatalf("snapshot %s: %v", d.vol, err)
	}
	md.note("snapshot %s: %s (id %d, %d deltas, %d batches of up to %d blocks)", d.vol, got.Ref(), got.ID, got.Chunks, batches, opts.batchBufs)
	if got.Size != int64(len(d.data)) || got.Volume != d.vol || got.Status != StatusReady || got.ChunkSize != int64(d.cs) {
		md.fatalf("snapshot %+v of a %d-byte disk", got, len(d.data))
	}
	if v, err := md.m.Volume(md.ctx, d.vol); err != nil || v.Size != int64(len(d.data)) || v.Chain != got.Chain {
		md.fatalf("volume %s after a snapshot: %+v, %v", d.vol, v, err)
	}
	s := &mSnap{id: got.ID, chain: got.Chain, name: got.Name, data: bytes.Clone(d.data), vol: d.vol, cs: d.cs}
	// The snapshot stores exactly its chunks that no live snapshot had.
	var fresh int64
	for h := range sums(s.data, s.cs) {
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
// they are referenced, and must be read from the disk again, exactly those that only the deleted
// snapshot had. When the snapshot is one batch, the disk has been read whole by then; two thirds of
// those times the disk changes after the delete, in some of the chunks to be read again, which the
// snapshot takes as they are now, and in one other chunk, which it keeps as it read it.
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
	if md.rng.IntN(3) > 0 {
		// Chunks only the victim has, copied into the disk first, are to be read again.
		var with []*mSnap
		for _, s := range others {
			if s.cs == d.cs && md.hasOnly(s) {
				with = append(with, s)
			}
		}
		if len(with) > 0 {
			victim = with[md.rng.IntN(len(with))]
			md.copyOnly(victim, d)
		}
	}
	opts := CreateOptions{batchBufs: md.smallBatches()}
	change := opts.batchBufs == 0 && md.rng.IntN(3) > 0
	read := bytes.Clone(d.data) // what the snapshot reads
	var again []int             // the offsets of the chunks only the victim has
	for off := 0; off < len(read); off += d.cs {
		c := read[off:min(off+d.cs, len(read))]
		if h := sha256.Sum256(c); !allZero(c) && md.chunks[h] == 1 && victim.sums[h] != 0 {
			again = append(again, off)
		}
	}
	type write struct {
		off int
		p   []byte
	}
	var writes []write // made to the disk after the delete
	deleted := false
	var delErr, writeErr error
	hook := func(batch int) {
		if batch != 1 {
			return
		}
		deleted = true
		if _, delErr = md.m.DeleteSnapshot(md.ctx, victim.ref()); delErr != nil || !change {
			return
		}
		var offs []int
		for _, off := range again {
			if md.rng.IntN(3) > 0 {
				offs = append(offs, off)
			}
		}
		if len(offs) == 0 && len(again) > 0 {
			offs = append(offs, again[md.rng.IntN(len(again))])
		}
		if other := d.cs * md.rng.IntN((len(read)+d.cs-1)/d.cs); !slices.Contains(again, other) {
			offs = append(offs, other)
		}
		f, err := os.OpenFile(d.path, os.O_RDWR, 0)
		if err != nil {
			writeErr = err
			return
		}
		defer f.Close()
		for _, off := range offs {
			n := min(d.cs, len(read)-off)
			at := md.rng.IntN(n)
			p := make([]byte, 1+md.rng.IntN(n-at))
			for i := range p {
				p[i] = byte(md.rng.Uint32()) | 1
			}
			if _, writeErr = f.WriteAt(p, int64(off+at)); writeErr != nil {
				return
			}
			writes = append(writes, write{off + at, p})
		}
	}
	reread := md.m.counts.reread.Load()
	got, batches, err := md.create(md.ctx, d, opts, hook)
	if err != nil || delErr != nil || writeErr != nil {
		md.fatalf("snapshot %s while deleting %s: %v; delete: %v; writing the disk: %v", d.vol, victim.ref(), err, delErr, writeErr)
	}
	if !deleted { // nothing changed: no batch to commit
		if _, err := md.m.DeleteSnapshot(md.ctx, victim.ref()); err != nil {
			md.fatalf("delete %s: %v", victim.ref(), err)
		}
	}
	n := md.m.counts.reread.Load() - reread
	md.counts["chunks read again"] += int(n)
	md.note("snapshot %s while deleting %s: %s, %d batches, %d of %d chunks read again, %d writes meanwhile",
		d.vol, victim.ref(), got.Ref(), batches, n, len(again), len(writes))
	// Hashed before the delete in one batch, every chunk only the victim had is read again; in
	// several, those hashed after the delete are stored as new.
	if n > int64(len(again)) || opts.batchBufs == 0 && n != int64(len(again)) {
		md.fatalf("%d chunks read again, %d chunks of the disk were only %s's", n, len(again), victim.ref())
	}
	md.dropSnap(victim)
	for _, w := range writes {
		copy(d.data[w.off:], w.p)
		if i := w.off / d.cs * d.cs; slices.Contains(again, i) {
			copy(read[w.off:], w.p)
			md.counts["chunks changed before being read again"]++
		}
	}
	s := &mSnap{id: got.ID, chain: got.Chain, name: got.Name, data: read, vol: d.vol, cs: d.cs}
	md.addSnap(s)
	md.checkImage(s)
	if n > 0 {
		// Reading an image checks a chunk against its record's checksum only: a chunk read again
		// must also be stored under the hash of what was read.
		md.verifySnaps(s)
	}
}

// hasOnly reports whether s has a whole chunk no other snapshot has.
func (md *model) hasOnly(s *mSnap) bool {
	for h, n := range s.sums {
		if n == s.cs && md.chunks[h] == 1 {
			return true
		}
	}
	return false
}

// copyOnly copies up to three whole chunks that only s has into d, at chunk boundaries, if their
// chunk sizes are the same.
func (md *model) copyOnly(s *mSnap, d *mDisk) {
	if s.cs != d.cs {
		return
	}
	var only []int
	for off := 0; off+s.cs <= len(s.data); off += s.cs {
		if c := s.data[off : off+s.cs]; !allZero(c) && md.chunks[sha256.Sum256(c)] == 1 {
			only = append(only, off)
		}
	}
	for range min(len(only), 1+md.rng.IntN(3)) {
		from, to := only[md.rng.IntN(len(only))], d.cs*md.rng.IntN(len(d.data)/d.cs)
		md.note("copy %s [%d, +%d) to %s at %d", s.ref(), from, s.cs, d.vol, to)
		md.writeDisk(d, int64(to), bytes.Clone(s.data[from:from+s.cs]))
	}
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

// liveAfter is the live snapshot after s in its chain, which a delete of s merges into (unless a
// snapshot whose delete is pending comes between); nil if none.
func (md *model) liveAfter(s *mSnap) *mSnap {
	for _, o := range md.snaps {
		if o.chain == s.chain && o.ord > s.ord {
			return o
		}
	}
	return nil
}

// liveBefore is the live snapshot before s in its chain, nil if none.
func (md *model) liveBefore(s *mSnap) *mSnap {
	var b *mSnap
	for _, o := range md.snaps {
		if o.chain == s.chain && o.ord < s.ord {
			b = o
		}
	}
	return b
}

// chainHolds reports whether a chain has a live snapshot, or one whose delete is pending.
func (md *model) chainHolds(chain string) bool {
	return slices.ContainsFunc(md.snaps, func(s *mSnap) bool { return s.chain == chain }) ||
		slices.ContainsFunc(md.pending, func(p *mPending) bool { return p.s.chain == chain })
}

func (md *model) opDelete() { md.deleteSnap(md.snaps[md.rng.IntN(len(md.snaps))]) }

// deleteSnap deletes s, which no image reads: it goes at once, freeing exactly the chunks no other
// snapshot has (live, or pending its delete), which are the bytes it was said to hold alone.
func (md *model) deleteSnap(s *mSnap) {
	next := md.liveAfter(s)
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

// besidePending returns a live snapshot just before or after one whose delete is pending, in its
// chain; nil if there is none.
func (md *model) besidePending() *mSnap {
	var near []*mSnap
	for _, p := range md.pending {
		if b := md.liveBefore(p.s); b != nil {
			near = append(near, b)
		}
		if a := md.liveAfter(p.s); a != nil {
			near = append(near, a)
		}
	}
	if len(near) == 0 {
		return nil
	}
	return near[md.rng.IntN(len(near))]
}

// opDeleteBesidePending deletes a neighbour of a snapshot whose delete is pending: one before merges
// into the pending one, which the delete's freed bytes must reckon with.
func (md *model) opDeleteBesidePending() {
	s := md.besidePending()
	if s == nil {
		s = md.snaps[md.rng.IntN(len(md.snaps))]
	} else {
		md.counts["deletes beside a pending one"]++
	}
	md.deleteSnap(s)
}

// opDeleteOpen deletes a snapshot an image reads, maybe snapshots its volume meanwhile, and closes
// the image, or half the time leaves it open: the delete stays pending while other operations run,
// up to mMaxPending at a time. With deletes pending, it picks a neighbour of one half the time.
func (md *model) opDeleteOpen() {
	s := md.snaps[md.rng.IntN(len(md.snaps))]
	if len(md.pending) > 0 && md.rng.IntN(2) == 0 {
		if b := md.besidePending(); b != nil {
			s = b
			md.counts["deletes beside a pending one"]++
		}
	}
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
	p := &mPending{s: s, im: im}
	if len(md.pending) < mMaxPending && md.rng.IntN(2) == 0 {
		md.note("the image of %s stays open", s.ref())
		md.counts["deletes left pending"]++
		md.pending = append(md.pending, p)
		return
	}
	md.closePending(p)
}

// opClosePending closes the image of a snapshot whose delete is pending, which finishes the delete.
// The image still reads the snapshot as it was, whatever was deleted or created beside it.
func (md *model) opClosePending() {
	i := md.rng.IntN(len(md.pending))
	p := md.pending[i]
	md.pending = slices.Delete(md.pending, i, i+1)
	md.note("close the image of deleted %s", p.s.ref())
	if md.rng.IntN(2) == 0 {
		md.compare(p.s.ref(), p.im, p.s.data)
	}
	md.closePending(p)
}

// closePending closes p's image, which finishes the delete: the chunks no other snapshot has go.
func (md *model) closePending(p *mPending) {
	md.t.Helper()
	before, n := md.stats(), len(md.chunks)
	if err := p.im.Close(); err != nil {
		md.fatalf("close %s: %v", p.s.ref(), err)
	}
	md.release(p.s)
	if st := md.stats(); before.Chunks-st.Chunks != int64(n-len(md.chunks)) {
		md.fatalf("closing the image of deleted %s freed %d chunks, %d went out of use", p.s.ref(), before.Chunks-st.Chunks, n-len(md.chunks))
	}
	md.pendingGone(p.s)
}

// pendingGone checks what the end of s's pending delete leaves: the live snapshot after it in its
// chain, which took its changes, reads as before, and a chain whose volume was removed goes with
// its last snapshot.
func (md *model) pendingGone(s *mSnap) {
	md.t.Helper()
	if next := md.liveAfter(s); next != nil {
		md.checkImage(next)
	}
	if _, dead := md.deadVol[s.chain]; dead && !md.chainHolds(s.chain) {
		if c, err := md.m.Chain(md.ctx, s.chain); !errors.Is(err, ErrNotFound) {
			md.fatalf("chain of a removed volume, its last snapshot deleted: %+v, %v", c, err)
		}
	}
}

// opDeleteAgain deletes, by name and by id, a snapshot already deleted: one whose delete is pending
// (its image open), or one it deletes first. Neither is found, and nothing changes.
func (md *model) opDeleteAgain() {
	var s *mSnap
	if len(md.pending) > 0 && (len(md.snaps) == 0 || md.rng.IntN(2) == 0) {
		s = md.pending[md.rng.IntN(len(md.pending))].s
	} else {
		s = md.snaps[md.rng.IntN(len(md.snaps))]
		md.deleteSnap(s)
	}
	md.note("delete %s again", s.ref())
	before := md.stats()
	for _, ref := range []string{s.ref(), fmt.Sprint(s.id)} {
		if ds, err := md.m.DeleteSnapshot(md.ctx, ref); !errors.Is(err, ErrNotFound) {
			md.fatalf("delete %s again: %+v, %v", ref, ds, err)
		}
	}
	if st := md.stats(); st != before {
		md.fatalf("deleting %s again changed the store: %+v then %+v", s.ref(), before, st)
	}
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
	d := &mDisk{vol: name, path: path, data: bytes.Clone(s.data), cs: s.cs}
	md.disks = append(md.disks, d)
	info, err := md.m.Snapshot(md.ctx, name+"/"+s.name)
	if err != nil || info.Origin != s.id {
		md.fatalf("clone base %s/%s: %+v, %v", name, s.name, info, err)
	}
	base := &mSnap{id: info.ID, chain: name, name: s.name, data: bytes.Clone(s.data), vol: name, clone: true, cs: s.cs}
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
		// The restore grows the image file to the snapshot's size first: zeros, which it need
		// not write where the snapshot has zeros too.
		d.data = append(d.data, make([]byte, len(s.data)-len(d.data))...)
	}
	// Chunks that differ, counted on the model.
	var differ int64
	for off := 0; off < len(s.data); off += s.cs {
		end := min(off+s.cs, len(s.data))
		if !bytes.Equal(s.data[off:end], d.data[off:end]) {
			differ++
		}
	}
	rs, err := md.m.Restore(md.ctx, s.ref(), opts)
	if err != nil {
		md.fatalf("restore %s to %s: %v", s.ref(), d.vol, err)
	}
	if rs.ChunksWritten != differ || rs.ChunksWritten+rs.ChunksSkipped != chunkCount(int64(len(s.data)), int64(s.cs)) ||
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
	var snaps []*mSnap
	if len(md.snaps) > 0 && md.rng.IntN(3) == 0 {
		for range 2 {
			snaps = append(snaps, md.snaps[md.rng.IntN(len(md.snaps))])
		}
	}
	md.verifySnaps(snaps...)
}

// verifySnaps verifies snaps, or the whole store if none: no faults, and exactly the distinct
// chunks they read (the store's) read.
func (md *model) verifySnaps(snaps ...*mSnap) {
	md.t.Helper()
	var refs []string
	read := map[chunkSum]bool{} // the distinct chunks the snapshots refs read
	for _, s := range snaps {
		refs = append(refs, s.ref())
		for h := range s.sums {
			read[h] = true
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

// opReopen closes the store and opens it again. The images of pending deletes are left open: they
// went with the manager that opened them, as with a process that exits, and the store finishes
// those deletes as it opens.
func (md *model) opReopen() {
	md.note("reopen, %d deletes pending", len(md.pending))
	if err := md.m.Close(); err != nil {
		md.fatalf("close: %v", err)
	}
	md.m = nil
	md.open()
	gone := md.pending
	md.pending = nil
	md.counts["deletes pending at a reopen"] += len(gone)
	for _, p := range gone {
		md.release(p.s)
	}
	md.checkStore()
	for _, p := range gone {
		md.pendingGone(p.s)
		if _, err := md.m.DeleteSnapshot(md.ctx, fmt.Sprint(p.s.id)); !errors.Is(err, ErrNotFound) {
			md.fatalf("delete %s, finished as the store opened: %v", p.s.ref(), err)
		}
	}
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
	// The chain stays with its snapshots, and those whose delete is pending; a chain left without
	// any goes with its volume.
	var live int64
	for _, s := range md.snaps {
		if s.chain == d.vol {
			live++
		}
	}
	c, err := md.m.Chain(md.ctx, d.vol)
	switch {
	case err == nil && c.Volume == "" && c.Snapshots == live && md.chainHolds(d.vol):
	case errors.Is(err, ErrNotFound) && !md.chainHolds(d.vol):
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
	opts := CreateOptions{Progress: func(done, total int64) { cancel() }, batchBufs: md.smallBatches()}
	if _, _, err := md.create(ctx, d, opts, nil); !errors.Is(err, context.Canceled) {
		md.fatalf("cancelled snapshot: %v", err)
	}
	md.checkListed()
}

// opCancelLate cancels a snapshot committed in batches of one block's records each, with new data
// in every block, just before its k-th batch commits (k ≥ 2): the batches before stored chunks,
// which must go with the snapshot, and nothing else may change.
func (md *model) opCancelLate() {
	d := md.disk()
	if len(d.data) <= 2*readBlock {
		size := 2*readBlock + 1 + md.rng.IntN(readBlock-1)
		md.note("resize %s from %d to %d", d.vol, len(d.data), size)
		md.resize(d, int64(size))
	}
	// A chunk of random bytes in each block: new to the store, so that each block is a batch.
	blocks := (len(d.data) + readBlock - 1) / readBlock
	for b := range blocks {
		length := min(readBlock, len(d.data)-b*readBlock)
		off := b*readBlock + d.cs*md.rng.IntN((length+d.cs-1)/d.cs)
		p := make([]byte, min(d.cs, len(d.data)-off))
		for i := range p {
			p[i] = byte(md.rng.Uint32())
		}
		md.note("write %s [%d, +%d)", d.vol, off, len(p))
		md.writeDisk(d, int64(off), p)
	}
	k := 2 + md.rng.IntN(blocks-1)
	md.note("snapshot of %s cancelled as its batch %d of %d is to commit", d.vol, k, blocks)
	v, err := md.m.Volume(md.ctx, d.vol)
	if err != nil {
		md.fatalf("volume %s: %v", d.vol, err)
	}
	before := md.stats()
	ctx, cancel := context.WithCancel(md.ctx)
	defer cancel()
	var mid store.StoreStats
	var midErr error
	_, batches, err := md.create(ctx, d, CreateOptions{batchBufs: 1}, func(batch int) {
		if batch == k {
			midErr = md.m.Store().View(md.ctx, func(tx *store.Tx) (err error) { mid, err = tx.Stats(); return err })
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || batches != k || midErr != nil {
		md.fatalf("snapshot cancelled before batch %d: %v after %d batches (%v)", k, err, batches, midErr)
	}
	if mid.Chunks <= before.Chunks {
		md.fatalf("%d batches committed no chunk: %+v then %+v", k-1, before, mid)
	}
	if st := md.stats(); st.Chunks != before.Chunks || st.StoredBytes != before.StoredBytes || st.RawBytes != before.RawBytes {
		md.fatalf("a cancelled snapshot left the store %+v, %+v before it (%+v as it was cancelled)", st, before, mid)
	}
	if after, err := md.m.Volume(md.ctx, d.vol); err != nil || after != v {
		md.fatalf("volume %s after a cancelled snapshot: %+v, %v; %+v before", d.vol, after, err, v)
	}
	md.checkListed()
	var newest *mSnap
	for _, s := range md.snaps {
		if s.chain == v.Chain {
			newest = s
		}
	}
	if newest != nil {
		md.checkImage(newest)
	}
}

// opShrinkDuring shrinks the disk from the snapshot's first progress report: the snapshot fails.
func (md *model) opShrinkDuring() {
	d := md.disk()
	if len(d.data) <= 1<<20 {
		md.resize(d, 2<<20) // so that the disk is read in more than one block
	}
	size := int64(md.rng.IntN(len(d.data) - 1))
	md.note("snapshot of %s shrinking to %d", d.vol, size)
	_, _, err := md.create(md.ctx, d, CreateOptions{batchBufs: md.smallBatches(), Progress: func(done, total int64) {
		if done < total {
			os.Truncate(d.path, size)
		}
	}}, nil)
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
		want = append(want, fmt.Sprintf("%d:%s:%d data %d", s.id, s.ref(), len(s.data), dataBytes(s.data, s.cs)))
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		md.fatalf("snapshots listed:\n  %q\nlive:\n  %q", got, want)
	}
}

// dataBytes is what a snapshot of a disk holding data reports as its data: the bytes of its chunks
// of cs bytes that are not all zeros.
func dataBytes(data []byte, cs int) int64 {
	var n int64
	for off := 0; off < len(data); off += cs {
		chunk := data[off:min(off+cs, len(data))]
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
	for _, p := range md.pending {
		md.compare(p.s.ref(), p.im, p.s.data)
	}
	for _, d := range md.disks {
		md.checkFile(d.path, d.data)
	}
	md.checkChains()
}

// checkChains compares each chain's description with its live snapshots: their number, the newest
// one's size and the stored bytes of the distinct chunks they read, and those whose delete is
// pending read.
func (md *model) checkChains() {
	md.t.Helper()
	chains, err := md.m.Chains(md.ctx)
	if err != nil {
		md.fatalf("chains: %v", err)
	}
	all := slices.Clone(md.snaps)
	for _, p := range md.pending {
		all = append(all, p.s)
	}
	for _, c := range chains {
		var n, size, stored int64
		seen := map[store.Hash]bool{}
		for _, s := range all {
			if s.chain != c.Name {
				continue
			}
			if slices.Contains(md.snaps, s) {
				n++
				size = int64(len(s.data))
			}
			for off := 0; off < len(s.data); off += s.cs {
				chunk := s.data[off:min(off+s.cs, len(s.data))]
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
	for len(md.pending) > 0 {
		md.op++
		md.opClosePending()
		md.checkStore()
	}
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
