package fs

import (
	"context"
	"fmt"
	"strings"

	"github.com/snapfs/snapfs/chain"
)

// imageSuffix ends the name of every image file.
const imageSuffix = ".img"

// rootDir is the mount's top directory: volumes/ and chains/.
type rootDir struct{}

func (rootDir) key() string { return "" }

func (r rootDir) list(ctx context.Context, f *FS) ([]named, error) {
	return []named{{"volumes", f.newDir(volumesDir{})}, {"chains", f.newDir(chainsDir{})}}, nil
}

func (r rootDir) find(ctx context.Context, f *FS, name string) (node, error) {
	switch name {
	case "volumes":
		return f.newDir(volumesDir{}), nil
	case "chains":
		return f.newDir(chainsDir{}), nil
	}
	return nil, fmt.Errorf("%s: %w", name, chain.ErrNotFound)
}

// volumesDir lists the registered volumes.
type volumesDir struct{}

func (volumesDir) key() string { return "volumes" }

func (volumesDir) list(ctx context.Context, f *FS) ([]named, error) {
	vols, err := f.m.Volumes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := make([]named, len(vols))
	for i, v := range vols {
		out[i] = named{v.Name, f.newDir(volumeDir{name: v.Name})}
	}
	return out, nil
}

func (volumesDir) find(ctx context.Context, f *FS, name string) (node, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if _, err := f.m.Volume(ctx, name); err != nil {
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	return f.newDir(volumeDir{name: name}), nil
}

// chainsDir lists the chains.
type chainsDir struct{}

func (chainsDir) key() string { return "chains" }

func (chainsDir) list(ctx context.Context, f *FS) ([]named, error) {
	names, err := f.m.ChainNames(ctx)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	out := make([]named, len(names))
	for i, name := range names {
		out[i] = named{name, f.newDir(chainDir{name: name})}
	}
	return out, nil
}

func (chainsDir) find(ctx context.Context, f *FS, name string) (node, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if _, err := f.m.ChainInfo(ctx, name); err != nil {
		return nil, fmt.Errorf("chain %s: %w", name, err)
	}
	return f.newDir(chainDir{name: name}), nil
}

// volumeDir holds one volume's ctl, status and info files.
type volumeDir struct{ name string }

func (d volumeDir) key() string { return "volumes/" + d.name }

func (d volumeDir) list(ctx context.Context, f *FS) ([]named, error) {
	return []named{
		{"ctl", f.newCtl(d.name)},
		{"status", f.newText(d.key()+"/status", f.statusText(d.name))},
		{"info", f.newText(d.key()+"/info", f.volumeInfo(d.name))},
	}, nil
}

func (d volumeDir) find(ctx context.Context, f *FS, name string) (node, error) {
	entries, _ := d.list(ctx, f)
	for _, e := range entries {
		if e.name == name {
			return e.node, nil
		}
	}
	return nil, fmt.Errorf("%s/%s: %w", d.key(), name, chain.ErrNotFound)
}

// chainDir holds one chain's info file and an image per complete snapshot.
type chainDir struct{ name string }

func (d chainDir) key() string { return "chains/" + d.name }

func (d chainDir) info(f *FS) node { return f.newText(d.key()+"/info", f.chainInfo(d.name)) }

func (d chainDir) list(ctx context.Context, f *FS) ([]named, error) {
	snaps, err := f.m.SnapshotNames(ctx, d.name)
	if err != nil {
		return nil, fmt.Errorf("list chain %s: %w", d.name, err)
	}
	out := make([]named, 0, len(snaps)+1)
	out = append(out, named{"info", d.info(f)})
	for _, s := range snaps {
		out = append(out, named{s.Name + imageSuffix, f.newImage(s)})
	}
	return out, nil
}

func (d chainDir) find(ctx context.Context, f *FS, name string) (node, error) {
	if name == "info" {
		return d.info(f), nil
	}
	snap, ok := strings.CutSuffix(name, imageSuffix)
	if !ok || validName(snap) != nil {
		return nil, fmt.Errorf("%s/%s: %w", d.key(), name, chain.ErrNotFound)
	}
	s, err := f.m.SnapshotInfo(ctx, d.name+"/"+snap)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s/%s: %w", d.name, snap, err)
	}
	return f.newImage(s), nil
}

// validName turns a name the engine would refuse into "not found", without asking the store.
func validName(name string) error {
	if chain.ValidateName(name) != nil {
		return fmt.Errorf("%s: %w", name, chain.ErrNotFound)
	}
	return nil
}
