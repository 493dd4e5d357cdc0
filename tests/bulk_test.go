package tests

import (
	"slices"
	"testing"
	"time"

	"github.com/indexwire/indexwire/tests/pair"
)

// One STORE touching 1000 UIDs is one Cyrus commit and one batch; the
// replica shows all 1000 changes, and the time from the tagged OK of the
// STORE until the last one is visible over IMAP is logged. Then the same
// for a removal and a FLAGS replace over the whole mailbox.
func TestThousandUIDStore(t *testing.T) {
	const n = 1000
	s := newStory(t, pair.Options{Messages: n})
	steps := []struct {
		op    string
		flags []string
		want  func(flags []string) bool
	}{
		{"+FLAGS", []string{`\Flagged`}, func(f []string) bool { return slices.Contains(f, `\Flagged`) }},
		{"FLAGS", []string{`\Seen`, "$Bulk"}, func(f []string) bool {
			return slices.Contains(f, `\Seen`) && slices.Contains(f, "$Bulk") && !slices.Contains(f, `\Flagged`)
		}},
		{"-FLAGS", []string{`\Seen`}, func(f []string) bool { return !slices.Contains(f, `\Seen`) }},
	}
	for _, st := range steps {
		start := time.Now()
		res := s.store(uidRange(1, n), st.op, st.flags...)
		stored := time.Since(start)
		if len(res) != n {
			t.Fatalf("store 1:%d %s: %d FETCH responses", n, st.op, len(res))
		}
		start = time.Now()
		// First the replica's cyrus.index read directly: the highestmodseq
		// the STORE reached is there once the batch is applied.
		want := res[0].ModSeq
		for _, m := range res {
			want = max(want, m.ModSeq)
		}
		for s.index(s.p.Replica).Header.HighestModSeq < want {
			if time.Since(start) > convergeTimeout {
				t.Fatalf("replica index below modseq %d after %v", want, convergeTimeout)
			}
			time.Sleep(time.Millisecond)
		}
		inIndex := time.Since(start)
		for {
			r, err := pair.Fetch(s.p.Replica, s.p.User())
			if err != nil {
				t.Fatal(err)
			}
			done := len(r) == n
			for _, m := range r {
				done = done && st.want(m.Flags)
			}
			if done {
				break
			}
			if time.Since(start) > convergeTimeout {
				t.Fatalf("store 1:%d %s %v not visible on the replica after %v", n, st.op, st.flags, convergeTimeout)
			}
			time.Sleep(2 * time.Millisecond)
		}
		visible := time.Since(start)
		s.converge()
		t.Logf("UID STORE 1:%d %s %v: STORE took %v; after its OK: in the replica's index %v, all %d visible over IMAP %v",
			n, st.op, st.flags, stored, inIndex, n, visible)
	}
}
