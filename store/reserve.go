package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"
)

// Undoing work needs a little space too (SQLite journals a delete before it frees anything), so a
// writer keeps a reserve file of preallocated blocks that it gives up when the filesystem is full,
// to let a failed snapshot roll itself back, and takes again when space is there.

func (s *Store) reservePath() string { return filepath.Join(s.dir, "reserve") }

// reserveSize is 1% of the store's filesystem, from 1 MiB to 64 MiB.
func (s *Store) reserveSize() int64 {
	var fs unix.Statfs_t
	if unix.Statfs(s.dir, &fs) != nil {
		return 1 << 20
	}
	return min(max(int64(fs.Blocks)*int64(fs.Bsize)/100, 1<<20), 64<<20)
}

// EnsureReserve allocates the reserve file if it is missing; without space it quietly does nothing.
// It is allocated under another name and renamed into place, so that a reserve file, once there, has
// its blocks: one left empty by a crash between creating and allocating it would count as a reserve
// with nothing to give.
func (s *Store) EnsureReserve() {
	if s.readOnly {
		return
	}
	if s.reserveBytes() > 0 {
		return
	}
	tmp := s.reservePath() + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, s.reserveSize())
	f.Close()
	if err == nil {
		err = os.Rename(tmp, s.reservePath())
	}
	if err != nil {
		os.Remove(tmp)
	}
}

// reserveBytes is the space the reserve file holds: 0 when it is missing or empty.
func (s *Store) reserveBytes() int64 {
	var st unix.Stat_t
	if unix.Stat(s.reservePath(), &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

// ReleaseReserve frees the reserve file's space and reports whether there was any to free.
func (s *Store) ReleaseReserve() bool {
	had := s.reserveBytes() > 0
	os.Remove(s.reservePath() + ".new")
	return os.Remove(s.reservePath()) == nil && had
}

// IsFull reports whether err comes from a full filesystem, in a pack write or in SQLite.
func IsFull(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) && (se.Code == sqlite3.ErrFull ||
		se.SystemErrno == unix.ENOSPC || se.SystemErrno == unix.EDQUOT) {
		return true // ErrFull, or an I/O error ("disk I/O error") for want of room
	}
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// sayFull makes a full-filesystem error from SQLite ("database or disk is full") say what a pack
// write's says, "no space left on device", and match unix.ENOSPC.
func sayFull(err error) error {
	if err == nil || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || !IsFull(err) {
		return err
	}
	return fmt.Errorf("%w: %w", unix.ENOSPC, err)
}
