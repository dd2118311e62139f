package chain

import "fmt"

// CheckVolumeSpec tells, without a store, whether AddVolume would refuse spec for what spec itself
// says: a bad name, kind, instance or chunk size, or a source that is not a readable disk. Callers
// that would create a store to add the volume check first, so that a bad command leaves nothing.
func CheckVolumeSpec(spec VolumeSpec) error {
	if err := spec.validate(); err != nil {
		return err
	}
	d, err := openDisk(spec.Source, 0)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	return d.Close()
}
