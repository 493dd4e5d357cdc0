package tests

import (
	"testing"
)

// \Deleted then EXPUNGE on the primary: the replica's Cyrus hides the
// messages too, because the EXPUNGED bit travels in the record's
// system flags; the records stay in the replica's index, marked.
func TestExpungeHidesMessageOnReplica(t *testing.T) {
	s := newStory(t, pairOpts())
	s.store("4,6", "+FLAGS", `\Deleted`)
	s.store("5", "+FLAGS", `\Seen`)
	if got := s.expunge(); len(got) != 2 {
		t.Fatalf("primary expunged %v, want two messages", got)
	}
	s.converge()
	r := s.replica()
	if len(r) != 18 {
		t.Fatalf("replica shows %d messages, want 18", len(r))
	}
	for _, uid := range []uint32{4, 6} {
		if _, ok := r[uid]; ok {
			t.Fatalf("replica still shows expunged uid %d", uid)
		}
		if rec := s.record(s.p.Replica, uid); !rec.Expunged() {
			t.Fatalf("replica record of uid %d lacks the expunged bit: system flags %08x", uid, rec.SystemFlags)
		}
	}
	s.expectReplica(5, `\Seen`)

	// A single UID EXPUNGE of a message flagged \Deleted long ago.
	s.store("10", "+FLAGS", `\Deleted`)
	s.converge()
	if _, err := s.c.UIDExpunge("10"); err != nil {
		t.Fatal(err)
	}
	s.converge()
	if _, ok := s.replica()[10]; ok {
		t.Fatal("replica still shows uid 10 after UID EXPUNGE")
	}
	if ex := s.index(s.p.Replica).Header.Exists; ex != 17 {
		t.Fatalf("replica header exists %d, want 17", ex)
	}
}

// The primary repacks its index (cyr_expire -X 0 removes the expunged
// records and renames cyrus.index.NEW over cyrus.index, through the
// mount). Flag changes after the repack still reach the replica, which
// keeps its own expunged records.
func TestRepackOnPrimaryThenFlagChanges(t *testing.T) {
	s := newStory(t, pairOpts())
	s.store("2:5", "+FLAGS", `\Deleted`)
	s.expunge()
	s.converge()
	before := s.index(s.p.Primary)
	if len(before.Records) != 20 {
		t.Fatalf("primary index has %d records before the repack, want 20", len(before.Records))
	}
	if out, err := s.p.Primary.ToolCombined("cyr_expire", "-X", "0", "-v"); err != nil {
		t.Fatalf("cyr_expire: %v\n%s", err, out)
	}
	after := s.index(s.p.Primary)
	if len(after.Records) != 16 {
		t.Fatalf("primary index has %d records after cyr_expire -X 0, want 16 (repacked)", len(after.Records))
	}
	s.converge()

	// The session opened before the repack sees the new index on its
	// next command; a fresh one starts from it.
	s.connect()
	s.store("1", "+FLAGS", `\Seen`)
	s.store("6:12", "+FLAGS", `\Flagged`)
	s.store("8", "+FLAGS", "$Repacked")
	s.store("7", "-FLAGS", `\Flagged`)
	s.converge()
	s.expectReplica(1, `\Seen`)
	s.expectReplica(8, `\Flagged`, "$Repacked")
	s.expectReplica(7)
	if n := len(s.replica()); n != 16 {
		t.Fatalf("replica shows %d messages, want 16", n)
	}
}
