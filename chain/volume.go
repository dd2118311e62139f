package chain

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/snapfs/snapfs/store"
)

// VolumeSpec describes a disk to register.
type VolumeSpec struct {
	Name      string
	Source    string
	Kind      string // KindData (default) or KindSystem
	Instance  string // the instance the disk belongs to, if any
	ChunkSize int64  // 0: DefaultChunkSize
}

// ValidateChunkSize checks that n is a power of two from MinChunkSize to MaxChunkSize.
func ValidateChunkSize(n int64) error {
	if n < MinChunkSize || n > MaxChunkSize || n&(n-1) != 0 {
		return fmt.Errorf("%w: chunk size %d: want a power of two from 16 KiB to 4 MiB", ErrInvalid, n)
	}
	return nil
}

func (spec *VolumeSpec) validate() error {
	if err := ValidateName(spec.Name); err != nil {
		return err
	}
	switch spec.Kind {
	case "":
		spec.Kind = KindData
	case KindData, KindSystem:
	default:
		return fmt.Errorf("%w: kind %q: want %s or %s", ErrInvalid, spec.Kind, KindData, KindSystem)
	}
	if spec.Instance != "" {
		if err := ValidateName(spec.Instance); err != nil {
			return fmt.Errorf("instance: %w", err)
		}
	}
	if spec.ChunkSize == 0 {
		spec.ChunkSize = DefaultChunkSize
	}
	return ValidateChunkSize(spec.ChunkSize)
}

// AddVolume registers a disk: a block device or a regular image file. Its chain starts with its first
// snapshot.
func (m *Manager) AddVolume(ctx context.Context, spec VolumeSpec) (Volume, error) {
	if err := spec.validate(); err != nil {
		return Volume{}, err
	}
	// A pack or the reserve as a volume would be snapshotted into itself, and restored over.
	if err := m.outsideStore("source", spec.Source); err != nil {
		return Volume{}, err
	}
	d, err := openDisk(spec.Source, 0) // O_RDONLY: the disk must be readable
	if err != nil {
		return Volume{}, fmt.Errorf("source: %w", err)
	}
	d.Close()
	var out Volume
	err = m.st.Update(ctx, func(tx *store.Tx) error {
		if spec.Kind == KindSystem && spec.Instance != "" {
			if err := noOtherSystemDisk(tx, spec.Instance); err != nil {
				return err
			}
		}
		if err := notRegistered(tx, d); err != nil {
			return err
		}
		v := store.Volume{Name: spec.Name, Kind: spec.Kind, Instance: spec.Instance, Source: d.path, Size: d.size,
			ChunkSize: spec.ChunkSize, Created: time.Now().UnixNano(), Ident: diskIdent(d)}
		id, err := tx.InsertVolume(v)
		if err != nil {
			return err
		}
		v.ID = id
		out, err = m.volumeView(tx, v)
		return err
	})
	return out, err
}

// notRegistered refuses a disk that a volume already names, under whatever path: two volumes of one
// disk would make two chains that each claim to be its history.
func notRegistered(tx *store.Tx, d *disk) error {
	v, ok, err := volumeOfDisk(tx, d)
	if err != nil || !ok {
		return err
	}
	return fmt.Errorf("source %s: %w: it is volume %s", d.path, ErrExists, v.Name)
}

// volumeOfDisk finds the volume whose source is the disk d, under whatever path.
func volumeOfDisk(tx *store.Tx, d *disk) (store.Volume, bool, error) {
	vs, err := tx.Volumes()
	if err != nil {
		return store.Volume{}, false, err
	}
	for _, v := range vs {
		if _, st, err := statDisk(v.Source); err == nil && sameDisk(st, d.st) {
			return v, true, nil
		}
	}
	return store.Volume{}, false, nil
}

// currentVolume returns vol as it is now, in a transaction of a snapshot of vol; the error says
// that vol was removed since the snapshot looked it up (with the chain it may have just started).
func currentVolume(tx *store.Tx, vol store.Volume) (store.Volume, error) {
	cur, err := tx.VolumeByID(vol.ID)
	if errors.Is(err, ErrNotFound) {
		return cur, fmt.Errorf("volume %s: %w (removed as its snapshot began)", vol.Name, ErrNotFound)
	}
	return cur, err
}

// volumeStillThere is currentVolume for a transaction that needs only to know vol is still there.
func volumeStillThere(tx *store.Tx, vol store.Volume) error {
	_, err := currentVolume(tx, vol)
	return err
}

func noOtherSystemDisk(tx *store.Tx, instance string) error {
	vs, err := tx.VolumesByInstance(instance)
	if err != nil {
		return err
	}
	for _, v := range vs {
		if v.Kind == KindSystem {
			return fmt.Errorf("instance %s: %w: its system disk is volume %s", instance, ErrExists, v.Name)
		}
	}
	return nil
}

// RemoveVolume forgets a disk. The disk itself is not touched, and its chain and snapshots stay; a
// chain left with no snapshot goes with the volume.
func (m *Manager) RemoveVolume(ctx context.Context, name string) error {
	// A snapshot of the volume running meanwhile keeps its chain (its row, creating, counts) and
	// ends as it would; one just starting finds the volume gone and says so (see chainFor, begin).
	return m.st.Update(ctx, func(tx *store.Tx) error {
		v, err := tx.VolumeByName(name)
		if err != nil {
			return err
		}
		c, cerr := tx.ChainByVolume(v.ID)
		if cerr != nil && !errors.Is(cerr, ErrNotFound) {
			return cerr
		}
		if err := tx.DeleteVolume(v.ID); err != nil {
			return err
		}
		if cerr != nil {
			return nil // the volume never had a snapshot
		}
		return dropEmptyChain(tx, c.ID)
	})
}

// SystemVolume finds the system disk registered with an instance.
func (m *Manager) SystemVolume(ctx context.Context, instance string) (Volume, error) {
	var out Volume
	err := m.st.View(ctx, func(tx *store.Tx) error {
		vs, err := tx.VolumesByInstance(instance)
		if err != nil {
			return err
		}
		for _, v := range vs {
			if v.Kind == KindSystem {
				out, err = m.volumeView(tx, v)
				return err
			}
		}
		return fmt.Errorf("instance %s: no system disk registered: %w", instance, ErrNotFound)
	})
	return out, err
}
