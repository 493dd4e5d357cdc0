package fs

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/indexwire/indexwire/tests/cyrustest"
)

// cyrusOnMount starts a real Cyrus 3.6 whose partition is an overlay mount
// (and with metapartition, whose metapartition is the mount: only
// cyrus.index and cyrus.header cross FUSE).
func cyrusOnMount(t *testing.T, metapartition bool, conf ...string) (*testMount, *cyrustest.Instance) {
	t.Helper()
	return cyrusOnMountCfg(t, metapartition, func(*Config) {}, conf...)
}

// cyrusOnMountCfg is cyrusOnMount with a change to the mount's Config.
func cyrusOnMountCfg(t *testing.T, metapartition bool, mutate func(*Config), conf ...string) (*testMount, *cyrustest.Instance) {
	t.Helper()
	cyrustest.Skip(t)
	needFUSE(t)
	top, err := os.MkdirTemp("", "iwfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil { // user cyrus must traverse it
		t.Fatal(err)
	}
	backing := filepath.Join(top, "backing")
	if err := os.Mkdir(backing, 0o750); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(top, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	tm := mountT(t, backing, func(c *Config) { c.Mountpoint = mnt }, mutate)
	opts := cyrustest.Options{Name: "FS", Partition: tm.mnt, Conf: conf}
	if metapartition {
		plain := filepath.Join(top, "spool")
		if err := os.Mkdir(plain, 0o750); err != nil {
			t.Fatal(err)
		}
		opts.Partition = plain
		opts.Conf = append(opts.Conf, "metapartition-default: "+tm.mnt, "metapartition_files: index header")
		if err := os.Chown(tm.mnt, cyrusUID(t), mailGID(t)); err != nil {
			t.Fatal(err)
		}
	}
	in := cyrustest.Start(t, opts)
	if err := in.MkUser("alice"); err != nil {
		t.Fatal(err)
	}
	return tm, in
}

func cyrusUID(t *testing.T) int {
	b, _ := os.ReadFile("/etc/passwd")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, ":"); len(f) > 3 && f[0] == "cyrus" {
			var id int
			for _, c := range f[2] {
				id = id*10 + int(c-'0')
			}
			return id
		}
	}
	t.Fatal("no user cyrus")
	return 0
}

func mailGID(t *testing.T) int {
	b, _ := os.ReadFile("/etc/group")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, ":"); len(f) > 2 && f[0] == "mail" {
			var id int
			for _, c := range f[2] {
				id = id*10 + int(c-'0')
			}
			return id
		}
	}
	t.Fatal("no group mail")
	return 0
}

func sortedFlags(fl []string) []string {
	out := []string{}
	for _, f := range fl {
		if f != `\Recent` {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// expectBatches checks the batches of one IMAP command against FETCH: every
// uid in touched has a delta, and the last delta of every uid equals what
// FETCH (UID FLAGS MODSEQ) reports, or is expunged if FETCH lacks the uid.
func expectBatches(t *testing.T, tm *testMount, c *cyrustest.Client, step string, touched []uint32, wantRepack bool) []*diff.Batch {
	t.Helper()
	bs := tm.sink.waitFor(t, 1)
	if len(bs) == 0 {
		t.Fatalf("%s: no batch", step)
	}
	// An immediate expunge repacks after the tagged reply.
	for deadline := time.Now().Add(5 * time.Second); wantRepack && time.Now().Before(deadline) && !slices.ContainsFunc(bs, func(b *diff.Batch) bool { return b.Repack }); {
		bs = append(bs, tm.sink.waitFor(t, 1)...)
	}
	ms, err := c.Fetch("1:*")
	if err != nil {
		t.Fatal(err)
	}
	fetch := map[uint32]cyrustest.Message{}
	for _, m := range ms {
		fetch[m.UID] = m
	}
	last := map[uint32]diff.Delta{}
	repack := false
	for _, b := range bs {
		repack = repack || b.Repack
		for _, d := range b.Records {
			last[d.UID] = d
		}
	}
	for _, u := range touched {
		if _, ok := last[u]; !ok {
			t.Errorf("%s: no delta for uid %d (batches %d)", step, u, len(bs))
		}
	}
	for u, d := range last {
		m, ok := fetch[u]
		if !ok {
			if !d.Expunged() {
				t.Errorf("%s: uid %d gone from FETCH but its delta is not expunged", step, u)
			}
			continue
		}
		got := sortedFlags(diff.FlagString(d.SystemFlags, d.UserFlags))
		if d.Expunged() || !slices.Equal(got, sortedFlags(m.Flags)) || d.ModSeq != m.ModSeq {
			t.Errorf("%s: uid %d delta flags %v modseq %d expunged %v; FETCH flags %v modseq %d",
				step, u, got, d.ModSeq, d.Expunged(), sortedFlags(m.Flags), m.ModSeq)
		}
	}
	if repack != wantRepack {
		t.Errorf("%s: repack %v, want %v", step, repack, wantRepack)
	}
	return bs
}

// agree checks that mbexamine and a direct decode of the backing
// cyrus.index agree with FETCH on every message.
func agree(t *testing.T, tm *testMount, in *cyrustest.Instance, c *cyrustest.Client) {
	t.Helper()
	ms, err := c.Fetch("1:*")
	if err != nil {
		t.Fatal(err)
	}
	ex, err := in.Mbexamine("user/alice")
	if err != nil {
		t.Fatal(err)
	}
	var ixPath string
	filepath.Walk(tm.backing, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "cyrus.index" && strings.Contains(p, filepath.Base(ex.Path)) {
			ixPath = p
		}
		return nil
	})
	b, err := os.ReadFile(ixPath)
	if err != nil {
		t.Fatalf("backing index of %s: %v", ex.Path, err)
	}
	ix, err := diff.DecodeIndex(ixPath, b)
	if err != nil {
		t.Fatal(err)
	}
	mh := loadHeader(t, filepath.Join(filepath.Dir(ixPath), "cyrus.header"))
	for _, m := range ms {
		r := ex.Record(m.UID)
		i := ix.FindUID(m.UID)
		if r == nil || i < 0 {
			t.Fatalf("uid %d missing: mbexamine %v, backing %d", m.UID, r != nil, i)
		}
		rec := ix.Records[i]
		fl := sortedFlags(diff.FlagString(rec.SystemFlags&diff.IMAPFlags, diff.FlagNames(rec, mh.UserFlags)))
		if r.ModSeq != m.ModSeq || rec.ModSeq != m.ModSeq || !slices.Equal(fl, sortedFlags(m.Flags)) {
			t.Errorf("uid %d: FETCH %v/%d, mbexamine modseq %d, backing %v/%d", m.UID, sortedFlags(m.Flags), m.ModSeq, r.ModSeq, fl, rec.ModSeq)
		}
	}
}

func uids(a, z uint32) []uint32 {
	var u []uint32
	for i := a; i <= z; i++ {
		u = append(u, i)
	}
	return u
}

func runCyrusScenario(t *testing.T, tm *testMount, in *cyrustest.Instance, immediate bool) {
	c, err := in.Login("alice")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Select("INBOX"); err != nil {
		t.Fatal(err)
	}
	tm.sink.take()
	if _, err := c.Append("INBOX", 20); err != nil {
		t.Fatal(err)
	}
	expectBatches(t, tm, c, "APPEND", uids(1, 20), false)

	steps := []struct {
		name  string
		set   string
		op    string
		flags []string
	}{
		{"STORE one \\Seen", "3", "+FLAGS", []string{`\Seen`}},
		{"STORE many \\Flagged", "5:14", "+FLAGS", []string{`\Flagged`}},
		{"STORE new keyword", "2", "+FLAGS", []string{"$Work"}},
		{"STORE -\\Seen and keyword", "3,8", "+FLAGS", []string{"$Work", `\Answered`}},
	}
	for _, s := range steps {
		if _, err := c.Store(s.set, s.op, s.flags...); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		var touched []uint32
		for _, p := range strings.Split(s.set, ",") {
			a, z, _ := strings.Cut(p, ":")
			if z == "" {
				z = a
			}
			var x, y uint32
			for _, ch := range a {
				x = x*10 + uint32(ch-'0')
			}
			for _, ch := range z {
				y = y*10 + uint32(ch-'0')
			}
			touched = append(touched, uids(x, y)...)
		}
		expectBatches(t, tm, c, s.name, touched, false)
	}
	agree(t, tm, in, c)

	// SELECT: a header-only write (\Recent bookkeeping) still makes a batch.
	if _, err := c.Select("INBOX"); err != nil {
		t.Fatal(err)
	}
	for _, b := range tm.sink.waitFor(t, 1) {
		if len(b.Records) != 0 {
			t.Errorf("SELECT batch has %d record deltas", len(b.Records))
		}
	}

	if _, err := c.Store("7,9", "+FLAGS", `\Deleted`); err != nil {
		t.Fatal(err)
	}
	expectBatches(t, tm, c, "STORE \\Deleted", []uint32{7, 9}, false)
	if _, err := c.Expunge(); err != nil {
		t.Fatal(err)
	}
	expectBatches(t, tm, c, "EXPUNGE", []uint32{7, 9}, immediate)
	if !immediate {
		if out, err := in.ToolCombined("cyr_expire", "-X", "0", "-v"); err != nil {
			t.Fatalf("cyr_expire: %v %s", err, out)
		}
		bs := tm.sink.waitFor(t, 1)
		repack := false
		for _, b := range bs {
			repack = repack || b.Repack
			for _, d := range b.Records {
				t.Errorf("cyr_expire batch carries a delta for uid %d (%v)", d.UID, d.Changed.Names())
			}
		}
		if !repack {
			t.Errorf("cyr_expire -X 0: no repack batch among %d", len(bs))
		}
	}
	agree(t, tm, in, c)
	tm.noCaptureErrors(t)
	cyrustest.NoIOErrors(t, in)
}

func TestCyrusDelayedExpunge(t *testing.T) {
	tm, in := cyrusOnMount(t, false)
	runCyrusScenario(t, tm, in, false)
}

func TestCyrusImmediateExpunge(t *testing.T) {
	tm, in := cyrusOnMount(t, false, "expunge_mode: immediate")
	runCyrusScenario(t, tm, in, true)
}

func TestCyrusMetapartition(t *testing.T) {
	tm, in := cyrusOnMount(t, true)
	testCyrusMetapartition(t, tm, in)
}

// TestCyrusMetapartitionNoOpen is TestCyrusMetapartition on a no-open mount:
// the kernel sends one OPEN (answered ENOSYS) and none after it.
func TestCyrusMetapartitionNoOpen(t *testing.T) {
	tm, in := cyrusOnMountCfg(t, true, noOpen)
	testCyrusMetapartition(t, tm, in)
	if st := tm.Stats(); st.Opens != 1 || st.HookedOpens != 0 {
		t.Errorf("no-open mount saw %d OPEN requests and %d hooked opens, want 1 and 0", st.Opens, st.HookedOpens)
	}
}

func testCyrusMetapartition(t *testing.T, tm *testMount, in *cyrustest.Instance) {
	runCyrusScenario(t, tm, in, false)
	// Only index and header files live on the mount.
	filepath.Walk(tm.backing, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasPrefix(fi.Name(), "cyrus.index") && !strings.HasPrefix(fi.Name(), "cyrus.header") {
			t.Errorf("metapartition holds %s", p)
		}
		return nil
	})
}
