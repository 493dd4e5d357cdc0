package tests

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// The replica daemon is down while the primary changes flags, adds a
// keyword and expunges. Nothing is queued durably on the primary: when the
// daemon is back, the mount catches the mailbox up from its index by
// modseq, and nothing is lost.
func TestReplicaDaemonDownThenCatchUp(t *testing.T) {
	s := newStory(t, pairOpts())
	if err := s.p.StopServe(false); err != nil {
		t.Fatal(err)
	}
	s.store("1:5", "+FLAGS", `\Seen`)
	s.store("7", "+FLAGS", "$Down")
	s.store("8,9", "+FLAGS", `\Deleted`)
	s.expunge()
	s.store("10", "FLAGS", `\Answered`, `\Flagged`)
	s.store("2", "-FLAGS", `\Seen`)
	time.Sleep(200 * time.Millisecond) // the mount tries, and fails, to deliver
	if err := s.p.Converged(); err == nil {
		t.Fatal("replica converged while its daemon was down")
	}
	s.expectReplica(1) // unchanged: nobody wrote its index

	start := time.Now()
	if err := s.p.StartServe(); err != nil {
		t.Fatal(err)
	}
	took := s.converge()
	t.Logf("replica daemon restarted: converged %v after StartServe (%v of it waiting for IMAP to agree)", time.Since(start), took)
	s.expectReplica(1, `\Seen`)
	s.expectReplica(2)
	s.expectReplica(7, "$Down")
	s.expectReplica(10, `\Answered`, `\Flagged`)
	if _, ok := s.replica()[8]; ok {
		t.Fatal("replica shows uid 8, expunged while its daemon was down")
	}

	// And the link carries live changes again.
	s.store("11", "+FLAGS", `\Seen`)
	s.converge()
	s.expectReplica(11, `\Seen`)
}

// kill -9 of the replica daemon in the middle of a burst of 200 single
// STOREs; it is restarted while the burst goes on. Whatever was in flight
// or queued when it died is re-derived from the primary's index.
func TestReplicaDaemonKilledMidBurst(t *testing.T) {
	s := newStory(t, pairOpts())
	const burst = 200
	var done atomic.Int32
	errc := make(chan error, 1)
	go func() {
		// The story's session belongs to this goroutine until errc is read.
		flags := []string{`\Seen`, `\Flagged`, `\Answered`, "$Burst"}
		for i := range burst {
			uid := i%20 + 1
			op := "+FLAGS"
			if (i/20)%2 == 1 {
				op = "-FLAGS"
			}
			if _, err := s.c.Store(fmt.Sprint(uid), op, flags[(i/40)%len(flags)]); err != nil {
				errc <- fmt.Errorf("store %d of the burst: %w", i, err)
				return
			}
			done.Add(1)
		}
		errc <- nil
	}()
	for done.Load() < burst/4 {
		time.Sleep(time.Millisecond)
	}
	if err := s.p.StopServe(true); err != nil {
		t.Fatal(err)
	}
	killedAt := done.Load()
	time.Sleep(100 * time.Millisecond)
	if err := s.p.StartServe(); err != nil {
		t.Fatal(err)
	}
	restartedAt := done.Load()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if restartedAt >= burst {
		t.Logf("burst ended before the daemon was back (killed after %d STOREs)", killedAt)
	}
	took := s.converge()
	t.Logf("replica daemon killed after %d of %d STOREs, back after %d; converged %v after the burst", killedAt, burst, restartedAt, took)
	// The batch in flight at the kill is never acknowledged; the primary
	// must learn that from the restarted replica's stateless reset, not
	// from its 15 s heartbeat timeout.
	if took > 10*time.Second {
		t.Fatalf("converged only %v after the burst: the primary waited for the heartbeat timeout", took)
	}
	// Each round of 40 STOREs adds one flag to all 20 UIDs and removes it
	// again, so every UID ends without flags.
	for uid, m := range s.replica() {
		if len(normFlags(m.Flags)) != 0 {
			t.Fatalf("replica uid %d flags %v after the burst, want none", uid, m.Flags)
		}
	}
	p := s.index(s.p.Primary).Header.HighestModSeq
	if p < burst {
		t.Fatalf("primary highestmodseq %d after %d STOREs", p, burst)
	}
}

// kill -9 of the mount daemon: the FUSE mount dies under Cyrus, whose open
// files are now dead, so the test restarts Cyrus. Changes made just before
// the kill arrive after the new mount, which clears the stale one,
// connects and catches up by modseq: first changes made while the replica
// daemon was unreachable (so only the primary's index holds them), then a
// burst with the link up and the kill right after it.
func TestMountDaemonKilledThenRestarted(t *testing.T) {
	s := newStory(t, pairOpts())
	s.store("1", "+FLAGS", `\Seen`)
	s.converge()

	if err := s.p.StopServe(false); err != nil {
		t.Fatal(err)
	}
	s.store("2:4", "+FLAGS", `\Flagged`)
	s.store("5", "+FLAGS", "$BeforeKill")
	s.store("6", "+FLAGS", `\Deleted`)
	s.expunge()
	s.store("1", "-FLAGS", `\Seen`)
	s.killMount()
	if err := s.p.StartServe(); err != nil {
		t.Fatal(err)
	}
	took := s.restartMount()
	t.Logf("changes made with the replica daemon down: converged %v after StartMount (Cyrus restart included)", took)
	s.expectReplica(1)
	s.expectReplica(3, `\Flagged`)
	s.expectReplica(5, "$BeforeKill")
	if _, ok := s.replica()[6]; ok {
		t.Fatal("replica shows uid 6, expunged before the kill")
	}

	// Again with the link up: a burst, and the kill right after its last
	// STORE, while batches may still be in flight.
	for uid := 10; uid <= 19; uid++ {
		s.store(strconv.Itoa(uid), "+FLAGS", `\Seen`, "$Burst")
	}
	s.store("10:19", "-FLAGS", "$Burst")
	s.killMount()
	took = s.restartMount()
	t.Logf("burst right before the kill: converged %v after StartMount (Cyrus restart included)", took)
	s.expectReplica(15, `\Seen`)

	// The new mount captures Cyrus's writes.
	s.store("7:9", "+FLAGS", `\Answered`)
	s.converge()
	s.expectReplica(8, `\Answered`)
}

// killMount kills the mount daemon with SIGKILL and stops the primary's
// Cyrus, whose files on the dead mount are unusable.
func (s *story) killMount() {
	s.t.Helper()
	if err := s.p.StopMount(true); err != nil {
		s.t.Fatal(err)
	}
	s.c.Close()
	s.c = nil
	if err := s.p.Primary.Stop(); err != nil {
		s.t.Fatal(err)
	}
}

// restartMount mounts again (over the dead mount), restarts the primary's
// Cyrus on it and waits for both sides to converge; it returns the time
// from StartMount to convergence.
func (s *story) restartMount() time.Duration {
	s.t.Helper()
	start := time.Now()
	if err := s.p.StartMount(); err != nil {
		s.t.Fatal(err)
	}
	if err := s.p.Primary.Restart(); err != nil {
		s.t.Fatal(err)
	}
	s.connect()
	s.converge()
	return time.Since(start)
}
