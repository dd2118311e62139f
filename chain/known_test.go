package chain

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// copyDisk copies a volume's disk to a new file and registers that as volume name.
func (u *unit) copyDisk(from, name string) string {
	u.t.Helper()
	path := filepath.Join(u.dir, name+".img")
	if err := os.WriteFile(path, u.read(from), 0o600); err != nil {
		u.t.Fatal(err)
	}
	if _, err := u.m.AddVolume(u.ctx, VolumeSpec{Name: name, Source: path, ChunkSize: testChunk}); err != nil {
		u.t.Fatal(err)
	}
	return path
}

type createCounts struct{ encoded, reused, reread int64 }

func (u *unit) counts() createCounts {
	c := &u.m.counts
	return createCounts{c.encoded.Load(), c.reused.Load(), c.reread.Load()}
}

func (c createCounts) minus(d createCounts) createCounts {
	return createCounts{c.encoded - d.encoded, c.reused - d.reused, c.reread - d.reread}
}

// TestKnownChunksNotEncoded: the first snapshot of a disk whose data the store holds already (a
// copy of a disk snapshotted before) compresses nothing and stores nothing; the chunks of its own
// that are new are encoded once, even where a block holds them twice.
func TestKnownChunksNotEncoded(t *testing.T) {
	u := newUnit(t, Options{})
	const chunks = 80 // 1.25 MiB: two blocks
	a := u.disk("a", chunks*testChunk)
	u.write(a, 0, u.random(chunks*testChunk))
	u.write(a, 10*testChunk, make([]byte, 2*testChunk)) // two chunks of holes
	u.snap("a", "s1")
	before, counted := u.stats(), u.counts()

	b := u.copyDisk(a, "b")
	sb := u.snap("b", "s1")
	if got := u.counts().minus(counted); got != (createCounts{reused: chunks - 2}) {
		t.Errorf("snapshot of a copy: %+v, want every data chunk reused, none encoded", got)
	}
	if st := u.stats(); st != before {
		t.Errorf("snapshot of a copy stored data: %+v then %+v", before, st)
	}
	if !bytes.Equal(u.image(sb.Ref()), u.read(b)) {
		t.Fatal("snapshot of the copy reads wrong")
	}

	// New data, one chunk's content twice in the same block and once more in another chunk that
	// the store holds: encoded once, the copies reused.
	same := u.random(testChunk)
	u.write(b, 3*testChunk, same)
	u.write(b, 7*testChunk, same)
	u.write(b, 20*testChunk, u.read(a)[30*testChunk:31*testChunk]) // a chunk moved within the disk
	counted = u.counts()
	sb2 := u.snap("b", "s2")
	if got := u.counts().minus(counted); got != (createCounts{encoded: 1, reused: 2}) {
		t.Errorf("snapshot with a new chunk twice and a moved one: %+v, want 1 encoded, 2 reused", got)
	}
	if st := u.stats(); st.Chunks != before.Chunks+1 {
		t.Errorf("store holds %d chunks, want %d", st.Chunks, before.Chunks+1)
	}
	if !bytes.Equal(u.image(sb2.Ref()), u.read(b)) {
		t.Fatal("second snapshot of the copy reads wrong")
	}
	u.verify()
}

// TestKnownChunkFreedBeforeCommit: chunks found in the store when they were hashed, freed by a
// delete before their batch commits, are read from the disk again and stored; should the disk have
// changed there meanwhile, the snapshot holds what it reads then.
func TestKnownChunkFreedBeforeCommit(t *testing.T) {
	for _, changed := range []bool{false, true} {
		u := newUnit(t, Options{})
		const chunks = 24
		a := u.disk("a", chunks*testChunk)
		u.write(a, 0, u.random(chunks*testChunk))
		sa := u.snap("a", "s1")
		b := u.copyDisk(a, "b")
		want := u.read(b)
		deleted := false
		u.m.beforeCommit = func() {
			if deleted {
				return
			}
			deleted = true
			if _, err := u.m.DeleteSnapshot(u.ctx, sa.Ref()); err != nil {
				t.Errorf("delete %s: %v", sa.Ref(), err)
			}
			if changed {
				want = u.random(chunks * testChunk)
				u.write(b, 0, want)
			}
		}
		counted := u.counts()
		sb := u.snap("b", "s1")
		u.m.beforeCommit = nil
		if !deleted {
			t.Fatal("no batch committed")
		}
		if got := u.counts().minus(counted); got != (createCounts{reused: chunks, reread: chunks}) {
			t.Errorf("changed %v: %+v, want every chunk reused when hashed, then read again", changed, got)
		}
		if !bytes.Equal(u.image(sb.Ref()), want) {
			t.Fatalf("changed %v: the snapshot does not read as the disk read again", changed)
		}
		if st := u.stats(); st.Chunks != chunks {
			t.Errorf("changed %v: store holds %d chunks, want %d", changed, st.Chunks, chunks)
		}
		u.verify()
	}
}
