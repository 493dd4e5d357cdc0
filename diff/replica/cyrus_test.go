package replica

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/indexwire/indexwire/diff"
	"github.com/indexwire/indexwire/tests/cyrustest"
)

// These tests apply batches to a real Cyrus 3.6 replica that is running
// and serving IMAP, then read the result back through that Cyrus: IMAP
// FETCH (UID FLAGS MODSEQ), mbexamine, `reconstruct -n` (must find nothing
// to fix) and its syslog (no IOERROR). The batches carry the replica's own
// GUIDs and modseqs above its highestmodseq, as a primary holding the same
// messages would send them.

type cyrusReplica struct {
	in    *cyrustest.Instance
	a     *Applier
	state string
	logs  *observer.ObservedLogs
}

func startReplica(t *testing.T) *cyrusReplica {
	t.Helper()
	in := cyrustest.Start(t, cyrustest.Options{Name: "replica"})
	core, logs := observer.New(zap.DebugLevel)
	r := &cyrusReplica{in: in, state: t.TempDir(), logs: logs}
	a, err := New(Config{Spool: in.Spool, CyrusConf: in.Conf, StateDir: r.state, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	r.a = a
	return r
}

// box is one user's INBOX on the replica.
type box struct {
	user, mailbox, dir, id string
}

func (r *cyrusReplica) newBox(t *testing.T, user string, n int) *box {
	t.Helper()
	if err := r.in.MkUser(user); err != nil {
		t.Fatal(err)
	}
	c, err := r.in.Login(user)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n > 0 {
		if _, err := c.Append("INBOX", n); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Logout(); err != nil {
		t.Fatal(err)
	}
	b := &box{user: user, mailbox: "user/" + user}
	if b.dir, err = r.in.MBPath(b.mailbox); err != nil {
		t.Fatal(err)
	}
	_, mh, _ := loadMailbox(t, b.dir)
	b.id = mh.UniqueID
	if want := filepath.Join(r.in.Spool, uuidRel(b.id)); b.dir != want {
		t.Fatalf("mbpath %s, 3.6 uuid layout says %s", b.dir, want)
	}
	return b
}

// delta builds the delta a primary holding the same message would send.
func delta(t *testing.T, ix *diff.Index, uid uint32, modseq uint64, sys uint32, kw ...string) diff.Delta {
	t.Helper()
	i := ix.FindUID(uid)
	if i < 0 {
		t.Fatalf("uid %d not in the replica index", uid)
	}
	r := ix.Records[i]
	return diff.Delta{UID: uid, GUID: r.GUID, OldModSeq: r.ModSeq, ModSeq: modseq, LastUpdated: uint32(time.Now().Unix()),
		SystemFlags: sys, UserFlags: kw, Changed: diff.FieldSystemFlags | diff.FieldUserFlags | diff.FieldModSeq}
}

// batch wraps deltas; highestmodseq is the highest delta modseq and the
// primary's sync CRC is what the replica holds after applying it.
func (b *box) batch(t *testing.T, oldHMS uint64, ds ...diff.Delta) *diff.Batch {
	t.Helper()
	ix, _, _ := loadMailbox(t, b.dir)
	bt := &diff.Batch{Mailbox: b.id, UIDValidity: ix.Header.UIDValidity, OldHighestModSeq: oldHMS, Records: ds}
	for _, d := range ds {
		bt.HighestModSeq = max(bt.HighestModSeq, d.ModSeq)
	}
	return withPrimaryCRC(t, b.dir, bt)
}

// imapState is FETCH (UID FLAGS MODSEQ) of every message, flags sorted
// without \Recent.
func (r *cyrusReplica) imapState(t *testing.T, b *box) map[uint32]cyrustest.Message {
	t.Helper()
	c, err := r.in.Login(b.user)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Examine("INBOX"); err != nil {
		t.Fatal(err)
	}
	ms, err := c.Fetch("1:*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]cyrustest.Message{}
	for _, m := range ms {
		m.Flags = cleanFlags(m.Flags)
		out[m.UID] = m
	}
	return out
}

func cleanFlags(fs []string) []string {
	out := []string{}
	for _, f := range fs {
		if f != `\Recent` {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// expect sets uid's expected flags and modseq in st.
func expect(st map[uint32]cyrustest.Message, uid uint32, modseq uint64, flags ...string) {
	st[uid] = cyrustest.Message{UID: uid, Flags: cleanFlags(flags), ModSeq: modseq}
}

// verify reads the mailbox back through Cyrus and checks it against want:
// IMAP FETCH, mbexamine, reconstruct -n, diff.Check, and no IOERROR.
func (r *cyrusReplica) verify(t *testing.T, b *box, want map[uint32]cyrustest.Message) {
	t.Helper()
	got := r.imapState(t, b)
	if len(got) != len(want) {
		t.Fatalf("FETCH returned %d messages, want %d", len(got), len(want))
	}
	for uid, w := range want {
		g, ok := got[uid]
		if !ok || !slices.Equal(g.Flags, w.Flags) || g.ModSeq != w.ModSeq {
			t.Errorf("FETCH uid %d: got %v modseq %d, want %v modseq %d", uid, g.Flags, g.ModSeq, w.Flags, w.ModSeq)
		}
	}
	ex, err := r.in.Mbexamine(b.mailbox)
	if err != nil {
		t.Fatal(err)
	}
	for uid, w := range want {
		er := ex.Record(uid)
		if er == nil {
			t.Errorf("mbexamine: no uid %d", uid)
			continue
		}
		fl, err := ex.Flags(er)
		if err != nil {
			t.Error(err)
			continue
		}
		if !slices.Equal(fl, w.Flags) || er.ModSeq != w.ModSeq {
			t.Errorf("mbexamine uid %d: %v modseq %d, want %v modseq %d", uid, fl, er.ModSeq, w.Flags, w.ModSeq)
		}
	}
	var hms uint64
	for _, w := range want {
		hms = max(hms, w.ModSeq)
	}
	if ex.HighestModSeq < hms {
		t.Errorf("mbexamine highestmodseq %d < highest record modseq %d", ex.HighestModSeq, hms)
	}
	r.reconstructClean(t, b)
	ix, mh, hb := loadMailbox(t, b.dir)
	if err := diff.Check(b.dir, ix, mh.UserFlags); err != nil {
		t.Error(err)
	}
	if ix.Header.HeaderFileCRC != diff.CRC32(hb) {
		t.Errorf("header_file_crc %08x, cyrus.header crc %08x", ix.Header.HeaderFileCRC, diff.CRC32(hb))
	}
	cyrustest.NoIOErrors(t, r.in)
}

// reconstructClean runs `reconstruct -n`: a mailbox with nothing to fix
// prints only its name.
func (r *cyrusReplica) reconstructClean(t *testing.T, b *box) {
	t.Helper()
	out, err := r.in.Tool("reconstruct", "-n", b.mailbox)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != b.mailbox {
		t.Errorf("reconstruct -n %s found something to fix:\n%s", b.mailbox, out)
	}
}

func (r *cyrusReplica) apply(t *testing.T, bt *diff.Batch) Result {
	t.Helper()
	res, err := r.a.Apply(context.Background(), bt)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestCyrusSingleFlag(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "alice", 3)
	want := r.imapState(t, b)
	ix, _, _ := loadMailbox(t, b.dir)
	h := ix.Header.HighestModSeq
	res := r.apply(t, b.batch(t, h, delta(t, ix, 2, h+1, diff.FlagSeen)))
	if res.Applied != 1 || res.Stale+res.Missing+res.GUIDMismatch != 0 || res.Diverged || res.HighestModSeq != h+1 {
		t.Fatalf("%+v", res)
	}
	expect(want, 2, h+1, `\Seen`)
	r.verify(t, b, want)
}

func TestCyrus1000Records(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "bulk", 1000)
	want := r.imapState(t, b)
	ix, _, _ := loadMailbox(t, b.dir)
	if len(ix.Records) != 1000 {
		t.Fatalf("%d records", len(ix.Records))
	}
	h := ix.Header.HighestModSeq
	var ds []diff.Delta
	for i := range 1000 {
		uid := uint32(i + 1)
		sys := diff.FlagSeen
		flags := []string{`\Seen`}
		if uid%3 == 0 {
			sys |= diff.FlagFlagged | diff.FlagAnswered
			flags = append(flags, `\Flagged`, `\Answered`)
		}
		ds = append(ds, delta(t, ix, uid, h+uint64(i)+1, sys))
		expect(want, uid, h+uint64(i)+1, flags...)
	}
	start := time.Now()
	res := r.apply(t, b.batch(t, h, ds...))
	t.Logf("1000-record batch applied in %v", time.Since(start))
	if res.Applied != 1000 || res.Diverged || res.HighestModSeq != h+1000 {
		t.Fatalf("%+v", res)
	}
	r.verify(t, b, want)
	ex, err := r.in.Mbexamine(b.mailbox)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Flagged != 333 || ex.Answered != 333 || ex.HighestModSeq != h+1000 {
		t.Fatalf("mbexamine counts: flagged %d answered %d highestmodseq %d", ex.Flagged, ex.Answered, ex.HighestModSeq)
	}
}

// TestCyrusNewKeyword: a keyword the replica's cyrus.header lacks is added
// to it (.NEW + rename, header_file_crc updated) and Cyrus serves it, also
// to a session that had the mailbox selected before.
func TestCyrusNewKeyword(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "kw", 3)
	want := r.imapState(t, b)
	c, err := r.in.Login(b.user)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Select("INBOX"); err != nil {
		t.Fatal(err)
	}
	ix, mh, _ := loadMailbox(t, b.dir)
	if mh.FlagIndex("$Replicated") >= 0 {
		t.Fatal("keyword already present")
	}
	h := ix.Header.HighestModSeq
	res := r.apply(t, b.batch(t, h, delta(t, ix, 3, h+1, diff.FlagFlagged, "$Replicated", "work")))
	if res.Applied != 1 {
		t.Fatalf("%+v", res)
	}
	_, mh, hb := loadMailbox(t, b.dir)
	if mh.FlagIndex("$Replicated") < 0 || mh.FlagIndex("work") < 0 || !bytes.Contains(hb, []byte("U ($Replicated work)")) {
		t.Fatalf("cyrus.header: %q", hb)
	}
	fi, err := os.Stat(filepath.Join(b.dir, "cyrus.header"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cyrus.header owner uid %d mode %v: Cyrus could not rewrite it", st.Uid, fi.Mode())
	}
	ms, err := c.Noop()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || !slices.Equal(cleanFlags(ms[0].Flags), []string{"$Replicated", `\Flagged`, "work"}) || ms[0].ModSeq != h+1 {
		t.Fatalf("selected session saw %+v", ms)
	}
	expect(want, 3, h+1, `\Flagged`, "$Replicated", "work")
	r.verify(t, b, want)
	// Cyrus itself can still add keywords after ours.
	if _, err := c.Store("1", "+FLAGS", "later"); err != nil {
		t.Fatal(err)
	}
	_, mh, _ = loadMailbox(t, b.dir)
	if got := strings.Join(mh.UserFlags, " "); got != "$Replicated work later" {
		t.Fatalf("keywords after a Cyrus STORE: %q", got)
	}
	cyrustest.NoIOErrors(t, r.in)
}

// TestCyrusGUIDMismatch: the replica holds another message under the UID;
// the record is not written, counted and logged with both GUIDs.
func TestCyrusGUIDMismatch(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "gm", 3)
	want := r.imapState(t, b)
	ix, _, _ := loadMailbox(t, b.dir)
	h := ix.Header.HighestModSeq
	d := delta(t, ix, 2, h+1, diff.FlagSeen)
	d.GUID = ix.Records[2].GUID // the primary's uid 2 is the replica's uid 3 message
	ok := delta(t, ix, 1, h+2, diff.FlagDeleted)
	res := r.apply(t, b.batch(t, h, d, ok))
	if res.GUIDMismatch != 1 || res.Applied != 1 || res.Position != 0 {
		t.Fatalf("%+v", res)
	}
	ls := r.logs.FilterMessage("guid mismatch: record not written").All()
	if len(ls) != 1 {
		t.Fatalf("%d log lines", len(ls))
	}
	f := ls[0].ContextMap()
	if f["uid"] != uint32(2) || f["primary_guid"] != ix.Records[2].GUID.String() || f["replica_guid"] != ix.Records[1].GUID.String() ||
		f["mailbox"] != b.id {
		t.Fatalf("log fields %v", f)
	}
	if st := r.a.Stats(); st.GUIDMismatch != 1 || st.Applied != 1 {
		t.Fatalf("stats %+v", st)
	}
	expect(want, 1, h+2, `\Deleted`)
	r.verify(t, b, want)
}

func TestCyrusUIDMissing(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "miss", 3)
	want := r.imapState(t, b)
	ix, _, _ := loadMailbox(t, b.dir)
	h := ix.Header.HighestModSeq
	gone := delta(t, ix, 3, h+1, diff.FlagSeen)
	gone.UID = 17
	res := r.apply(t, b.batch(t, h, gone, delta(t, ix, 1, h+2, diff.FlagAnswered)))
	if res.Missing != 1 || !slices.Equal(res.MissingUIDs, []uint32{17}) || res.Applied != 1 {
		t.Fatalf("%+v", res)
	}
	if r.logs.FilterMessage("uid missing on replica").Len() != 1 {
		t.Fatal("missing uid not logged")
	}
	expect(want, 1, h+2, `\Answered`)
	r.verify(t, b, want)
}

func TestCyrusSameBatchTwice(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "twice", 5)
	want := r.imapState(t, b)
	ix, _, _ := loadMailbox(t, b.dir)
	h := ix.Header.HighestModSeq
	bt := b.batch(t, h, delta(t, ix, 2, h+1, diff.FlagSeen), delta(t, ix, 4, h+2, diff.FlagSeen, "x1"))
	if res := r.apply(t, bt); res.Applied != 2 {
		t.Fatalf("first %+v", res)
	}
	before, _ := os.ReadFile(filepath.Join(b.dir, "cyrus.index"))
	res := r.apply(t, bt)
	if res.Applied != 0 || res.Stale != 2 || res.Diverged {
		t.Fatalf("second %+v", res)
	}
	after, _ := os.ReadFile(filepath.Join(b.dir, "cyrus.index"))
	if !bytes.Equal(before, after) {
		t.Fatal("index changed by a duplicate batch")
	}
	expect(want, 2, h+1, `\Seen`)
	expect(want, 4, h+2, `\Seen`, "x1")
	r.verify(t, b, want)
}

// TestCyrusOutOfOrder: b2 (the later commit) arrives before b1; the end
// state is the primary's, and the earlier batch is stale.
func TestCyrusOutOfOrder(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "order", 4)
	want := r.imapState(t, b)
	ix, _, _ := loadMailbox(t, b.dir)
	h := ix.Header.HighestModSeq
	// Position h, as after a catch-up.
	if res := r.apply(t, b.batch(t, 0, delta(t, ix, 4, h, 0))); res.Position != h || res.Stale != 1 {
		t.Fatalf("catch-up %+v", res)
	}
	b1 := b.batch(t, h, delta(t, ix, 1, h+1, diff.FlagSeen), delta(t, ix, 2, h+2, diff.FlagSeen))
	b2 := b.batch(t, h+2, delta(t, ix, 1, h+3, diff.FlagSeen|diff.FlagFlagged))
	b2.SyncCRC = 0 // computed against the state before b1: unknown here
	res := r.apply(t, b2)
	if res.Applied != 1 || res.Position != h {
		t.Fatalf("b2 first: %+v", res)
	}
	res = r.apply(t, b1)
	if res.Applied != 1 || res.Stale != 1 || res.Position != h+2 {
		t.Fatalf("b1 second: %+v", res)
	}
	res = r.apply(t, b2) // catch-up re-sends it: stale, position moves on
	if res.Stale != 1 || res.Position != h+3 {
		t.Fatalf("b2 again: %+v", res)
	}
	expect(want, 1, h+3, `\Seen`, `\Flagged`)
	expect(want, 2, h+2, `\Seen`)
	r.verify(t, b, want)
}

// TestCyrusWhileSelected: a client has the mailbox selected; after the
// apply its NOOP reports the change with the new MODSEQ.
func TestCyrusWhileSelected(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "sel", 3)
	want := r.imapState(t, b)
	c, err := r.in.Login(b.user)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Select("INBOX"); err != nil {
		t.Fatal(err)
	}
	if ms, err := c.Noop(); err != nil || len(ms) != 0 {
		t.Fatalf("noop before apply: %v %v", ms, err)
	}
	ix, _, _ := loadMailbox(t, b.dir)
	h := ix.Header.HighestModSeq
	r.apply(t, b.batch(t, h, delta(t, ix, 2, h+1, diff.FlagAnswered|diff.FlagSeen)))
	ms, err := c.Noop()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || !slices.Equal(cleanFlags(ms[0].Flags), []string{`\Answered`, `\Seen`}) || ms[0].ModSeq != h+1 {
		t.Fatalf("selected session saw %+v, want uid 2 \\Answered \\Seen modseq %d", ms, h+1)
	}
	// The session keeps working on the applied state.
	got, err := c.Store("2", "+FLAGS", `\Flagged`)
	if err != nil || len(got) != 1 || got[0].ModSeq != h+2 {
		t.Fatalf("store after apply: %+v %v", got, err)
	}
	expect(want, 2, h+2, `\Answered`, `\Seen`, `\Flagged`)
	r.verify(t, b, want)
}

func TestCyrusUniqueIDTraversal(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "trav", 2)
	before, _ := os.ReadFile(filepath.Join(b.dir, "cyrus.index"))
	ix, _, _ := loadMailbox(t, b.dir)
	h := ix.Header.HighestModSeq
	for _, id := range []string{"../" + b.id, "../../uuid/" + b.id[:1] + "/" + b.id[1:2] + "/" + b.id, "../../conf"} {
		bt := &diff.Batch{Mailbox: id, UIDValidity: ix.Header.UIDValidity, OldHighestModSeq: h, HighestModSeq: h + 1,
			Records: []diff.Delta{delta(t, ix, 1, h+1, diff.FlagSeen)}}
		_, err := r.a.Apply(context.Background(), bt)
		if !errors.Is(err, diff.ErrMalformed) || !strings.Contains(err.Error(), "unique id") {
			t.Errorf("id %q: %v", id, err)
		}
	}
	after, _ := os.ReadFile(filepath.Join(b.dir, "cyrus.index"))
	if !bytes.Equal(before, after) {
		t.Fatal("index changed")
	}
	ents, _ := os.ReadDir(filepath.Join(r.state, redoDir))
	if len(ents) != 0 {
		t.Fatalf("redo files: %v", ents)
	}
}

func TestCyrusStates(t *testing.T) {
	r := startReplica(t)
	b1 := r.newBox(t, "s1", 2)
	b2 := r.newBox(t, "s2", 3)
	ix1, _, _ := loadMailbox(t, b1.dir)
	h := ix1.Header.HighestModSeq
	r.apply(t, b1.batch(t, 0, delta(t, ix1, 1, h+1, diff.FlagSeen)))
	st, err := r.a.States(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]diff.MailboxState{}
	for _, s := range st {
		got[s.Mailbox] = s
	}
	ix1, _, _ = loadMailbox(t, b1.dir)
	ix2, _, _ := loadMailbox(t, b2.dir)
	if s := got[b1.id]; s.UIDValidity != ix1.Header.UIDValidity || s.HighestModSeq != h+1 || s.SyncCRC != ix1.Header.SyncCRCBasic {
		t.Errorf("state of %s: %+v", b1.user, s)
	}
	if s := got[b2.id]; s.UIDValidity != ix2.Header.UIDValidity || s.HighestModSeq != 0 || s.SyncCRC != ix2.Header.SyncCRCBasic {
		t.Errorf("state of %s: %+v", b2.user, s)
	}
}

// crashEnv names the environment of the crash helper process.
const crashEnv = "INDEXWIRE_REPLICA_CRASH"

// TestCrashHelper is not a test: run by TestCyrusKilledMidApply as a child
// process, it applies the batch in the file named by $INDEXWIRE_REPLICA_CRASH
// and kills itself with SIGKILL between the record writes and the header
// write, as a replica daemon killed there would die.
func TestCrashHelper(t *testing.T) {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		t.Skip("helper process for TestCyrusKilledMidApply")
	}
	parts := strings.Split(spec, "\n")
	enc, err := os.ReadFile(parts[3])
	if err != nil {
		t.Fatal(err)
	}
	bt, err := diff.DecodeBatch(enc)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Spool: parts[0], CyrusConf: parts[1], StateDir: parts[2]})
	if err != nil {
		t.Fatal(err)
	}
	a.faults.betweenRecordsAndHeader = func() error {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	_, err = a.Apply(context.Background(), bt)
	t.Fatalf("apply returned (%v) instead of being killed", err)
}

// TestCyrusKilledMidApply kills the applying process between the record
// writes and the header write; Recover (what a restart runs) must leave an
// index that Cyrus accepts and that holds the batch.
func TestCyrusKilledMidApply(t *testing.T) {
	r := startReplica(t)
	b := r.newBox(t, "crash", 20)
	want := r.imapState(t, b)
	ix, _, _ := loadMailbox(t, b.dir)
	h := ix.Header.HighestModSeq
	var ds []diff.Delta
	for i, uid := range []uint32{2, 9, 15} {
		ds = append(ds, delta(t, ix, uid, h+uint64(i)+1, diff.FlagSeen|diff.FlagFlagged, "crashed"))
		expect(want, uid, h+uint64(i)+1, `\Seen`, `\Flagged`, "crashed")
	}
	bt := b.batch(t, h, ds...)
	enc, err := diff.EncodeBatch(bt)
	if err != nil {
		t.Fatal(err)
	}
	batchFile := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(batchFile, enc, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+strings.Join([]string{r.in.Spool, r.in.Conf, r.state, batchFile}, "\n"))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper was not killed: %v\n%s", err, out)
	}
	// The crash left records written and the header not.
	ixc, mh, hb := loadMailbox(t, b.dir)
	if err := diff.Check(b.dir, ixc, mh.UserFlags); err == nil {
		t.Fatal("index after the kill passes diff.Check: the kill point is wrong")
	}
	if ixc.Records[1].ModSeq != h+1 || ixc.Header.HighestModSeq != h {
		t.Fatalf("after kill: uid 2 modseq %d, header highestmodseq %d", ixc.Records[1].ModSeq, ixc.Header.HighestModSeq)
	}
	if mh.FlagIndex("crashed") < 0 || ixc.Header.HeaderFileCRC == diff.CRC32(hb) {
		t.Fatal("expected cyrus.header rewritten before the records and header_file_crc stale")
	}
	if _, err := os.Stat(redoPath(r.state, b.id)); err != nil {
		t.Fatalf("redo file: %v", err)
	}
	// Restart: a new applier recovers before serving.
	core, logs := observer.New(zap.InfoLevel)
	a2, err := New(Config{Spool: r.in.Spool, CyrusConf: r.in.Conf, StateDir: r.state, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessage("repaired index header after an interrupted apply").Len() != 1 ||
		logs.FilterMessage("replayed interrupted batch").Len() != 1 {
		t.Fatalf("recovery log: %v", logs.All())
	}
	if _, err := os.Stat(redoPath(r.state, b.id)); !os.IsNotExist(err) {
		t.Fatalf("redo file after recover: %v", err)
	}
	ixr, _, _ := loadMailbox(t, b.dir)
	if ixr.Header.HighestModSeq != h+3 || ixr.Header.SyncCRCBasic != bt.SyncCRC {
		t.Fatalf("recovered header: highestmodseq %d synccrc %08x, want %d %08x", ixr.Header.HighestModSeq,
			ixr.Header.SyncCRCBasic, h+3, bt.SyncCRC)
	}
	r.verify(t, b, want)
}
