package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/indexwire/indexwire/net/link"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// maxQueuedPerMailbox bounds what waits in memory for one mailbox. Past it
// the queue is dropped and the mailbox is caught up from its index instead
// (Rule 1: a batch is an optimisation of catch-up, never the only copy).
const maxQueuedPerMailbox = 1024

// batchSender is the part of link.Sender the shipper uses.
type batchSender interface {
	Send(ctx context.Context, b *diff.Batch) (link.Ack, error)
}

// shipper is the primary's fs.Sink: it sends each committed batch to the
// replica, one goroutine per busy mailbox so a slow mailbox never holds up
// another (Rule 9), in commit order within a mailbox. When an Ack shows the
// replica's position behind the batch (a batch was lost or reordered), it
// re-derives the gap from the mailbox's index.
type shipper struct {
	ctx    context.Context
	send   batchSender
	spool  string // read indexes here (the mountpoint, so Cyrus's locks apply)
	log    *zap.Logger
	chunk  int
	wg     sync.WaitGroup
	mu     sync.Mutex
	queues map[string]*mailboxQueue
	known  map[string]string // unique id -> mailbox directory, for catch-up

	pending           atomic.Int64
	dropped, catchUps atomic.Uint64
	oldestUnacked     atomic.Int64 // unix nanos of the oldest batch in flight, 0 if none
	lastAck           atomic.Int64
}

type mailboxQueue struct {
	items   []queued
	running bool
	gap     bool   // the replica needs a catch-up for this mailbox
	since   uint64 // from this modseq on
	pos     uint64 // the replica's position as last reported (ack or Hello)
	known   bool   // pos has been reported
}

// retryDelay spaces catch-ups of a mailbox whose batches keep failing, so a
// broken stream does not turn into a busy loop.
const retryDelay = time.Second

type queued struct {
	b       *diff.Batch
	at      time.Time
	catchUp bool // re-derived from the index; its ack never triggers another catch-up
}

func newShipper(ctx context.Context, send batchSender, spool string, log *zap.Logger) *shipper {
	return &shipper{ctx: ctx, send: send, spool: spool, log: log, chunk: diff.DefaultCatchUpChunk,
		queues: map[string]*mailboxQueue{}, known: map[string]string{}}
}

// Commit implements fs.Sink. It never blocks on the network.
func (s *shipper) Commit(_ context.Context, b *diff.Batch) {
	rb, ok := b.ForReplica()
	if !ok {
		return // nothing the replica keeps changed (e.g. a repack, or cyr_expire's silent marks)
	}
	s.enqueue(b.Mailbox, queued{b: rb, at: time.Now()})
}

// queueLocked returns the mailbox's queue, creating it; s.mu is held.
func (s *shipper) queueLocked(id string) *mailboxQueue {
	mq := s.queues[id]
	if mq == nil {
		mq = &mailboxQueue{}
		s.queues[id] = mq
	}
	return mq
}

// startLocked starts the mailbox's drain goroutine unless it runs; s.mu is held.
func (s *shipper) startLocked(id string, mq *mailboxQueue) {
	if !mq.running && s.ctx.Err() == nil {
		mq.running = true
		s.wg.Add(1)
		go s.drain(id, mq)
	}
}

// gapLocked marks the mailbox for a catch-up from its index starting at the
// replica's last reported position, or at from if none was reported; s.mu
// is held.
func (s *shipper) gapLocked(mq *mailboxQueue, from uint64) {
	if mq.known {
		from = min(from, mq.pos)
	}
	if !mq.gap || from < mq.since {
		mq.gap, mq.since = true, from
	}
}

func (s *shipper) enqueue(id string, q queued) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mq := s.queueLocked(id)
	if len(mq.items) >= maxQueuedPerMailbox {
		s.gapLocked(mq, mq.items[0].b.OldHighestModSeq)
		s.dropped.Add(uint64(len(mq.items)))
		s.pending.Add(-int64(len(mq.items)))
		mq.items = nil
		s.log.Warn("queue full, mailbox will be caught up from its index", zap.String("mailbox", id))
	}
	mq.items = append(mq.items, q)
	s.pending.Add(1)
	s.startLocked(id, mq)
}

// Resync implements fs.Resyncer: a commit in dir (relative to the spool)
// could not be turned into a batch, so the mailbox is caught up from its
// index instead. It returns at once; the work runs on the mailbox's queue.
func (s *shipper) Resync(_ context.Context, dir string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		abs := filepath.Join(s.spool, dir)
		mh, err := readMailboxHeader(abs)
		if err != nil {
			s.log.Error("resync: mailbox unknown; it catches up at the next connect", zap.String("dir", dir), zap.Error(err))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.known[mh.UniqueID] = abs
		mq := s.queueLocked(mh.UniqueID)
		s.gapLocked(mq, 0)
		s.startLocked(mh.UniqueID, mq)
		s.log.Warn("resync: mailbox will be caught up from its index", zap.String("mailbox", mh.UniqueID), zap.Uint64("since", mq.since))
	}()
}

// drain sends one mailbox's batches in order until its queue is empty.
func (s *shipper) drain(id string, mq *mailboxQueue) {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if mq.gap {
			since := mq.since
			mq.gap = false
			s.mu.Unlock()
			s.catchUpMailbox(id, since)
			continue
		}
		if len(mq.items) == 0 || s.ctx.Err() != nil {
			mq.running = false
			s.mu.Unlock()
			return
		}
		q := mq.items[0]
		mq.items = mq.items[1:]
		s.mu.Unlock()
		s.pending.Add(-1)
		s.ship(id, mq, q)
	}
}

func (s *shipper) ship(id string, mq *mailboxQueue, q queued) {
	s.oldestUnacked.CompareAndSwap(0, q.at.UnixNano())
	ack, err := s.send.Send(s.ctx, q.b)
	s.oldestUnacked.Store(0)
	if err != nil {
		if s.ctx.Err() != nil {
			return
		}
		s.log.Warn("batch not delivered", zap.String("mailbox", id), zap.Uint64("highestmodseq", q.b.HighestModSeq), zap.Error(err))
		if errors.Is(err, link.ErrBatchRefused) {
			return // the replica said no (e.g. uidvalidity differs): sending again changes nothing
		}
		// Lost on the way: re-derive it (and anything after it) from the
		// index instead of waiting for the mailbox's next commit.
		if q.catchUp {
			select { // a catch-up that failed too: do not spin
			case <-s.ctx.Done():
				return
			case <-time.After(retryDelay):
			}
		}
		s.mu.Lock()
		s.gapLocked(mq, q.b.OldHighestModSeq)
		s.mu.Unlock()
		return
	}
	s.lastAck.Store(time.Now().UnixNano())
	s.mu.Lock()
	defer s.mu.Unlock()
	mq.pos, mq.known = ack.HighestModSeq, true
	// The replica's position is behind this batch: an earlier one was lost
	// or overtaken. Re-derive the gap from the index, once: a catch-up whose
	// ack still lags (records the replica lacks) waits for the next connect.
	if ack.HighestModSeq < q.b.OldHighestModSeq && !q.catchUp {
		s.gapLocked(mq, ack.HighestModSeq)
	}
}

// lag is how long the oldest unacknowledged batch has waited.
func (s *shipper) lag() time.Duration {
	if t := s.oldestUnacked.Load(); t != 0 {
		return time.Since(time.Unix(0, t))
	}
	return 0
}

// CatchUp is the link's reconnect hook: it compares the replica's reported
// positions with the primary's indexes and queues what the replica lacks.
func (s *shipper) CatchUp(ctx context.Context, states []diff.MailboxState) {
	start := time.Now()
	byID := map[string]diff.MailboxState{}
	for _, st := range states {
		byID[st.Mailbox] = st
	}
	dirs, err := findMailboxes(s.spool)
	if err != nil {
		s.log.Error("catch-up: scan spool", zap.Error(err))
		return
	}
	s.log.Info("catch-up started", zap.Int("primary_mailboxes", len(dirs)), zap.Int("replica_mailboxes", len(states)))
	var queued, upToDate, absent int
	lastLog := time.Now()
	for i, dir := range dirs {
		if ctx.Err() != nil {
			return
		}
		ix, mb, err := readMailbox(dir)
		if err != nil {
			s.log.Warn("catch-up: skip mailbox", zap.String("dir", dir), zap.Error(err))
			continue
		}
		st, ok := byID[mb.UniqueID]
		s.mu.Lock()
		s.known[mb.UniqueID] = dir
		if ok && st.UIDValidity == ix.Header.UIDValidity {
			mq := s.queueLocked(mb.UniqueID)
			mq.pos, mq.known = st.HighestModSeq, true
		}
		s.mu.Unlock()
		switch {
		case !ok:
			absent++
			s.log.Debug("catch-up: mailbox absent on replica", zap.String("mailbox", mb.UniqueID))
			continue
		case st.UIDValidity != ix.Header.UIDValidity:
			s.log.Warn("catch-up: uidvalidity differs, mailbox not replicated", zap.String("mailbox", mb.UniqueID),
				zap.Uint32("primary", ix.Header.UIDValidity), zap.Uint32("replica", st.UIDValidity))
			continue
		case st.HighestModSeq >= ix.Header.HighestModSeq:
			if st.SyncCRC != ix.Header.SyncCRCBasic && st.HighestModSeq == ix.Header.HighestModSeq {
				// Same position, different state: send every record so the
				// replica compares them all (Rule 8).
				s.log.Warn("catch-up: synccrcs.basic differs at equal highestmodseq, full compare", zap.String("mailbox", mb.UniqueID))
				s.queueSince(ix, mb, 0)
				queued++
				continue
			}
			upToDate++
			continue
		}
		s.queueSince(ix, mb, st.HighestModSeq)
		queued++
		if time.Since(lastLog) > 2*time.Second {
			s.log.Info("catch-up progress", zap.Int("scanned", i+1), zap.Int("of", len(dirs)), zap.Int("queued", queued))
			lastLog = time.Now()
		}
	}
	s.catchUps.Add(1)
	s.log.Info("catch-up finished", zap.Int("mailboxes_queued", queued), zap.Int("up_to_date", upToDate),
		zap.Int("absent_on_replica", absent), zap.Duration("took", time.Since(start)))
}

func (s *shipper) queueSince(ix *diff.Index, mb diff.MailboxInfo, since uint64) {
	for _, b := range diff.Since(ix, mb, since, s.chunk) {
		s.enqueue(mb.UniqueID, queued{b: b, at: time.Now(), catchUp: true})
	}
}

// catchUpMailbox re-reads one mailbox and sends what the replica lacks
// above since. It runs on the mailbox's own drain goroutine.
func (s *shipper) catchUpMailbox(id string, since uint64) {
	s.mu.Lock()
	dir, ok := s.known[id]
	s.mu.Unlock()
	if !ok {
		dirs, err := findMailboxes(s.spool)
		if err != nil {
			s.log.Error("catch-up: scan spool", zap.Error(err))
			return
		}
		for _, d := range dirs {
			if mh, err := readMailboxHeader(d); err == nil {
				s.mu.Lock()
				s.known[mh.UniqueID] = d
				s.mu.Unlock()
				if mh.UniqueID == id {
					dir, ok = d, true
				}
			}
		}
		if !ok {
			s.log.Warn("catch-up: mailbox not found on the primary", zap.String("mailbox", id))
			return
		}
	}
	ix, mb, err := readMailbox(dir)
	if err != nil {
		s.log.Warn("catch-up: read mailbox", zap.String("mailbox", id), zap.Error(err))
		return
	}
	bs := diff.Since(ix, mb, since, s.chunk)
	s.log.Info("gap: catching mailbox up from its index", zap.String("mailbox", id), zap.Uint64("since", since), zap.Int("batches", len(bs)))
	s.mu.Lock()
	mq := s.queues[id]
	// Catch-up goes before anything queued: it covers older modseqs.
	pre := make([]queued, 0, len(bs)+len(mq.items))
	for _, b := range bs {
		pre = append(pre, queued{b: b, at: time.Now(), catchUp: true})
	}
	mq.items = append(pre, mq.items...)
	s.pending.Add(int64(len(bs)))
	s.mu.Unlock()
}

// findMailboxes returns every directory under root holding a cyrus.index
// and a cyrus.header.
func findMailboxes(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if !d.IsDir() && d.Name() == "cyrus.index" {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), "cyrus.header")); err == nil {
				out = append(out, filepath.Dir(p))
			}
		}
		return nil
	})
	return out, err
}

func readMailboxHeader(dir string) (*diff.MailboxHeader, error) {
	p := filepath.Join(dir, "cyrus.header")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return diff.ParseMailboxHeader(p, b)
}

// readMailbox reads a mailbox's index under a shared fcntl lock on
// cyrus.index (the lock Cyrus's readers take), so no commit is half seen.
func readMailbox(dir string) (*diff.Index, diff.MailboxInfo, error) {
	mh, err := readMailboxHeader(dir)
	if err != nil {
		return nil, diff.MailboxInfo{}, err
	}
	p := filepath.Join(dir, "cyrus.index")
	f, err := os.Open(p)
	if err != nil {
		return nil, diff.MailboxInfo{}, err
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &lk); err != nil {
		return nil, diff.MailboxInfo{}, fmt.Errorf("lock %s: %w", p, err)
	}
	b, err := io.ReadAll(f)
	lk.Type = unix.F_UNLCK
	_ = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	if err != nil {
		return nil, diff.MailboxInfo{}, fmt.Errorf("read %s: %w", p, err)
	}
	ix, err := diff.DecodeIndex(p, b)
	if err != nil {
		return nil, diff.MailboxInfo{}, err
	}
	return ix, diff.MailboxInfo{UniqueID: mh.UniqueID, UserFlags: mh.UserFlags}, nil
}

// wait blocks until every mailbox goroutine has stopped.
func (s *shipper) wait() { s.wg.Wait() }
