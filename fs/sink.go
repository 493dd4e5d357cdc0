package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/indexwire/indexwire/diff"
)

// Sink receives one batch per Cyrus commit. Commit is called synchronously
// from the FUSE request that closes the commit (an fsync, a release or a
// rename of cyrus.index), while Cyrus still holds its index lock, so it must
// not block long: queue the batch and return. Commit must not keep b's
// slices past the call unless it owns them (the overlay does not reuse them).
type Sink interface {
	Commit(ctx context.Context, b *diff.Batch)
}

// Resyncer is implemented by a Sink that can re-derive a mailbox's changes
// from its index. When a commit cannot be turned into a batch, the overlay
// calls Resync with the mailbox directory relative to the mount's root, so
// the change is not left waiting for the mailbox's next commit (Rule 1: the
// index is the source of truth). Like Commit, it must not block.
type Resyncer interface {
	Resync(ctx context.Context, dir string)
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(ctx context.Context, b *diff.Batch)

// Commit calls f.
func (f SinkFunc) Commit(ctx context.Context, b *diff.Batch) { f(ctx, b) }

type discardSink struct{}

func (discardSink) Commit(context.Context, *diff.Batch) {}

// JSONSink writes each batch as one JSON line to W (the --log-deltas
// format, diff.Batch's MarshalJSON). Errors writing are
// reported to OnError if set, else dropped (the index stays the source of
// truth).
type JSONSink struct {
	mu      sync.Mutex
	W       io.Writer
	OnError func(error)
}

// NewJSONSink returns a JSONSink writing to w.
func NewJSONSink(w io.Writer) *JSONSink { return &JSONSink{W: w} }

// Commit writes b as one JSON line.
func (s *JSONSink) Commit(_ context.Context, b *diff.Batch) {
	line, err := json.Marshal(b)
	if err == nil {
		line = append(line, '\n')
		s.mu.Lock()
		_, err = s.W.Write(line)
		s.mu.Unlock()
	}
	if err != nil && s.OnError != nil {
		s.OnError(fmt.Errorf("write delta line for %s: %w", b.Mailbox, err))
	}
}
