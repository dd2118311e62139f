package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/snapfs/snapfs/chain"
	"github.com/snapfs/snapfs/store"
	"github.com/urfave/cli/v2"
)

// storeDir is the absolute path of the store directory: --store, else $SNAPFS_STORE (both through
// the flag), else the default for the user.
func storeDir(cCtx *cli.Context) (string, error) {
	if err := checkStoreFlag(cCtx); err != nil {
		return "", err
	}
	dir := cCtx.String("store")
	if dir == "" {
		return defaultStoreDir()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("store %s: %w", dir, err)
	}
	return abs, nil
}

// checkStoreFlag refuses an empty --store or $SNAPFS_STORE: most likely an unset shell variable, it
// would otherwise mean the default store, and a delete or a restore would act on that. It is
// checked where the store is needed, so that help still works.
func checkStoreFlag(cCtx *cli.Context) error {
	if cCtx.IsSet("store") && cCtx.String("store") == "" {
		return &usageError{msg: "--store (or $SNAPFS_STORE) is empty: name a directory, or leave both unset for the default"}
	}
	return nil
}

// defaultStoreDir is /var/lib/snapfs for root, else $XDG_DATA_HOME/snapfs (by default
// ~/.local/share/snapfs).
func defaultStoreDir() (string, error) {
	if os.Geteuid() == 0 {
		return "/var/lib/snapfs", nil
	}
	if xdg := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(xdg) {
		return filepath.Join(xdg, "snapfs"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the default store: %w (use --store)", err)
	}
	return filepath.Join(home, ".local", "share", "snapfs"), nil
}

// openReader opens the store read-only, without the writer lock, so that listing works while
// another process writes. It returns a nil Manager when there is no store yet: nothing to list.
func openReader(ctx context.Context, cCtx *cli.Context) (*chain.Manager, error) {
	dir, err := storeDir(cCtx)
	if err != nil {
		return nil, err
	}
	m, err := chain.Open(ctx, dir, chain.Options{ReadOnly: true})
	if errors.Is(err, store.ErrNoStore) {
		return nil, nil
	}
	return m, err
}

// withReader runs fn with the store opened read-only; m is nil when there is no store yet.
func withReader(cCtx *cli.Context, fn func(m *chain.Manager) error) error {
	m, err := openReader(cCtx.Context, cCtx)
	if err != nil {
		return err
	}
	if m != nil {
		defer m.Close()
	}
	return fn(m)
}
