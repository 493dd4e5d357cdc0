package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxLockPoll caps the wait between two attempts to take a busy lock.
const maxLockPoll = 10 * time.Millisecond

// maxReopen bounds how often the index is reopened because a repack renamed
// a new file over it between open and lock.
const maxReopen = 10

// mailboxLock holds Cyrus's locks on one mailbox, taken in Cyrus's order
// (cyrus-index-format.md §7.3): the mailbox lock file <lockdir>/<uniqueid>.lock
// shared, then a whole-file lock on cyrus.index.
//
// The locks are open file description (OFD) locks: on Linux they conflict
// with the classic fcntl locks Cyrus takes, exactly like them, but they
// belong to the open file rather than to the process, so two goroutines of
// this process exclude each other, and closing another descriptor of the
// same file (States reading an index) cannot silently drop them.
type mailboxLock struct {
	lockFile *os.File
	index    *os.File
	path     string // cyrus.index
}

// lockMailbox takes the mailbox lock file shared and cyrus.index in dir
// exclusive (write) or shared, and checks that the locked file is still the
// one at the path. It honours ctx while waiting.
func lockMailbox(ctx context.Context, lockDir, id, dir string, write bool) (*mailboxLock, error) {
	lf, err := openLockFile(lockDir, id)
	if err != nil {
		return nil, err
	}
	if err := setLock(ctx, lf, unix.F_RDLCK); err != nil {
		lf.Close()
		return nil, fmt.Errorf("lock %s: %w", lf.Name(), err)
	}
	m := &mailboxLock{lockFile: lf, path: filepath.Join(dir, "cyrus.index")}
	typ := int16(unix.F_RDLCK)
	if write {
		typ = unix.F_WRLCK
	}
	for range maxReopen {
		f, err := os.OpenFile(m.path, os.O_RDWR, 0)
		if err != nil {
			m.unlock()
			return nil, fmt.Errorf("open index: %w", err)
		}
		if err := setLock(ctx, f, typ); err != nil {
			f.Close()
			m.unlock()
			return nil, fmt.Errorf("lock %s: %w", m.path, err)
		}
		same, err := sameFile(f, m.path)
		if err != nil {
			f.Close()
			m.unlock()
			return nil, err
		}
		if same {
			m.index = f
			return m, nil
		}
		// A repack renamed cyrus.index.NEW over the file we locked: retry on
		// the new one, as Cyrus's lock_reopen_ex() does.
		f.Close()
	}
	m.unlock()
	return nil, fmt.Errorf("lock %s: replaced %d times while locking", m.path, maxReopen)
}

// unlock releases the index lock, then the mailbox lock (closing an OFD
// lock's only descriptor releases it).
func (m *mailboxLock) unlock() error {
	var errs []error
	if m.index != nil {
		errs = append(errs, m.index.Close())
		m.index = nil
	}
	if m.lockFile != nil {
		errs = append(errs, m.lockFile.Close())
		m.lockFile = nil
	}
	return errors.Join(errs...)
}

func sameFile(f *os.File, path string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return false, fmt.Errorf("fstat %s: %w", path, err)
	}
	if err := unix.Stat(path, &b); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// setLock takes a whole-file OFD lock of type typ, polling with a short
// capped backoff so that a cancelled ctx ends the wait (a blocking
// F_OFD_SETLKW cannot be interrupted). Cyrus holds these locks only for the
// length of one command.
func setLock(ctx context.Context, f *os.File, typ int16) error {
	lk := unix.Flock_t{Type: typ, Whence: io.SeekStart}
	wait := 100 * time.Microsecond
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, maxLockPoll)
	}
}

// openLockFile opens (creating if needed) Cyrus's lock file for mailbox id.
// A file it creates gets the owner of the lock directory, so the Cyrus
// processes (which run as user cyrus) can still open it read-write.
func openLockFile(lockDir, id string) (*os.File, error) {
	path := filepath.Join(lockDir, id+".lock")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open mailbox lock: %w", err)
	}
	if err := mkdirOwned(lockDir); err != nil {
		return nil, fmt.Errorf("mailbox lock dir: %w", err)
	}
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	} else if err == nil {
		err = chownLike(f, lockDir)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("open mailbox lock: %w", err)
	}
	return f, nil
}

// mkdirOwned creates dir (and missing parents) owned like its parent.
func mkdirOwned(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := mkdirOwned(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Stat(parent)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	return os.Lchown(dir, int(st.Uid), int(st.Gid))
}

// chownLike gives f the owner and group of the file at like.
func chownLike(f *os.File, like string) error {
	fi, err := os.Stat(like)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	return f.Chown(int(st.Uid), int(st.Gid))
}
