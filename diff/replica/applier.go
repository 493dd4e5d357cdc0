package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/indexwire/indexwire/diff"
)

// Result is the outcome of one batch on the replica.
type Result struct {
	Mailbox      string
	Applied      int
	Stale        int
	Missing      int
	GUIDMismatch int
	MissingUIDs  []uint32
	// Position is the mailbox's replication position after the batch.
	Position uint64
	// HighestModSeq and SyncCRC are the replica index header's values after
	// the batch.
	HighestModSeq uint64
	SyncCRC       uint32
	// Diverged is set when the replica reached the batch's highestmodseq
	// with a synccrcs.basic other than the primary's (Rule 8).
	Diverged bool
}

// Stats are the Applier's running totals, for metrics.
type Stats struct {
	Batches      uint64
	Applied      uint64
	Stale        uint64
	Missing      uint64
	GUIDMismatch uint64
	Diverged     uint64
}

// faults is the fault-injection seam: tests set a hook to stop an apply at
// a labelled point. Each hook runs only if set; an error it returns aborts
// the apply there, as a crash would (the redo file is kept).
type faults struct {
	// betweenRecordsAndHeader runs after the record writes, before the
	// index header write.
	betweenRecordsAndHeader func() error
}

// Applier applies batches to the mailboxes of one replica Cyrus spool. It
// is safe for concurrent use; batches for one mailbox are applied one at a
// time, batches for different mailboxes in parallel.
type Applier struct {
	cfg     Config
	lockDir string
	log     *zap.Logger
	loc     *locator
	pos     *positions
	faults  faults

	mu    sync.Mutex
	busy  map[string]chan struct{} // per-mailbox semaphore
	stats struct {
		batches, applied, stale, missing, guidMismatch, diverged atomic.Uint64
	}
}

// New validates cfg, creates the state directory's layout and loads the
// positions. Call Recover before applying batches.
func New(cfg Config) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replica config: %w", err)
	}
	lockDir, err := LockDir(cfg.CyrusConf)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.RescanInterval == 0 {
		cfg.RescanInterval = DefaultRescanInterval
	}
	for _, d := range []string{redoDir, positionDir} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	pos, err := loadPositions(cfg.StateDir, log)
	if err != nil {
		return nil, err
	}
	return &Applier{
		cfg:     cfg,
		lockDir: lockDir,
		log:     log,
		loc:     &locator{spool: filepath.Clean(cfg.Spool), interval: cfg.RescanInterval, log: log},
		pos:     pos,
		busy:    map[string]chan struct{}{},
	}, nil
}

// Stats returns the running totals.
func (a *Applier) Stats() Stats {
	s := &a.stats
	return Stats{Batches: s.batches.Load(), Applied: s.applied.Load(), Stale: s.stale.Load(),
		Missing: s.missing.Load(), GUIDMismatch: s.guidMismatch.Load(), Diverged: s.diverged.Load()}
}

// acquire serialises work on one mailbox inside this process.
func (a *Applier) acquire(ctx context.Context, id string) (func(), error) {
	a.mu.Lock()
	ch, ok := a.busy[id]
	if !ok {
		ch = make(chan struct{}, 1)
		a.busy[id] = ch
	}
	a.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Apply applies b to its mailbox on the replica spool (Rules 3-8): the
// batch is made durable in a redo file, the mailbox is locked like Cyrus
// locks it, diff.Apply computes the writes, cyrus.header is rewritten first
// if keywords were added, then the records and the header are written and
// fsynced. A uidvalidity mismatch is an error wrapping diff.ErrUIDValidity
// and writes nothing.
func (a *Applier) Apply(ctx context.Context, b *diff.Batch) (Result, error) {
	if b == nil {
		return Result{}, errors.New("apply: nil batch")
	}
	id := b.Mailbox
	if err := diff.ValidUniqueID(id); err != nil {
		return Result{}, fmt.Errorf("apply batch: %w", err)
	}
	release, err := a.acquire(ctx, id)
	if err != nil {
		return Result{}, fmt.Errorf("apply batch to %s: %w", id, err)
	}
	defer release()
	dir, err := a.loc.find(id)
	if err != nil {
		return Result{}, fmt.Errorf("apply batch: %w", err)
	}
	enc, err := diff.EncodeBatch(b)
	if err != nil {
		return Result{}, fmt.Errorf("apply batch to %s: %w", id, err)
	}
	redo := redoPath(a.cfg.StateDir, id)
	if err := writeFileSync(redo, enc); err != nil {
		return Result{}, fmt.Errorf("write redo for %s: %w", id, err)
	}
	return a.applyAndFinish(ctx, id, dir, b, redo, false)
}

// applyAndFinish applies b under the mailbox's locks and, unless the index
// may be half-written, removes the redo file, then moves the position.
func (a *Applier) applyAndFinish(ctx context.Context, id, dir string, b *diff.Batch, redo string, repair bool) (Result, error) {
	ar, touched, err := a.applyLocked(ctx, id, dir, b, repair)
	if err != nil {
		if !touched {
			if rerr := os.Remove(redo); rerr != nil {
				a.log.Warn("remove redo file", zap.String("mailbox", id), zap.Error(rerr))
			}
		}
		return Result{}, err
	}
	if err := os.Remove(redo); err != nil {
		// The index is applied and fsynced; a leftover redo file only
		// replays as stale at the next start.
		a.log.Warn("remove redo file", zap.String("mailbox", id), zap.Error(err))
	}
	res := Result{Mailbox: id, Applied: ar.Applied, Stale: ar.Stale, Missing: ar.Missing,
		GUIDMismatch: ar.GUIDMismatch, MissingUIDs: ar.MissingUIDs, HighestModSeq: ar.HighestModSeq,
		SyncCRC: ar.SyncCRC, Diverged: ar.Diverged}
	res.Position, err = a.pos.advance(id, b)
	if err != nil {
		a.log.Warn("position not saved", zap.String("mailbox", id), zap.Error(err))
	}
	a.account(b, ar)
	return res, nil
}

func (a *Applier) account(b *diff.Batch, ar *diff.ApplyResult) {
	s := &a.stats
	s.batches.Add(1)
	s.applied.Add(uint64(ar.Applied))
	s.stale.Add(uint64(ar.Stale))
	s.missing.Add(uint64(ar.Missing))
	s.guidMismatch.Add(uint64(ar.GUIDMismatch))
	for _, m := range ar.Mismatches {
		a.log.Warn("guid mismatch: record not written", zap.String("mailbox", b.Mailbox), zap.Uint32("uid", m.UID),
			zap.String("primary_guid", m.Primary.String()), zap.String("replica_guid", m.Replica.String()))
	}
	for _, d := range ar.Differences {
		a.log.Warn("record differs at equal modseq: not written", zap.String("mailbox", b.Mailbox), zap.Uint32("uid", d.UID),
			zap.Uint64("modseq", d.ModSeq), zap.Strings("primary_flags", d.Primary), zap.Strings("replica_flags", d.Replica),
			zap.Uint32("primary_last_updated", d.PrimaryUpdated), zap.Uint32("replica_last_updated", d.ReplicaUpdated))
	}
	for _, uid := range ar.MissingUIDs {
		a.log.Debug("uid missing on replica", zap.String("mailbox", b.Mailbox), zap.Uint32("uid", uid))
	}
	if ar.Diverged {
		s.diverged.Add(1)
		a.log.Warn("mailbox diverged", zap.String("mailbox", b.Mailbox), zap.Uint64("highestmodseq", ar.HighestModSeq),
			zap.String("replica_synccrc", fmt.Sprintf("%08x", ar.SyncCRC)), zap.String("primary_synccrc", fmt.Sprintf("%08x", b.SyncCRC)))
	}
}

// applyLocked does the file work under Cyrus's locks. touched reports
// whether any file of the mailbox may have been changed (then the redo file
// must stay for Recover). With repair, a header left inconsistent by a crash
// is first recomputed from the records.
func (a *Applier) applyLocked(ctx context.Context, id, dir string, b *diff.Batch, repair bool) (_ *diff.ApplyResult, touched bool, err error) {
	m, err := lockMailbox(ctx, a.lockDir, id, dir, true)
	if err != nil {
		return nil, false, fmt.Errorf("apply batch to %s: %w", id, err)
	}
	defer func() {
		if uerr := m.unlock(); uerr != nil && err == nil {
			err = fmt.Errorf("unlock %s: %w", id, uerr)
		}
	}()
	file, done, err := readIndex(m)
	if err != nil {
		return nil, false, err
	}
	defer done()
	defer guardFault(m.path, &err)()
	hpath := filepath.Join(dir, "cyrus.header")
	hb, err := os.ReadFile(hpath)
	if err != nil {
		return nil, false, fmt.Errorf("read mailbox header: %w", err)
	}
	mh, err := diff.ParseMailboxHeader(hpath, hb)
	if err != nil {
		return nil, false, err
	}
	if mh.UniqueID != id {
		a.loc.forget(id)
		return nil, false, fmt.Errorf("apply batch to %s: %s holds mailbox %s: %w", id, dir, mh.UniqueID, ErrNotFound)
	}
	if repair {
		if touched, err = a.repair(m, file, mh, diff.CRC32(hb)); err != nil {
			return nil, touched, err
		}
	}
	ar, err := diff.Apply(m.path, file, mh, b)
	if err != nil {
		return nil, touched, err
	}
	if len(ar.Writes) == 0 {
		return ar, touched, nil
	}
	if len(ar.NewFlags) > 0 {
		// Cyrus commits cyrus.header before the index (mailbox_commit()).
		touched = true
		if err := writeMailboxHeader(hpath, ar.HeaderFile); err != nil {
			return nil, touched, err
		}
	}
	// diff.Apply wrote header_file_crc for a new cyrus.header; a crash
	// between that file and the index header is mended by Recover's repair.
	hdr := &ar.Writes[len(ar.Writes)-1]
	if hdr.Off != 0 {
		return nil, touched, fmt.Errorf("apply batch to %s: diff.Apply wrote records without the header", id)
	}
	touched = true
	if err := writeRuns(m.index, ar.Writes[:len(ar.Writes)-1]); err != nil {
		return nil, touched, fmt.Errorf("write records of %s: %w", m.path, err)
	}
	if h := a.faults.betweenRecordsAndHeader; h != nil {
		if err := h(); err != nil {
			return nil, touched, err
		}
	}
	if _, err := m.index.WriteAt(hdr.New, 0); err != nil {
		return nil, touched, fmt.Errorf("write header of %s: %w", m.path, err)
	}
	if err := m.index.Sync(); err != nil {
		return nil, touched, fmt.Errorf("fsync %s: %w", m.path, err)
	}
	return ar, touched, nil
}

// repair recomputes the header of an index left half-written by a crash
// between the record writes and the header write (diff.Check fails), and
// writes it. file is updated in place.
func (a *Applier) repair(m *mailboxLock, file []byte, mh *diff.MailboxHeader, headerCRC uint32) (bool, error) {
	ix, err := diff.DecodeIndex(m.path, file)
	if err != nil {
		return false, fmt.Errorf("recover %s (needs reconstruct): %w", m.path, err)
	}
	cerr := diff.Check(m.path, ix, mh.UserFlags)
	if cerr == nil && ix.Header.HeaderFileCRC == headerCRC {
		return false, nil
	}
	diff.Repair(ix, mh.UserFlags)
	ix.Header.HeaderFileCRC = headerCRC
	hb, err := ix.Header.Encode()
	if err != nil {
		return false, err
	}
	a.log.Info("repaired index header after an interrupted apply", zap.String("path", m.path), zap.NamedError("check", cerr))
	if _, err := m.index.WriteAt(hb, 0); err != nil {
		return true, fmt.Errorf("write header of %s: %w", m.path, err)
	}
	if err := m.index.Sync(); err != nil {
		return true, fmt.Errorf("fsync %s: %w", m.path, err)
	}
	// file is a shared mapping of the index: it already shows hb.
	return true, nil
}

// writeRuns writes records, merging writes that touch end to end into one
// pwrite (Cyrus writes one record per write(2); the result on disk is the
// same and readers are excluded by the index lock).
func writeRuns(f *os.File, ws []diff.Write) error {
	var run []byte
	var at int64
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		_, err := f.WriteAt(run, at)
		run = run[:0]
		return err
	}
	for _, w := range ws {
		if len(run) > 0 && at+int64(len(run)) == w.Off {
			run = append(run, w.New...)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		at = w.Off
		run = append(run, w.New...)
	}
	return flush()
}

// readIndex maps the locked cyrus.index read-only and shared, as Cyrus
// itself reads it: diff.Apply then touches only the pages its binary
// searches and records need, instead of a copy of the whole file (a 100k
// message mailbox is 11 MB). Writes made through the descriptor are visible
// in the mapping (one page cache). done unmaps it.
//
// Cyrus never truncates an index in place (a repack renames a new file
// over it), and we hold the index lock, so the mapping cannot shrink under
// us; should it anyway, access faults become a panic that guardFault turns
// into an error instead of killing the daemon.
func readIndex(m *mailboxLock) ([]byte, func(), error) {
	fi, err := m.index.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("stat index: %w", err)
	}
	size := fi.Size()
	if size == 0 {
		return nil, func() {}, nil // diff.Apply reports the truncated header
	}
	if size != int64(int(size)) {
		return nil, nil, fmt.Errorf("map %s: %d bytes is too large", m.path, size)
	}
	b, err := unix.Mmap(int(m.index.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", m.path, err)
	}
	return b, func() { unix.Munmap(b) }, nil
}

// guardFault makes a memory fault on the current goroutine (a mapped file
// shrunk) a recoverable panic, and turns that panic into *err.
func guardFault(path string, err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			re, ok := r.(runtime.Error)
			if !ok || !strings.Contains(re.Error(), "fault") {
				panic(r)
			}
			*err = fmt.Errorf("read %s: file shrank while mapped: %v", path, re)
		}
	}
}

// writeMailboxHeader replaces cyrus.header the way Cyrus does: write
// cyrus.header.NEW (same owner and mode), fsync, rename over, fsync the
// directory.
func writeMailboxHeader(path string, b []byte) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat mailbox header: %w", err)
	}
	err = writeFileAtomic(path, path+".NEW", b, fi.Mode().Perm(), func(f *os.File) error { return chownLike(f, path) })
	if err != nil {
		return fmt.Errorf("write mailbox header %s: %w", path, err)
	}
	return nil
}

// Recover replays the redo files a crash left behind: for each, it locks
// the mailbox, repairs an index header the crash left inconsistent with the
// records, re-applies the batch (idempotent) and removes the redo file. It
// must run before Apply is used. Errors for single mailboxes are joined;
// their redo files stay for the next attempt.
func (a *Applier) Recover(ctx context.Context) error {
	dir := filepath.Join(a.cfg.StateDir, redoDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(dir, name)
		if strings.HasSuffix(name, tmpSuffix) {
			// A redo file that was never renamed into place: its batch
			// never touched the index.
			os.Remove(path)
			continue
		}
		id, ok := strings.CutSuffix(name, redoSuffix)
		if !ok || diff.ValidUniqueID(id) != nil {
			a.log.Warn("ignoring stray file in redo dir", zap.String("path", path))
			continue
		}
		if err := a.recoverOne(ctx, id, path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *Applier) recoverOne(ctx context.Context, id, path string) error {
	enc, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("recover %s: %w", id, err)
	}
	b, err := diff.DecodeBatch(enc)
	if err != nil {
		return fmt.Errorf("recover %s: redo file %s: %w", id, path, err)
	}
	if b.Mailbox != id {
		return fmt.Errorf("recover %s: redo file %s holds a batch for %s", id, path, b.Mailbox)
	}
	release, err := a.acquire(ctx, id)
	if err != nil {
		return fmt.Errorf("recover %s: %w", id, err)
	}
	defer release()
	dir, err := a.loc.find(id)
	if errors.Is(err, ErrNotFound) {
		a.log.Warn("redo batch for a mailbox no longer on the spool; dropped", zap.String("mailbox", id))
		return os.Remove(path)
	}
	if err != nil {
		return fmt.Errorf("recover %s: %w", id, err)
	}
	res, err := a.applyAndFinish(ctx, id, dir, b, path, true)
	if err != nil {
		return fmt.Errorf("recover %s: %w", id, err)
	}
	a.log.Info("replayed interrupted batch", zap.String("mailbox", id), zap.Int("applied", res.Applied),
		zap.Int("stale", res.Stale), zap.Uint64("position", res.Position))
	return nil
}

// States reports every mailbox on the spool with its uidvalidity, the
// replica's position and synccrcs.basic, for catch-up when a link connects.
func (a *Applier) States(ctx context.Context) ([]diff.MailboxState, error) {
	mbs, err := a.loc.scan()
	if err != nil {
		return nil, err
	}
	out := make([]diff.MailboxState, 0, len(mbs))
	for _, mb := range mbs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := a.readHeader(ctx, mb)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted since the scan
		}
		if err != nil {
			return nil, err
		}
		out = append(out, diff.MailboxState{Mailbox: mb.ID, UIDValidity: h.UIDValidity,
			HighestModSeq: a.pos.get(mb.ID, h.UIDValidity), SyncCRC: h.SyncCRCBasic})
	}
	return out, nil
}

// readHeader reads a mailbox's index header under shared locks.
func (a *Applier) readHeader(ctx context.Context, mb mailboxDir) (*diff.Header, error) {
	m, err := lockMailbox(ctx, a.lockDir, mb.ID, mb.Dir, false)
	if err != nil {
		return nil, err
	}
	defer m.unlock()
	b := make([]byte, 160)
	n, err := m.index.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", m.path, err)
	}
	return diff.DecodeHeader(m.path, b[:n])
}
