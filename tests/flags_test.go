package tests

import (
	"slices"
	"testing"
)

// Every kind of flag change on the primary, on one UID and on many,
// reaches the replica: each system flag added, -FLAGS removal, FLAGS
// replace (also to the empty set) and .SILENT. After every step the two
// sides agree message by message and on synccrcs.basic.
func TestFlagChangesOfEveryKind(t *testing.T) {
	s := newStory(t, pairOpts())
	steps := []struct {
		uids, op string
		flags    []string
		check    uint32   // a UID whose replica flags are asserted after the step
		want     []string // its flags
	}{
		{"1", "+FLAGS", []string{`\Seen`}, 1, []string{`\Seen`}},
		{"2:6", "+FLAGS", []string{`\Flagged`}, 4, []string{`\Flagged`}},
		{"3", "+FLAGS", []string{`\Answered`}, 3, []string{`\Answered`, `\Flagged`}},
		{"4,8,12", "+FLAGS", []string{`\Draft`}, 8, []string{`\Draft`}},
		{"9", "+FLAGS", []string{`\Deleted`}, 9, []string{`\Deleted`}},
		{"2:4", "-FLAGS", []string{`\Flagged`}, 3, []string{`\Answered`}},
		{"10:15", "FLAGS", []string{`\Seen`, `\Answered`}, 12, []string{`\Answered`, `\Seen`}},
		{"1:20", "+FLAGS", []string{`\Seen`}, 20, []string{`\Seen`}},
		{"1:20", "-FLAGS", []string{`\Seen`}, 12, []string{`\Answered`}},
		{"4", "FLAGS", nil, 4, nil},
		{"16:18", "+FLAGS.SILENT", []string{`\Flagged`, `\Draft`}, 17, []string{`\Draft`, `\Flagged`}},
		{"9", "-FLAGS", []string{`\Deleted`}, 9, nil},
	}
	for _, st := range steps {
		res := s.store(st.uids, st.op, st.flags...)
		if len(res) == 0 && st.op != "+FLAGS.SILENT" {
			t.Fatalf("store %s %s %v: no FETCH response", st.uids, st.op, st.flags)
		}
		took := s.converge()
		s.expectReplica(st.check, st.want...)
		t.Logf("store %s %s %v: converged in %v", st.uids, st.op, st.flags, took)
	}
	// The last steps left a mix of flags; one more look at the whole
	// replica: the counts Cyrus derives must match the primary's.
	pi, ri := s.indexes()
	ph, rh := pi.Header, ri.Header
	if ph.Answered != rh.Answered || ph.Flagged != rh.Flagged || ph.Deleted != rh.Deleted || ph.Unseen != rh.Unseen {
		t.Fatalf("header counts differ: primary answered/flagged/deleted/unseen %d/%d/%d/%d, replica %d/%d/%d/%d",
			ph.Answered, ph.Flagged, ph.Deleted, ph.Unseen, rh.Answered, rh.Flagged, rh.Deleted, rh.Unseen)
	}
	if ph.Answered != 7 || ph.Flagged != 5 {
		t.Fatalf("primary answered %d flagged %d, want 7 and 5 (uids 3,10:15 answered; 5,6,16:18 flagged)", ph.Answered, ph.Flagged)
	}
}

// A keyword the mailbox has never seen ($Label1, then work) is created on
// the replica under the same name: FETCH shows it there and the replica's
// cyrus.header lists it. Removing it again also replicates.
func TestNewKeywordReachesReplica(t *testing.T) {
	s := newStory(t, pairOpts())
	if mh := s.mailboxHeader(s.p.Replica); len(nonEmpty(mh.UserFlags)) != 0 {
		t.Fatalf("replica already has keywords %v", mh.UserFlags)
	}

	s.store("3", "+FLAGS", "$Label1")
	s.converge()
	s.expectReplica(3, "$Label1")

	s.store("3:5", "+FLAGS", "work")
	s.converge()
	s.expectReplica(3, "$Label1", "work")
	s.expectReplica(5, "work")

	mh := s.mailboxHeader(s.p.Replica)
	for _, k := range []string{"$Label1", "work"} {
		if mh.FlagIndex(k) < 0 {
			t.Fatalf("replica cyrus.header has no %s: %v", k, mh.UserFlags)
		}
	}
	// The replica's own Cyrus maps the keyword to the record's bit.
	rec := s.record(s.p.Replica, 4)
	if !rec.HasUserFlag(mh.FlagIndex("work")) || rec.HasUserFlag(mh.FlagIndex("$Label1")) {
		t.Fatalf("replica uid 4 user flags %08x, want only bit %d (work)", rec.UserFlags, mh.FlagIndex("work"))
	}

	s.store("3", "-FLAGS", "$Label1")
	s.store("4", "FLAGS", `\Seen`)
	s.converge()
	s.expectReplica(3, "work")
	s.expectReplica(4, `\Seen`)
}

func nonEmpty(names []string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "" })
}
