package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/indexwire/indexwire/net/relay"
)

// badLink is the impaired path: 5 % loss, 2 % reorder, 1 %
// duplication and 20 ms delay, each way, from a fixed seed.
func badLink() *relay.Config {
	return &relay.Config{Loss: 0.05, Reorder: 0.02, Duplicate: 0.01, Delay: 20 * time.Millisecond, Seed: 6}
}

// Over a lossy, reordering, duplicating link, with a 30 s blackout in the
// middle of a burst of 10 000 flag changes, the replica ends equal to the
// primary, and the logs say what happened: one line per disconnect,
// reconnect and catch-up.
func TestBurstThroughImpairedLinkWithBlackout(t *testing.T) {
	if testing.Short() {
		t.Skip("45 s scenario; skipped with -short")
	}
	opts := pairOpts()
	opts.Messages = 250
	opts.Relay = badLink()
	s := newStory(t, opts)
	r := s.p.Relay()

	// 40 STOREs over all 250 UIDs: 10 000 record changes, each with its own modseq.
	flags := []string{`\Seen`, `\Flagged`, `$Label1`, `\Answered`}
	const rounds = 40
	blackoutAt := rounds / 2
	start := time.Now()
	for i := range rounds {
		if i == blackoutAt {
			r.BlackoutFor(30 * time.Second)
			t.Logf("blackout for 30 s after %d changes", i*opts.Messages)
		}
		op := "+FLAGS"
		if (i/len(flags))%2 == 1 {
			op = "-FLAGS"
		}
		res := s.store(fmt.Sprintf("1:%d", opts.Messages), op, flags[i%len(flags)])
		if len(res) != opts.Messages {
			t.Fatalf("store %d changed %d messages", i, len(res))
		}
		if i >= blackoutAt && i < blackoutAt+5 {
			time.Sleep(time.Second) // spread part of the burst over the blackout
		}
	}
	t.Logf("burst of %d changes made in %v", rounds*opts.Messages, time.Since(start))
	took := s.convergeWithin(90 * time.Second)
	st := r.Stats()
	t.Logf("converged %v after the burst; relay up: %+v", took, st.Up)
	if st.Up.Dropped == 0 || st.Up.BlackedOut == 0 || st.Up.Duplicated == 0 {
		t.Fatalf("the relay did not impair the link: %+v", st.Up)
	}
	logs := s.logs.String()
	for _, event := range []string{"catch-up started", "catch-up finished"} {
		if !strings.Contains(logs, event) {
			t.Errorf("no %q line in the daemon logs", event)
		}
	}
	if n := strings.Count(logs, `"msg":"connected`); n < 2 {
		t.Errorf("%d connect lines in the logs, want a reconnect after the blackout", n)
	}
}

// The standby's address changes (the replica daemon restarts on a new
// port); the primary reconnects by itself and nothing is lost.
func TestReplicaPortChange(t *testing.T) {
	opts := pairOpts()
	opts.Relay = &relay.Config{Seed: 7}
	s := newStory(t, opts)
	s.store("1:10", "+FLAGS", `\Seen`)
	s.converge()
	old := s.p.LinkAddr
	if err := s.p.MoveReplica(); err != nil {
		t.Fatal(err)
	}
	s.store("5:15", "+FLAGS", `\Flagged`)
	s.store("2", "-FLAGS", `\Seen`)
	took := s.converge()
	t.Logf("replica moved %s -> %s; converged %v after the changes", old, s.p.LinkAddr, took)
	s.expectReplica(5, `\Seen`, `\Flagged`)
	s.expectReplica(2)
}

// convergeWithin is converge with a longer first wait, for scenarios
// whose link needs time to recover.
func (s *story) convergeWithin(d time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	if err := s.p.WaitConverged(d); err != nil {
		s.t.Fatalf("not converged after %v: %v", d, err)
	}
	s.converge()
	return time.Since(start)
}
