package replica

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/indexwire/indexwire/diff"
)

// State directory layout:
//
//	<state>/redo/<uniqueid>.batch   encoded batch being applied (crash redo)
//	<state>/position/<uniqueid>     "<uidvalidity> <modseq>\n": the replica's position
const (
	redoDir     = "redo"
	redoSuffix  = ".batch"
	positionDir = "position"
	tmpSuffix   = ".tmp"
)

// writeFileSync writes b to path atomically and durably: a temporary file,
// fsync, rename, fsync of the directory.
func writeFileSync(path string, b []byte) error {
	return writeFileAtomic(path, path+tmpSuffix, b, 0o600, nil)
}

// writeFileAtomic writes b to tmp (prep, if set, runs on the new file
// first), fsyncs it, renames it over path and fsyncs the directory. On
// error tmp is removed and path is untouched.
func writeFileAtomic(path, tmp string, b []byte, perm os.FileMode, prep func(*os.File) error) error {
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if prep != nil {
		err = prep(f)
	}
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func redoPath(stateDir, id string) string {
	return filepath.Join(stateDir, redoDir, id+redoSuffix)
}

// position is a mailbox's replication position: every change with a modseq
// up to ModSeq is applied, for the mailbox incarnation UIDValidity.
type position struct {
	UIDValidity uint32
	ModSeq      uint64
}

// positions keeps every mailbox's position in memory and in one small file
// per mailbox. A position file is replaced by rename without fsync: the
// index is fsynced before the position moves, so after a crash the position
// can only be older (or unreadable, which counts as 0) than what is applied,
// and catch-up then re-sends changes that apply as stale.
type positions struct {
	dir string
	log *zap.Logger

	mu sync.Mutex
	m  map[string]position
}

func loadPositions(stateDir string, log *zap.Logger) (*positions, error) {
	p := &positions{dir: filepath.Join(stateDir, positionDir), log: log, m: map[string]position{}}
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, fmt.Errorf("read positions: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(p.dir, name)
		if strings.HasSuffix(name, tmpSuffix) {
			os.Remove(path)
			continue
		}
		if diff.ValidUniqueID(name) != nil {
			log.Warn("ignoring stray file in position dir", zap.String("path", path))
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read position: %w", err)
		}
		pos, err := parsePosition(string(b))
		if err != nil {
			log.Warn("unreadable position; starting the mailbox from 0", zap.String("mailbox", name), zap.Error(err))
			continue
		}
		p.m[name] = pos
	}
	return p, nil
}

func parsePosition(s string) (position, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return position{}, fmt.Errorf("position %q: want \"<uidvalidity> <modseq>\"", s)
	}
	uv, err1 := strconv.ParseUint(f[0], 10, 32)
	ms, err2 := strconv.ParseUint(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return position{}, fmt.Errorf("position %q: %w", s, err)
	}
	return position{UIDValidity: uint32(uv), ModSeq: ms}, nil
}

// get returns the position of mailbox id for incarnation uidvalidity (0 if
// unknown or recorded for another incarnation).
func (p *positions) get(id string, uidvalidity uint32) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pos, ok := p.m[id]; ok && pos.UIDValidity == uidvalidity {
		return pos.ModSeq
	}
	return 0
}

// advance applies the position rule after a batch was applied: the position
// moves to the batch's highestmodseq when the batch starts at or below it
// (contiguous), so a lost or overtaken batch leaves a gap that catch-up fills.
// Records the replica lacks or holds under another GUID do not hold it back:
// re-sending them cannot help (they are counted and logged), and a position
// stuck behind them would make every later batch look like a gap. It never
// moves backwards.
func (p *positions) advance(id string, b *diff.Batch) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pos := p.m[id]
	if pos.UIDValidity != b.UIDValidity {
		pos = position{UIDValidity: b.UIDValidity}
	}
	if b.OldHighestModSeq > pos.ModSeq || b.HighestModSeq <= pos.ModSeq {
		return pos.ModSeq, nil
	}
	pos.ModSeq = b.HighestModSeq
	s := fmt.Sprintf("%d %d\n", pos.UIDValidity, pos.ModSeq)
	path := filepath.Join(p.dir, id)
	tmp := path + tmpSuffix
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		return p.m[id].ModSeq, fmt.Errorf("write position: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return p.m[id].ModSeq, fmt.Errorf("write position: %w", err)
	}
	p.m[id] = pos
	return pos.ModSeq, nil
}
