package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/indexwire/indexwire/net/link"
	"go.uber.org/zap"
)

// fakeSender records batches; fail decides per batch whether Send fails.
type fakeSender struct {
	mu   sync.Mutex
	sent []*diff.Batch
	fail func(b *diff.Batch, n int) error
	pos  uint64 // the position acks report
}

func (f *fakeSender) Send(_ context.Context, b *diff.Batch) (link.Ack, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, b)
	if f.fail != nil {
		if err := f.fail(b, len(f.sent)); err != nil {
			return link.Ack{}, err
		}
	}
	if b.OldHighestModSeq <= f.pos {
		f.pos = max(f.pos, b.HighestModSeq)
	}
	return link.Ack{Applied: uint64(len(b.Records)), HighestModSeq: f.pos}, nil
}

func (f *fakeSender) batches() []*diff.Batch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*diff.Batch(nil), f.sent...)
}

// spoolWithMailbox lays the committed v17 fixture out as a mailbox in a spool.
func spoolWithMailbox(t *testing.T) (spool, rel string, ix *diff.Index, mb diff.MailboxInfo) {
	spool = t.TempDir()
	rel = filepath.Join("uuid", "i", "9", "mbox")
	dir := filepath.Join(spool, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"cyrus.index", "cyrus.header"} {
		b, err := os.ReadFile(filepath.Join(testdata, "v17", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ix, mb, err := readMailbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	return spool, rel, ix, mb
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A commit the overlay could not diff is re-derived from the index at once.
func TestShipperResyncAfterFailedCommit(t *testing.T) {
	spool, rel, ix, mb := spoolWithMailbox(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fs := &fakeSender{}
	s := newShipper(ctx, fs, spool, zap.NewNop())
	s.Resync(ctx, rel)
	waitFor(t, "catch-up batch", func() bool { return len(fs.batches()) == 1 })
	b := fs.batches()[0]
	live := 0
	for _, r := range ix.Records {
		if r.ModSeq > 0 {
			live++
		}
	}
	if b.Mailbox != mb.UniqueID || b.OldHighestModSeq != 0 || b.HighestModSeq != ix.Header.HighestModSeq || len(b.Records) != live {
		t.Fatalf("batch %+v (%d records, want %d)", b, len(b.Records), live)
	}
	cancel()
	s.wait()
}

// A batch lost on the way is re-derived from the index, from the replica's
// last reported position; a batch the replica refused is not sent again.
func TestShipperRederivesLostBatch(t *testing.T) {
	spool, _, ix, mb := spoolWithMailbox(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hms := ix.Header.HighestModSeq
	fs := &fakeSender{pos: hms - 4, fail: func(b *diff.Batch, n int) error {
		if n == 1 {
			return errors.New("stream reset")
		}
		return nil
	}}
	s := newShipper(ctx, fs, spool, zap.NewNop())
	s.mu.Lock()
	s.known[mb.UniqueID] = filepath.Join(spool, "uuid", "i", "9", "mbox")
	mq := s.queueLocked(mb.UniqueID)
	mq.pos, mq.known = hms-4, true // as the replica reported at connect
	s.mu.Unlock()
	lost := &diff.Batch{Mailbox: mb.UniqueID, UIDValidity: ix.Header.UIDValidity, OldHighestModSeq: hms - 1, HighestModSeq: hms}
	s.Commit(ctx, lost)
	waitFor(t, "re-derived batch", func() bool { return len(fs.batches()) == 2 })
	b := fs.batches()[1]
	want := 0
	for _, r := range ix.Records {
		if r.ModSeq > hms-4 {
			want++
		}
	}
	if b.OldHighestModSeq != hms-4 || len(b.Records) != want || want == 0 {
		t.Fatalf("re-derived batch from %d with %d records, want from %d with %d", b.OldHighestModSeq, len(b.Records), hms-4, want)
	}

	refused := &fakeSender{fail: func(*diff.Batch, int) error { return link.ErrBatchRefused }}
	s2 := newShipper(ctx, refused, spool, zap.NewNop())
	s2.Commit(ctx, lost)
	time.Sleep(100 * time.Millisecond)
	if n := len(refused.batches()); n != 1 {
		t.Fatalf("a refused batch was sent %d times", n)
	}
	cancel()
	s.wait()
	s2.wait()
}

// A batch too large for one frame is replaced by a catch-up in chunks.
func TestShipperSplitsOversizeBatch(t *testing.T) {
	spool, _, ix, mb := spoolWithMailbox(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fs := &fakeSender{fail: func(b *diff.Batch, _ int) error {
		if len(b.Records) > 3 {
			return fmt.Errorf("send batch: %w", link.ErrFrameTooLarge)
		}
		return nil
	}}
	s := newShipper(ctx, fs, spool, zap.NewNop())
	s.chunk = 2
	s.mu.Lock()
	s.known[mb.UniqueID] = filepath.Join(spool, "uuid", "i", "9", "mbox")
	s.mu.Unlock()
	big := diff.Since(ix, mb, 0, 1000)[0] // every record in one batch
	s.Commit(ctx, big)
	waitFor(t, "chunks", func() bool {
		bs := fs.batches()
		return len(bs) > 1 && bs[len(bs)-1].HighestModSeq == ix.Header.HighestModSeq && !bs[len(bs)-1].Partial
	})
	got := map[uint32]bool{}
	for _, b := range fs.batches()[1:] {
		if len(b.Records) > 3 {
			t.Fatalf("chunk of %d records", len(b.Records))
		}
		for _, d := range b.Records {
			got[d.UID] = true
		}
	}
	if len(got) != len(big.Records) {
		t.Fatalf("chunks carried %d of %d records", len(got), len(big.Records))
	}
	cancel()
	s.wait()
}
