package cyrustest

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// imapFlags returns m's flags sorted, without the session flag \Recent.
func imapFlags(m Message) []string {
	out := []string{}
	for _, f := range m.Flags {
		if f != `\Recent` {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

func login(t *testing.T, in *Instance, user, mailbox string, readOnly bool) *Client {
	t.Helper()
	c, err := in.Login(user)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if readOnly {
		_, err = c.Examine(mailbox)
	} else {
		_, err = c.Select(mailbox)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fetchAll(t *testing.T, c *Client) []Message {
	t.Helper()
	ms, err := c.Fetch("1:*")
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// checkAgainstMbexamine asserts that mbexamine (the index as Cyrus reads
// it) and IMAP FETCH agree on every message's flags and modseq.
func checkAgainstMbexamine(t *testing.T, in *Instance, ms []Message) *Examine {
	t.Helper()
	ex, err := in.Mbexamine("user/alice")
	if err != nil {
		t.Fatal(err)
	}
	if int(ex.Exists) != len(ms) || len(ex.Records) != len(ms) {
		t.Fatalf("mbexamine: exists %d, %d records; FETCH: %d messages", ex.Exists, len(ex.Records), len(ms))
	}
	var maxMod uint64
	for _, m := range ms {
		r := ex.Record(m.UID)
		if r == nil {
			t.Fatalf("uid %d: not in mbexamine output", m.UID)
		}
		fl, err := ex.Flags(r)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(fl, imapFlags(m)) {
			t.Errorf("uid %d: mbexamine flags %v, FETCH flags %v", m.UID, fl, imapFlags(m))
		}
		if r.ModSeq != m.ModSeq {
			t.Errorf("uid %d: mbexamine modseq %d, FETCH modseq %d", m.UID, r.ModSeq, m.ModSeq)
		}
		maxMod = max(maxMod, m.ModSeq)
	}
	if ex.HighestModSeq < maxMod {
		t.Errorf("highestmodseq %d < largest record modseq %d", ex.HighestModSeq, maxMod)
	}
	return ex
}

func TestStoreFetchMbexamine(t *testing.T) {
	in := Start(t, Options{Name: "A"})
	if err := in.MkUser("alice"); err != nil {
		t.Fatal(err)
	}
	c := login(t, in, "alice", "INBOX", false)
	uids, err := c.Append("INBOX", 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(uids) != 20 || uids[0] != 1 || uids[19] != 20 {
		t.Fatalf("appended uids %v, want 1..20", uids)
	}
	before := fetchAll(t, c)
	if len(before) != 20 {
		t.Fatalf("FETCH returned %d messages, want 20", len(before))
	}
	var highest uint64
	for _, m := range before {
		highest = max(highest, m.ModSeq)
		if slices.Contains(m.Flags, `\Seen`) {
			t.Fatalf("uid %d already \\Seen: %v", m.UID, m.Flags)
		}
	}

	got, err := c.Store("7", "+FLAGS", `\Seen`)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].UID != 7 || !slices.Contains(got[0].Flags, `\Seen`) || got[0].ModSeq != highest+1 {
		t.Fatalf("STORE response %+v, want uid 7 with \\Seen and modseq %d", got, highest+1)
	}
	if _, err := c.Store("3,4", "+FLAGS", "$Label1", "work", `\Flagged`); err != nil {
		t.Fatal(err)
	}
	after := fetchAll(t, c)
	for i, m := range after {
		switch m.UID {
		case 7:
			if !slices.Equal(imapFlags(m), []string{`\Seen`}) || m.ModSeq != highest+1 {
				t.Errorf("uid 7: %+v, want [\\Seen] modseq %d", m, highest+1)
			}
		case 3, 4:
			if want := []string{"$Label1", `\Flagged`, "work"}; !slices.Equal(imapFlags(m), want) || m.ModSeq <= highest+1 {
				t.Errorf("uid %d: %+v, want %v with modseq > %d", m.UID, m, want, highest+1)
			}
		default:
			if m.ModSeq != before[i].ModSeq || len(imapFlags(m)) != 0 {
				t.Errorf("uid %d changed: %+v, was %+v", m.UID, m, before[i])
			}
		}
	}
	ex := checkAgainstMbexamine(t, in, after)
	if ex.MinorVersion != 17 || ex.RecordSize != 112 || ex.HeaderSize != 160 {
		t.Errorf("mbexamine: version %d header %d record %d, want 17/160/112", ex.MinorVersion, ex.HeaderSize, ex.RecordSize)
	}
	if !slices.Equal(ex.UserFlagNames, []string{"$Label1", "work"}) || ex.Flagged != 2 || ex.LastUID != 20 {
		t.Errorf("mbexamine header: flags %v flagged %d last uid %d", ex.UserFlagNames, ex.Flagged, ex.LastUID)
	}
	if err := c.Logout(); err != nil {
		t.Fatal(err)
	}

	// the state survives a restart of master
	if err := in.Restart(); err != nil {
		t.Fatal(err)
	}
	c = login(t, in, "alice", "INBOX", true)
	if again := fetchAll(t, c); !slices.EqualFunc(again, after, msgEqual) {
		t.Errorf("after restart FETCH %+v, want %+v", again, after)
	}
	NoIOErrors(t, in)
	if lines, ok := in.Syslog(); ok && !containsAny(lines, "imap[") {
		t.Errorf("syslog sink captured no imapd line of %s (%d lines)", in.Name, len(lines))
	}
}

func containsAny(lines []string, s string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, s) })
}

func msgEqual(a, b Message) bool {
	return a.UID == b.UID && a.ModSeq == b.ModSeq && slices.Equal(imapFlags(a), imapFlags(b))
}

func TestUIDExpunge(t *testing.T) {
	in := Start(t, Options{Name: "X"})
	if err := in.MkUser("alice"); err != nil {
		t.Fatal(err)
	}
	c := login(t, in, "alice", "INBOX", false)
	if _, err := c.Append("INBOX", 5); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store("2,4", "+FLAGS.SILENT", `\Deleted`); err != nil {
		t.Fatal(err)
	}
	seqs, err := c.UIDExpunge("4")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs, []uint32{4}) {
		t.Fatalf("UID EXPUNGE 4 expunged seqs %v, want [4]", seqs)
	}
	if seqs, err = c.Expunge(); err != nil || !slices.Equal(seqs, []uint32{2}) {
		t.Fatalf("EXPUNGE: seqs %v err %v, want [2]", seqs, err)
	}
	ms := fetchAll(t, c)
	var got []uint32
	for _, m := range ms {
		got = append(got, m.UID)
	}
	if !slices.Equal(got, []uint32{1, 3, 5}) {
		t.Fatalf("uids after expunge %v, want [1 3 5]", got)
	}
	checkAgainstMbexamine(t, in, ms)
}

func TestReplicationSyncUser(t *testing.T) {
	replica := Start(t, Options{Name: "B"})
	if err := replica.SetPassword("alice"); err != nil {
		t.Fatal(err)
	}
	primary := Start(t, Options{Name: "A", SyncTo: replica})
	if err := primary.MkUser("alice"); err != nil {
		t.Fatal(err)
	}
	c := login(t, primary, "alice", "INBOX", false)
	if _, err := c.Append("INBOX", 20); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store("1:5", "+FLAGS", `\Seen`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store("6", "+FLAGS", "$Label1"); err != nil {
		t.Fatal(err)
	}
	compare := func(step string) {
		t.Helper()
		if out, err := primary.SyncUser("alice"); err != nil {
			t.Fatalf("%s: %v (%s)", step, err, out)
		}
		want := fetchAll(t, c)
		r := login(t, replica, "alice", "INBOX", true)
		got := fetchAll(t, r)
		r.Logout()
		if len(got) != len(want) || !slices.EqualFunc(got, want, msgEqual) {
			t.Fatalf("%s: replica FETCH %+v, primary FETCH %+v", step, got, want)
		}
		pe, err := primary.Mbexamine("user/alice")
		if err != nil {
			t.Fatal(err)
		}
		re := checkAgainstMbexamine(t, replica, got)
		for _, pr := range pe.Records {
			if rr := re.Record(pr.UID); rr == nil || rr.GUID != pr.GUID {
				t.Errorf("%s: uid %d GUID primary %s, replica %+v", step, pr.UID, pr.GUID, rr)
			}
		}
	}
	compare("first sync")
	if _, err := c.Store("3", "-FLAGS", `\Seen`); err != nil {
		t.Fatal(err)
	}
	compare("sync after -FLAGS")
	NoIOErrors(t, primary)
	NoIOErrors(t, replica)
}

func TestReplicationRolling(t *testing.T) {
	replica := Start(t, Options{Name: "B"})
	if err := replica.SetPassword("alice"); err != nil {
		t.Fatal(err)
	}
	primary := Start(t, Options{Name: "A", SyncTo: replica, Rolling: true})
	if err := primary.MkUser("alice"); err != nil {
		t.Fatal(err)
	}
	c := login(t, primary, "alice", "INBOX", false)
	if _, err := c.Append("INBOX", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store("2", "+FLAGS", `\Flagged`); err != nil {
		t.Fatal(err)
	}
	want := fetchAll(t, c)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []Message
		if r, err := replica.Login("alice"); err == nil {
			if _, err := r.Examine("INBOX"); err == nil {
				got, _ = r.Fetch("1:*")
			}
			r.Logout()
		}
		if slices.EqualFunc(got, want, msgEqual) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rolling replication: replica has %+v after 30s, primary %+v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	NoIOErrors(t, primary)
}

func TestAppend10k(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 10000 messages")
	}
	in := Start(t, Options{Name: "big"})
	if err := in.MkUser("alice"); err != nil {
		t.Fatal(err)
	}
	c := login(t, in, "alice", "INBOX", false)
	start := time.Now()
	uids, err := c.Append("INBOX", 10000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("appended %d messages in %v", len(uids), time.Since(start))
	if len(uids) != 10000 || uids[9999] != 10000 {
		t.Fatalf("got %d uids, last %d", len(uids), uids[len(uids)-1])
	}
	ms := fetchAll(t, c)
	if len(ms) != 10000 || ms[9999].UID != 10000 {
		t.Fatalf("FETCH returned %d messages", len(ms))
	}
}

func TestPartitionOverride(t *testing.T) {
	Skip(t)
	part, err := os.MkdirTemp("/tmp", "cyrustest-part-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(part) })
	if err := os.Chmod(part, 0o711); err != nil {
		t.Fatal(err)
	}
	in := Start(t, Options{Name: "P", Partition: part, Conf: []string{"expunge_mode: immediate"}})
	if err := in.MkUser("alice"); err != nil {
		t.Fatal(err)
	}
	c := login(t, in, "alice", "INBOX", false)
	if _, err := c.Append("INBOX", 2); err != nil {
		t.Fatal(err)
	}
	mb, err := in.MBPath("user/alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(mb, part+"/") {
		t.Fatalf("mailbox in %s, want under partition %s", mb, part)
	}
	if _, err := os.Stat(filepath.Join(mb, "cyrus.index")); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(in.Conf)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(conf), "expunge_mode:"); n != 1 || !strings.Contains(string(conf), "partition-default: "+part+"\n") {
		t.Fatalf("imapd.conf does not carry the overrides once:\n%s", conf)
	}
}
