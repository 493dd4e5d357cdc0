package replica

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/indexwire/indexwire/diff"
)

// ErrNotFound is returned for a unique id no mailbox on the spool carries.
var ErrNotFound = errors.New("mailbox not found on the replica spool")

// locator finds a mailbox's data directory by unique id. Cyrus 3.6 keeps
// mailboxes at <spool>/uuid/<c1>/<c2>/<uniqueid>/ (c1, c2 the id's first two
// characters; `mbpath` confirms it); mailboxes in other layouts (legacy
// names, hashed spools) are found through an index built by reading every
// cyrus.header under the spool, refreshed on a miss at most once per
// interval.
type locator struct {
	spool    string
	interval time.Duration
	log      *zap.Logger

	mu       sync.Mutex
	byID     map[string]string
	lastScan time.Time
}

// mailboxDir is one mailbox found on the spool.
type mailboxDir struct {
	ID  string
	Dir string
}

// uuidDir is the 3.6 data directory of id.
func (l *locator) uuidDir(id string) string {
	if len(id) < 2 {
		return ""
	}
	return filepath.Join(l.spool, "uuid", id[:1], id[1:2], id)
}

// find returns the data directory of mailbox id, which must already have
// passed diff.ValidUniqueID.
func (l *locator) find(id string) (string, error) {
	if err := diff.ValidUniqueID(id); err != nil {
		return "", err
	}
	if d := l.uuidDir(id); d != "" && isMailboxDir(d) {
		return d, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if d, ok := l.byID[id]; ok && isMailboxDir(d) {
		return d, nil
	}
	if l.byID == nil || time.Since(l.lastScan) >= l.interval {
		if _, err := l.scanLocked(); err != nil {
			return "", err
		}
		if d, ok := l.byID[id]; ok {
			return d, nil
		}
	}
	return "", fmt.Errorf("mailbox %s: %w", id, ErrNotFound)
}

// forget drops a stale index entry (the directory holds another mailbox).
func (l *locator) forget(id string) {
	l.mu.Lock()
	delete(l.byID, id)
	l.mu.Unlock()
}

func isMailboxDir(d string) bool {
	_, err := os.Lstat(filepath.Join(d, "cyrus.index"))
	return err == nil
}

// scan walks the whole spool and returns every mailbox, sorted by id, and
// refreshes the index.
func (l *locator) scan() ([]mailboxDir, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.scanLocked()
}

func (l *locator) scanLocked() ([]mailboxDir, error) {
	byID := map[string]string{}
	var out []mailboxDir
	err := filepath.WalkDir(l.spool, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if p == l.spool {
				return err
			}
			// A mailbox deleted during the walk: skip it.
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if de.Name() != "cyrus.header" || !de.Type().IsRegular() {
			return nil
		}
		dir := filepath.Dir(p)
		if !isMailboxDir(dir) {
			return nil
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		mh, err := diff.ParseMailboxHeader(p, b)
		if err != nil {
			l.log.Warn("skipping unreadable mailbox header", zap.String("path", p), zap.Error(err))
			return nil
		}
		if err := diff.ValidUniqueID(mh.UniqueID); err != nil {
			l.log.Warn("skipping mailbox with unusable unique id", zap.String("path", p), zap.Error(err))
			return nil
		}
		if prev, dup := byID[mh.UniqueID]; dup {
			l.log.Warn("unique id on two mailboxes; keeping the first", zap.String("mailbox", mh.UniqueID),
				zap.String("dir", prev), zap.String("other", dir))
			return nil
		}
		byID[mh.UniqueID] = dir
		out = append(out, mailboxDir{ID: mh.UniqueID, Dir: dir})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan spool %s: %w", l.spool, err)
	}
	l.byID, l.lastScan = byID, time.Now()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
