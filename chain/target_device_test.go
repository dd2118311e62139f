package chain

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// attachLoop attaches a loop device to path (an image file or a block device), with the losetup
// options opts, until the end of the test, and returns the device.
func attachLoop(t *testing.T, path string, opts ...string) string {
	t.Helper()
	loop := sh(t, "losetup", append(append([]string{"-f", "--show"}, opts...), path)...)
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	return loop
}

// sparseImage creates an image file of size bytes in dir.
func sparseImage(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// mountExt4 makes an ext4 filesystem on the block device dev and mounts it on a new directory until
// the end of the test, and returns the directory.
func mountExt4(t *testing.T, dev string) string {
	t.Helper()
	sh(t, "mkfs.ext4", "-q", "-F", dev)
	mnt, err := os.MkdirTemp(t.TempDir(), "mnt")
	if err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", dev, mnt)
	t.Cleanup(func() {
		if exec.Command("umount", mnt).Run() != nil {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

// deviceStore opens a store in directory dir (on the filesystem under test) and snapshots into it,
// as v/s1, a disk of random data kept elsewhere. It returns the store and the snapshot's data.
func deviceStore(t *testing.T, dir string) (*Manager, []byte) {
	t.Helper()
	ctx := context.Background()
	m, err := Open(ctx, filepath.Join(dir, "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	data := make([]byte, 1<<20)
	rand.Read(data)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AddVolume(ctx, VolumeSpec{Name: "v", Source: disk, ChunkSize: testChunk}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateSnapshot(ctx, "v", CreateOptions{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	return m, data
}

// readHead reads the first n bytes of the file or block device at path.
func readHead(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// refusedOnto checks that a forced restore of v/s1 onto target is refused as holding the store's
// filesystem, with an error that says each of want, and that no chunk of the snapshot reached the
// target. (The filesystem on it writes its own metadata meanwhile, so the target is not compared
// whole.) It checks the store after.
func refusedOnto(t *testing.T, m *Manager, data []byte, target string, want ...string) {
	t.Helper()
	ctx := context.Background()
	st, err := m.Restore(ctx, "v/s1", RestoreOptions{To: target, Force: true})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "holds the filesystem of the store") {
		t.Errorf("forced restore onto %s: %v, want it refused as holding the store's filesystem", target, err)
	}
	for _, w := range want {
		if err != nil && !strings.Contains(err.Error(), w) {
			t.Errorf("refusal of %s: %v, want it to say %q", target, err, w)
		}
	}
	if st.ChunksWritten != 0 {
		t.Errorf("refused restore onto %s wrote %d chunks", target, st.ChunksWritten)
	}
	got := readHead(t, target, len(data))
	for off := 0; off < len(data); off += testChunk {
		if bytes.Equal(got[off:off+testChunk], data[off:off+testChunk]) {
			t.Errorf("refused restore onto %s wrote the chunk at %d", target, off)
			break
		}
	}
	if rep, err := m.Verify(ctx, nil, nil); err != nil || len(rep.Faults) > 0 {
		t.Errorf("verify after the refused restore onto %s: %v %+v", target, err, rep.Faults)
	}
}

// TestRestoreRefusesStoreDevice: a restore, even a forced one, never writes the block device the
// store's filesystem is on: not the device itself, nor one that filesystem is on by way of a
// partition, a loop device over it, or a loop device over an image file in a filesystem on it;
// nor an image file a loop device holding it is attached to. Other devices and files, on the
// store's filesystem too, are written.
func TestRestoreRefusesStoreDevice(t *testing.T) {
	requireRoot(t, "losetup", "mkfs.ext4", "mount", "umount")
	const size = 64 << 20

	t.Run("device", func(t *testing.T) {
		img := sparseImage(t, t.TempDir(), "fs.img", size)
		loop := attachLoop(t, img)
		mnt := mountExt4(t, loop)
		m, data := deviceStore(t, mnt)
		store := filepath.Join(mnt, "store")
		refusedOnto(t, m, data, loop, "target "+loop+" holds the filesystem of the store "+store+" (mounted at "+mnt+")")
		refusedOnto(t, m, data, img, "target "+img+" is attached to "+loop+", which holds")

		ctx := context.Background()
		other := attachLoop(t, sparseImage(t, t.TempDir(), "other.img", size))
		if rs, err := m.Restore(ctx, "v/s1", RestoreOptions{To: other, Force: true}); err != nil || rs.ChunksWritten == 0 {
			t.Errorf("forced restore onto %s, which holds nothing of the store: %+v, %v", other, rs, err)
		} else if !bytes.Equal(readHead(t, other, len(data)), data) {
			t.Errorf("restore onto %s differs from the snapshot", other)
		}
		for _, target := range []string{filepath.Join(mnt, "restored.img"), filepath.Join(mnt, "cloned.img")} {
			var err error
			if strings.HasPrefix(filepath.Base(target), "restored") {
				_, err = m.Restore(ctx, "v/s1", RestoreOptions{To: target, NewDisk: true})
			} else {
				_, err = m.Clone(ctx, "v/s1", CloneOptions{To: target})
			}
			if err != nil {
				t.Errorf("restore or clone onto %s, on the store's filesystem outside the store: %v", target, err)
			} else if got, _ := os.ReadFile(target); !bytes.Equal(got, data) {
				t.Errorf("%s differs from the snapshot", target)
			}
		}
	})

	t.Run("partition", func(t *testing.T) {
		requireRoot(t, "partx")
		img := sparseImage(t, t.TempDir(), "disk.img", size)
		writeMBR(t, img, size)
		loop := attachLoop(t, img, "-P")
		part := loop + "p1"
		if _, err := os.Stat(part); err != nil {
			exec.Command("partx", "-a", loop).Run()
		}
		mnt := mountExt4(t, part)
		m, data := deviceStore(t, mnt)
		refusedOnto(t, m, data, loop, "target "+loop+" holds", "(on "+part+", mounted at "+mnt+")")
		refusedOnto(t, m, data, img, "attached to "+loop, "on "+part)
	})

	t.Run("stacked loops", func(t *testing.T) {
		img := sparseImage(t, t.TempDir(), "stack.img", size)
		lower := attachLoop(t, img)
		upper := attachLoop(t, lower)
		mnt := mountExt4(t, upper)
		m, data := deviceStore(t, mnt)
		refusedOnto(t, m, data, lower, "target "+lower+" holds", "on "+upper)
		refusedOnto(t, m, data, img, "attached to "+lower, "on "+upper)
	})

	t.Run("loop over a file on it", func(t *testing.T) {
		outer := attachLoop(t, sparseImage(t, t.TempDir(), "outer.img", 2*size))
		outerMnt := mountExt4(t, outer)
		inner := attachLoop(t, sparseImage(t, outerMnt, "inner.img", size))
		m, data := deviceStore(t, mountExt4(t, inner))
		refusedOnto(t, m, data, outer, "target "+outer+" holds", "on "+inner)
	})

	// An overlay gives its files a device number of its own; the store's files are on its layers'
	// devices: written ones in the upper layer, others possibly still in a lower one.
	overlay := func(t *testing.T, lower, upperFS string) string {
		t.Helper()
		upper, work := filepath.Join(upperFS, "upper"), filepath.Join(upperFS, "work")
		for _, d := range []string{upper, work} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		mnt := t.TempDir()
		sh(t, "mount", "-t", "overlay", "overlay", "-o", "lowerdir="+lower+",upperdir="+upper+",workdir="+work, mnt)
		t.Cleanup(func() {
			if exec.Command("umount", mnt).Run() != nil {
				exec.Command("umount", "-l", mnt).Run()
			}
		})
		return mnt
	}
	t.Run("overlay upper layer", func(t *testing.T) {
		upperDev := attachLoop(t, sparseImage(t, t.TempDir(), "upper.img", size))
		mnt := overlay(t, t.TempDir(), mountExt4(t, upperDev))
		m, data := deviceStore(t, mnt)
		refusedOnto(t, m, data, upperDev, "target "+upperDev+" holds")
		inner := attachLoop(t, sparseImage(t, mnt, "inner.img", size))
		m2, data2 := deviceStore(t, mountExt4(t, inner))
		refusedOnto(t, m2, data2, upperDev, "target "+upperDev+" holds", "on "+inner)
	})
	t.Run("overlay lower layer", func(t *testing.T) {
		lowerDev := attachLoop(t, sparseImage(t, t.TempDir(), "lower.img", size))
		lower := mountExt4(t, lowerDev)
		m, data := deviceStore(t, lower) // a store made before the overlay, its packs in the lower layer
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		upperDev := attachLoop(t, sparseImage(t, t.TempDir(), "upper.img", size))
		mnt := overlay(t, lower, mountExt4(t, upperDev))
		m, err := Open(context.Background(), filepath.Join(mnt, "store"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		refusedOnto(t, m, data, lowerDev, "target "+lowerDev+" holds")
		refusedOnto(t, m, data, upperDev, "target "+upperDev+" holds")
	})

	// A filesystem such as btrfs gives its files a device number of its own, not its disk's: the
	// mount table says which disk it is mounted from. A tmpfs mounted with a device as its source
	// stands in for one here.
	ownNumbers := func(t *testing.T) (dev, mnt string) {
		t.Helper()
		dev = attachLoop(t, sparseImage(t, t.TempDir(), "btrfs.img", size))
		mnt, err := os.MkdirTemp(t.TempDir(), "mnt")
		if err != nil {
			t.Fatal(err)
		}
		sh(t, "mount", "-t", "tmpfs", "-o", "size=256m", dev, mnt)
		t.Cleanup(func() {
			if exec.Command("umount", mnt).Run() != nil {
				exec.Command("umount", "-l", mnt).Run()
			}
		})
		return dev, mnt
	}
	t.Run("filesystem with its own device numbers", func(t *testing.T) {
		dev, mnt := ownNumbers(t)
		m, data := deviceStore(t, mnt)
		refusedOnto(t, m, data, dev, "target "+dev+" holds", "(mounted at "+mnt+")")
	})
	t.Run("loop over a file on a filesystem with its own device numbers", func(t *testing.T) {
		dev, mnt := ownNumbers(t)
		inner := attachLoop(t, sparseImage(t, mnt, "inner.img", size))
		m, data := deviceStore(t, mountExt4(t, inner))
		refusedOnto(t, m, data, dev, "target "+dev+" holds", "on "+inner)
	})
}
