package replica

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
)

// withPrimaryCRC sets b.SyncCRC to what a primary identical to the replica
// at dir holds after b (the synthetic primary and replica agree).
func withPrimaryCRC(t testing.TB, dir string, b *diff.Batch) *diff.Batch {
	t.Helper()
	ib, err := os.ReadFile(filepath.Join(dir, "cyrus.index"))
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := os.ReadFile(filepath.Join(dir, "cyrus.header"))
	mh, err := diff.ParseMailboxHeader(dir, hb)
	if err != nil {
		t.Fatal(err)
	}
	res, err := diff.Apply(dir, ib, mh, b)
	if err != nil {
		t.Fatal(err)
	}
	b.SyncCRC = res.SyncCRC
	return b
}

func redoFiles(t testing.TB, s *synthSpool) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.state, redoDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestConfigValidate(t *testing.T) {
	s := newSynthSpool(t)
	good := s.config(nil)
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"no spool", func(c *Config) { c.Spool = "" }, "spool is required"},
		{"relative spool", func(c *Config) { c.Spool = "spool" }, "must be an absolute path"},
		{"spool missing", func(c *Config) { c.Spool = filepath.Join(s.root, "nope") }, "no such file"},
		{"state is a file", func(c *Config) { c.StateDir = s.conf }, "not a directory"},
		{"no cyrus conf", func(c *Config) { c.CyrusConf = "" }, "cyrus conf is required"},
		{"negative rescan", func(c *Config) { c.RescanInterval = -time.Second }, "must not be negative"},
	} {
		c := good
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
		if _, nerr := New(c); nerr == nil {
			t.Errorf("%s: New accepted an invalid config", tc.name)
		}
	}
}

func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ conf, want, err string }{
		{"configdirectory: /var/lib/cyrus\n", "/var/lib/cyrus/lock", ""},
		{"# c\nconfigdirectory: /var/lib/cyrus\nmboxname_lockpath: /run/cyrus/lock\n", "/run/cyrus/lock", ""},
		{"partition-default: /x\n", "", "no configdirectory"},
		{"configdirectory: relative\n", "", "not absolute"},
		{"configdirectory /x\n", "", "no ':'"},
	} {
		p := filepath.Join(dir, "imapd.conf")
		if err := os.WriteFile(p, []byte(tc.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := LockDir(p)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), p) {
				t.Errorf("%q: got %q, %v; want error %q naming the file", tc.conf, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.conf, got, err, tc.want)
		}
	}
}

func TestApplySynthetic(t *testing.T) {
	s := newSynthSpool(t)
	const id = "abcdef0123456789abcdef01"
	dir := s.addMailbox(t, uuidRel(id), id, 20, "work")
	a, _ := s.applier(t)
	// The position starts unknown (0): a batch starting at 20 does not move it.
	b := withPrimaryCRC(t, dir, flagBatch(id, 20, 20, []uint32{3, 7, 19}, diff.FlagSeen|diff.FlagFlagged, "work", "$Important"))
	res, err := a.Apply(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 3 || res.Stale != 0 || res.Missing != 0 || res.GUIDMismatch != 0 || res.Diverged ||
		res.Position != 0 || res.HighestModSeq != 23 || res.SyncCRC != b.SyncCRC {
		t.Fatalf("result %+v", res)
	}
	ix, mh, hb := loadMailbox(t, dir)
	if err := diff.Check(dir, ix, mh.UserFlags); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(mh.UserFlags, " "); got != "work $Important" {
		t.Fatalf("cyrus.header keywords %q", got)
	}
	if ix.Header.HeaderFileCRC != diff.CRC32(hb) {
		t.Fatalf("header_file_crc %08x, cyrus.header crc %08x", ix.Header.HeaderFileCRC, diff.CRC32(hb))
	}
	for _, u := range []uint32{3, 7, 19} {
		r := ix.Records[ix.FindUID(u)]
		if r.SystemFlags != diff.FlagSeen|diff.FlagFlagged || !r.HasUserFlag(0) || !r.HasUserFlag(1) || r.LastUpdated != 1800000000 {
			t.Errorf("uid %d: flags %x keywords %x", u, r.SystemFlags, r.UserFlags)
		}
	}
	if r := ix.Records[ix.FindUID(4)]; r.SystemFlags != 0 || r.ModSeq != 4 {
		t.Errorf("uid 4 changed: %+v", r)
	}
	if n := redoFiles(t, s); len(n) != 0 {
		t.Fatalf("redo files left: %v", n)
	}
	if _, err := os.Stat(filepath.Join(s.confDir, "lock", id+".lock")); err != nil {
		t.Fatalf("mailbox lock file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cyrus.header.NEW")); !os.IsNotExist(err) {
		t.Fatalf("cyrus.header.NEW left behind: %v", err)
	}
	st := a.Stats()
	if st.Batches != 1 || st.Applied != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestUniqueIDTraversal: an id from the wire that would climb out of the
// spool is refused before any file is touched (Rule 5).
func TestUniqueIDTraversal(t *testing.T) {
	s := newSynthSpool(t)
	// A mailbox outside the spool, exactly where "../" ids would lead.
	outside := filepath.Join(s.root, "outside")
	s.addMailbox(t, "../outside", "outside", 5)
	before, _ := os.ReadFile(filepath.Join(outside, "cyrus.index"))
	fi0, _ := os.Stat(filepath.Join(outside, "cyrus.index"))
	a, _ := s.applier(t)
	for _, id := range []string{"../../../outside", "..", "../outside", "x/../../outside", "a/b", "", strings.Repeat("a", 65)} {
		b := flagBatch(id, 5, 5, []uint32{1}, diff.FlagSeen)
		_, err := a.Apply(context.Background(), b)
		if err == nil || !errors.Is(err, diff.ErrMalformed) || !strings.Contains(err.Error(), "unique id") {
			t.Errorf("id %q: got %v, want a malformed unique id error", id, err)
		}
	}
	after, _ := os.ReadFile(filepath.Join(outside, "cyrus.index"))
	fi1, _ := os.Stat(filepath.Join(outside, "cyrus.index"))
	if !bytes.Equal(before, after) || !fi0.ModTime().Equal(fi1.ModTime()) {
		t.Fatal("index outside the spool was modified")
	}
	if n := redoFiles(t, s); len(n) != 0 {
		t.Fatalf("redo files written for refused ids: %v", n)
	}
	for _, p := range []string{filepath.Join(s.root, "outside.lock"), filepath.Join(s.confDir, "lock")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists: a lock was taken for a refused id", p)
		}
	}
	// Recover ignores a redo file whose name is not a unique id.
	if err := os.WriteFile(filepath.Join(s.state, redoDir, "..batch"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLegacyLayoutLookup(t *testing.T) {
	s := newSynthSpool(t)
	dir := s.addMailbox(t, "u/user/alice", "legacy-alice", 5)
	c := s.config(nil)
	c.RescanInterval = time.Hour
	a, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := a.Apply(ctx, withPrimaryCRC(t, dir, flagBatch("legacy-alice", 5, 5, []uint32{2}, diff.FlagAnswered)))
	if err != nil || res.Applied != 1 {
		t.Fatalf("apply to legacy layout: %+v %v", res, err)
	}
	// A mailbox created after the last scan is not seen until the rescan
	// interval has passed.
	dir2 := s.addMailbox(t, "u/user/bob", "legacy-bob", 5)
	if _, err := a.Apply(ctx, flagBatch("legacy-bob", 5, 5, []uint32{2}, diff.FlagSeen)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rate-limited rescan: got %v, want ErrNotFound", err)
	}
	a.loc.lastScan = time.Now().Add(-2 * time.Hour)
	res, err = a.Apply(ctx, withPrimaryCRC(t, dir2, flagBatch("legacy-bob", 5, 5, []uint32{2}, diff.FlagSeen)))
	if err != nil || res.Applied != 1 {
		t.Fatalf("apply after rescan: %+v %v", res, err)
	}
	ix, mh, _ := loadMailbox(t, dir2)
	if err := diff.Check(dir2, ix, mh.UserFlags); err != nil || ix.Records[1].SystemFlags != diff.FlagSeen {
		t.Fatalf("bob: %v, flags %x", err, ix.Records[1].SystemFlags)
	}
}

func TestUIDValidityRefused(t *testing.T) {
	s := newSynthSpool(t)
	const id = "uv0123456789"
	dir := s.addMailbox(t, uuidRel(id), id, 5)
	before, _ := os.ReadFile(filepath.Join(dir, "cyrus.index"))
	a, _ := s.applier(t)
	b := flagBatch(id, 5, 5, []uint32{1}, diff.FlagSeen)
	b.UIDValidity++
	if _, err := a.Apply(context.Background(), b); !errors.Is(err, diff.ErrUIDValidity) {
		t.Fatalf("got %v, want ErrUIDValidity", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "cyrus.index"))
	if !bytes.Equal(before, after) {
		t.Fatal("index changed by a refused batch")
	}
	if n := redoFiles(t, s); len(n) != 0 {
		t.Fatalf("redo file kept for a refused batch: %v", n)
	}
}

func TestGUIDMismatchLogged(t *testing.T) {
	s := newSynthSpool(t)
	const id = "gm0123456789"
	dir := s.addMailbox(t, uuidRel(id), id, 5)
	a, logs := s.applier(t)
	b := flagBatch(id, 5, 5, []uint32{2, 3}, diff.FlagSeen)
	b.Records[1].GUID[0] ^= 0xff
	res, err := a.Apply(context.Background(), b)
	if err != nil || res.Applied != 1 || res.GUIDMismatch != 1 || res.Position != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	ix, _, _ := loadMailbox(t, dir)
	if r := ix.Records[2]; r.SystemFlags != 0 || r.ModSeq != 3 {
		t.Fatalf("mismatched record written: %+v", r)
	}
	ls := logs.FilterMessage("guid mismatch: record not written").All()
	if len(ls) != 1 {
		t.Fatalf("%d guid mismatch log lines", len(ls))
	}
	f := ls[0].ContextMap()
	want, got := synthGUID(3), b.Records[1].GUID
	if f["uid"] != uint32(3) || f["replica_guid"] != want.String() || f["primary_guid"] != got.String() {
		t.Fatalf("log fields %v", f)
	}
	if st := a.Stats(); st.GUIDMismatch != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPositionRules(t *testing.T) {
	s := newSynthSpool(t)
	const id = "pos0123456789"
	dir := s.addMailbox(t, uuidRel(id), id, 10)
	a, _ := s.applier(t)
	ctx := context.Background()
	apply := func(b *diff.Batch) Result {
		t.Helper()
		res, err := a.Apply(ctx, withPrimaryCRC(t, dir, b))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// Catch-up from 0 reaches 10.
	if r := apply(&diff.Batch{Mailbox: id, UIDValidity: synthUIDValidity, HighestModSeq: 10}); r.Position != 10 {
		t.Fatalf("catch-up position %d", r.Position)
	}
	b1 := flagBatch(id, 10, 10, []uint32{1}, diff.FlagSeen) // 10 -> 11
	b2 := flagBatch(id, 11, 11, []uint32{2}, diff.FlagSeen) // 11 -> 12
	if r := apply(b2); r.Position != 10 || r.Applied != 1 {
		t.Fatalf("out of order batch moved the position: %+v", r)
	}
	if r := apply(b1); r.Position != 11 {
		t.Fatalf("in-order batch: position %d, want 11", r.Position)
	}
	if r := apply(b2); r.Position != 12 || r.Stale != 1 {
		t.Fatalf("re-sent batch: %+v", r)
	}
	// A missing UID does not hold the position: re-sending cannot supply it.
	if r := apply(flagBatch(id, 12, 12, []uint32{99}, diff.FlagSeen)); r.Position != 13 || r.Missing != 1 {
		t.Fatalf("missing uid: %+v", r)
	}
	// The position survives a restart and is reported by States.
	a2, _ := s.applier(t)
	st, err := a2.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ix, _, _ := loadMailbox(t, dir)
	if len(st) != 1 || st[0] != (diff.MailboxState{Mailbox: id, UIDValidity: synthUIDValidity, HighestModSeq: 13, SyncCRC: ix.Header.SyncCRCBasic}) {
		t.Fatalf("states %+v", st)
	}
	// Another incarnation of the mailbox starts from 0.
	if got := a2.pos.get(id, synthUIDValidity+1); got != 0 {
		t.Fatalf("position for another uidvalidity: %d", got)
	}
}

func TestStatesListsEveryMailbox(t *testing.T) {
	s := newSynthSpool(t)
	d1 := s.addMailbox(t, uuidRel("zz0123456789"), "zz0123456789", 3)
	d2 := s.addMailbox(t, "x/user/old", "aa-legacy", 4)
	a, _ := s.applier(t)
	st, err := a.States(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ix1, _, _ := loadMailbox(t, d1)
	ix2, _, _ := loadMailbox(t, d2)
	want := []diff.MailboxState{
		{Mailbox: "aa-legacy", UIDValidity: synthUIDValidity, SyncCRC: ix2.Header.SyncCRCBasic},
		{Mailbox: "zz0123456789", UIDValidity: synthUIDValidity, SyncCRC: ix1.Header.SyncCRCBasic},
	}
	if len(st) != 2 || st[0] != want[0] || st[1] != want[1] {
		t.Fatalf("states %+v, want %+v", st, want)
	}
	if want[0].SyncCRC == 0 || want[1].SyncCRC == 0 {
		t.Fatal("synthetic sync crcs are zero; test proves nothing")
	}
}

// TestCrashBetweenRecordsAndHeader stops an apply between the record writes
// and the header write, then recovers like a restart does.
func TestCrashBetweenRecordsAndHeader(t *testing.T) {
	s := newSynthSpool(t)
	const id = "crash0123456"
	dir := s.addMailbox(t, uuidRel(id), id, 50)
	a, _ := s.applier(t)
	errCrash := errors.New("injected crash")
	a.faults.betweenRecordsAndHeader = func() error { return errCrash }
	b := withPrimaryCRC(t, dir, flagBatch(id, 50, 50, []uint32{5, 6, 40}, diff.FlagSeen, "NewKeyword"))
	if _, err := a.Apply(context.Background(), b); !errors.Is(err, errCrash) {
		t.Fatalf("got %v, want the injected crash", err)
	}
	ix, mh, _ := loadMailbox(t, dir)
	if err := diff.Check(dir, ix, mh.UserFlags); err == nil {
		t.Fatal("half-applied index passes diff.Check: the crash point is wrong")
	}
	if n := redoFiles(t, s); len(n) != 1 || n[0] != id+".batch" {
		t.Fatalf("redo files %v", n)
	}
	a2, logs := s.applier(t)
	if err := a2.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	ix, mh, hb := loadMailbox(t, dir)
	if err := diff.Check(dir, ix, mh.UserFlags); err != nil {
		t.Fatalf("after recover: %v", err)
	}
	if ix.Header.HighestModSeq != 53 || ix.Header.SyncCRCBasic != b.SyncCRC || ix.Header.HeaderFileCRC != diff.CRC32(hb) {
		t.Fatalf("header after recover: hms %d crc %08x (want %08x) hfcrc %08x", ix.Header.HighestModSeq,
			ix.Header.SyncCRCBasic, b.SyncCRC, ix.Header.HeaderFileCRC)
	}
	for _, u := range []uint32{5, 6, 40} {
		if r := ix.Records[u-1]; r.SystemFlags != diff.FlagSeen || !r.HasUserFlag(0) {
			t.Errorf("uid %d after recover: %+v", u, r)
		}
	}
	if n := redoFiles(t, s); len(n) != 0 {
		t.Fatalf("redo files left: %v", n)
	}
	if logs.FilterMessage("repaired index header after an interrupted apply").Len() != 1 {
		t.Fatal("no repair logged")
	}
	if got := a2.pos.get(id, synthUIDValidity); got != 0 {
		// The position started unknown (0) and the batch starts at 50.
		t.Fatalf("position %d", got)
	}
}

func TestConcurrentApply(t *testing.T) {
	s := newSynthSpool(t)
	ids := []string{"conc000000a1", "conc000000b2", "conc000000c3"}
	dirs := map[string]string{}
	for _, id := range ids {
		dirs[id] = s.addMailbox(t, uuidRel(id), id, 200)
	}
	a, _ := s.applier(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, id := range ids {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range 10 {
					// Worker w, round k: uid 1+w*50+k gets modseq 1000+w*100+k.
					uid := uint32(1 + w*50 + k)
					b := flagBatch(id, 0, uint64(1000+w*100+k-1), []uint32{uid}, diff.FlagFlagged)
					if _, err := a.Apply(context.Background(), b); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, id := range ids {
		ix, mh, _ := loadMailbox(t, dirs[id])
		if err := diff.Check(id, ix, mh.UserFlags); err != nil {
			t.Fatal(err)
		}
		if ix.Header.Flagged != 40 || ix.Header.HighestModSeq != 1309 {
			t.Fatalf("%s: flagged %d highestmodseq %d", id, ix.Header.Flagged, ix.Header.HighestModSeq)
		}
	}
}
