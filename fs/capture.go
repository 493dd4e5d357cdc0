package fs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"go.uber.org/zap"

	"github.com/indexwire/indexwire/diff"
)

// capture is the write capture of one open index inode: the writes since its
// last commit, each with the bytes it replaced (Rule 2: a batch is one Cyrus
// commit).
type capture struct {
	mu       sync.Mutex
	rf       *os.File // the daemon's own read descriptor on the backing file
	pending  []diff.Write
	header   bool      // a pending write started at offset 0
	writer   *hookFile // handle of the last captured write
	hasSnap  bool      // snapshot holds the whole file as it was before the commit
	snapshot []byte    // (set by a truncation; the commit is then a whole-file diff)
	broken   error     // reading old bytes failed; the commit cannot be diffed
}

// dirty reports whether anything waits for a commit.
func (c *capture) dirty() bool { return len(c.pending) > 0 || c.hasSnap }

// write reads the bytes about to be replaced, performs the write, and keeps
// both. Writes to a file not (or no longer) named cyrus.index pass through:
// cyrus.index.NEW is diffed whole when it is renamed into place.
// h is the handle written through (nil in no-open mode).
func (c *capture) write(n *node, h *hookFile, data []byte, off int64, do func() (uint32, syscall.Errno)) (uint32, syscall.Errno) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.name() != indexName {
		return do()
	}
	var old []byte
	if !c.hasSnap {
		old = make([]byte, len(data))
		k, err := c.rf.ReadAt(old, off)
		if err != nil && err != io.EOF && c.broken == nil {
			c.broken = fmt.Errorf("read %d old bytes at %d: %w", len(data), off, err)
		}
		old = old[:k]
	}
	w, errno := do()
	if errno != 0 || w == 0 {
		return w, errno
	}
	n.ov.stats.writes.Add(1)
	if !c.hasSnap {
		c.pending = append(c.pending, diff.Write{Off: off, Old: old[:min(len(old), int(w))], New: bytes.Clone(data[:w])})
	}
	if off == 0 {
		c.header = true
	}
	c.writer = h
	return w, errno
}

// fsynced closes the commit if the header has been written since the last
// one: Cyrus writes records, then the header at 0, then fsyncs.
func (c *capture) fsynced(ctx context.Context, n *node, errno syscall.Errno) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.header || n.name() != indexName {
		return
	}
	if errno != 0 {
		c.reset()
		n.ov.commitFailed(n.relPath(), "fsync", fmt.Errorf("fsync: %w", errno))
		return
	}
	c.commitLocked(ctx, n, "fsync")
}

// releasing commits what the closing handle wrote and never fsynced.
func (c *capture) releasing(ctx context.Context, h *hookFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writer != h {
		return
	}
	c.writer = nil
	if !c.dirty() {
		return
	}
	if h.n.name() != indexName {
		c.reset()
		return
	}
	c.commitLocked(ctx, h.n, "close")
}

// beforeTruncate switches the commit to a whole-file diff against the file as
// it was before the commit began. Truncating an empty file changes nothing,
// and its writes stay a plain write diff.
func (c *capture) beforeTruncate(n *node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hasSnap || n.name() != indexName {
		return
	}
	cur, err := readWhole(c.rf)
	if err != nil {
		c.broken = fmt.Errorf("read file before truncate: %w", err)
		return
	}
	if snap := diff.UndoWrites(cur, c.pending); len(snap) > 0 {
		c.hasSnap, c.snapshot, c.pending = true, snap, nil
	}
}

func (c *capture) reset() {
	c.pending, c.header, c.hasSnap, c.snapshot, c.broken = nil, false, false, nil, nil
}

// commitLocked turns what is pending into one batch for the sink.
func (c *capture) commitLocked(ctx context.Context, n *node, reason string) {
	defer n.ov.stats.since(time.Now(), &n.ov.stats.commitNanos)
	writes, hasSnap, snap, broken := c.pending, c.hasSnap, c.snapshot, c.broken
	c.reset()
	rel := n.relPath()
	if broken != nil {
		n.ov.commitFailed(rel, reason, broken)
		return
	}
	mb, err := n.ov.mailboxInfo(filepath.Dir(n.backingPath()))
	if err != nil {
		n.ov.commitFailed(rel, reason, err)
		return
	}
	var b *diff.Batch
	if hasSnap {
		var cur []byte
		if cur, err = readWhole(c.rf); err == nil {
			b, err = diff.DiffFiles(rel, snap, cur, mb)
		}
	} else {
		var st os.FileInfo
		if st, err = c.rf.Stat(); err == nil {
			b, err = diff.DiffWrites(rel, c.rf, st.Size(), writes, mb)
		}
	}
	if err != nil {
		n.ov.commitFailed(rel, reason, err)
		return
	}
	n.ov.deliver(ctx, rel, reason, b)
}

func (c *capture) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rf.Close()
}

func readWhole(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, st.Size())
	k, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return b[:k], nil
}

// overlay is the state shared by every node of one mount.
type overlay struct {
	root     *gofs.LoopbackRoot
	rootPath string
	sink     Sink
	log      *zap.Logger
	stats    stats
	noOpen   bool    // Config.NoOpen
	bare     bareFds // no-open mode: nodes holding a descriptor
}

type stats struct {
	opens, hookedOpens, writes, batches, failures atomic.Int64
	commitNanos, fsyncNanos                       atomic.Int64
}

// Stats are counters of one mount.
type Stats struct {
	Opens       int64 // OPEN requests (in no-open mode only the first, answered ENOSYS)
	HookedOpens int64 // opens served through the daemon (index files)
	Writes      int64 // writes captured on cyrus.index
	Batches     int64 // batches handed to the sink
	Failures    int64 // commits that could not be turned into a batch
	// CommitTime is the time spent turning commits into batches and handing
	// them to the sink (Cyrus waits for it inside its fsync or close).
	CommitTime time.Duration
	// FsyncTime is the time spent in fsync of hooked backing files.
	FsyncTime time.Duration
}

// since adds the time elapsed since t0 to a nanosecond counter.
func (s *stats) since(t0 time.Time, c *atomic.Int64) { c.Add(int64(time.Since(t0))) }

func (ov *overlay) rootInode() *gofs.Inode { return ov.root.RootNode.EmbeddedInode() }

// mailboxInfo reads the mailbox's unique id and keyword names from the
// cyrus.header beside its index, at commit time: a STORE of a new keyword
// renames a new cyrus.header into place before it writes the index.
func (ov *overlay) mailboxInfo(dir string) (diff.MailboxInfo, error) {
	p := filepath.Join(dir, "cyrus.header")
	b, err := os.ReadFile(p)
	if err != nil {
		return diff.MailboxInfo{}, fmt.Errorf("read mailbox header: %w", err)
	}
	h, err := diff.ParseMailboxHeader(p, b)
	if err != nil {
		return diff.MailboxInfo{}, fmt.Errorf("parse mailbox header: %w", err)
	}
	return diff.MailboxInfo{UniqueID: h.UniqueID, UserFlags: h.UserFlags}, nil
}

// commitFiles diffs a replaced index against the one renamed over it.
func (ov *overlay) commitFiles(ctx context.Context, rel, dir string, old []byte, newPath string) {
	defer ov.stats.since(time.Now(), &ov.stats.commitNanos)
	cur, err := os.ReadFile(newPath)
	if err != nil {
		ov.commitFailed(rel, "rename", fmt.Errorf("read new index: %w", err))
		return
	}
	mb, err := ov.mailboxInfo(dir)
	if err != nil {
		ov.commitFailed(rel, "rename", err)
		return
	}
	b, err := diff.DiffFiles(rel, old, cur, mb)
	if err != nil {
		ov.commitFailed(rel, "rename", err)
		return
	}
	b.Repack = true
	ov.deliver(ctx, rel, "rename", b)
}

func (ov *overlay) deliver(ctx context.Context, rel, reason string, b *diff.Batch) {
	if b == nil {
		return
	}
	ov.stats.batches.Add(1)
	if ce := ov.log.Check(zap.DebugLevel, "commit"); ce != nil {
		ce.Write(zap.String("path", rel), zap.String("at", reason), zap.String("mailbox", b.Mailbox),
			zap.Int("records", len(b.Records)), zap.Uint64("highestmodseq", b.HighestModSeq))
	}
	ov.sink.Commit(ctx, b)
}

// commitFailed logs a commit that produced no batch and asks the sink, if it
// can, to re-derive the mailbox from its index (Rule 1), so nothing is lost.
func (ov *overlay) commitFailed(rel, reason string, err error) {
	ov.stats.failures.Add(1)
	ov.log.Error("index commit not captured", zap.String("path", rel), zap.String("at", reason), zap.Error(err))
	if r, ok := ov.sink.(Resyncer); ok {
		r.Resync(context.Background(), filepath.Dir(rel))
	}
}
