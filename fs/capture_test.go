package fs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
)

// cyrusCommit changes the index at path (read through the mount) the way
// Cyrus 3.6 commits: every changed record with lseek+write in file order
// (each split at cuts to model a torn write), then the whole header at
// offset 0, then fsync unless noSync (WRITE-PATTERNS.md). mutate edits the
// decoded index; counts, CRCs and sync CRC are recomputed. It returns the
// index as committed.
func cyrusCommit(t *testing.T, f *os.File, names []string, noSync bool, cuts []int, mutate func(ix *diff.Index)) *diff.Index {
	t.Helper()
	old, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	ix, err := diff.DecodeIndex(f.Name(), old)
	if err != nil {
		t.Fatal(err)
	}
	mutate(ix)
	ix.Header.SetCounts(diff.Recount(ix, names))
	nb, err := ix.Encode()
	if err != nil {
		t.Fatal(err)
	}
	l := ix.Layout
	write := func(off int64, b []byte) {
		if _, err := f.Seek(off, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	for i := range ix.Records {
		a := l.RecordOffset(i + 1)
		z := a + int64(l.RecordSize)
		if z <= int64(len(old)) && bytes.Equal(old[a:z], nb[a:z]) {
			continue
		}
		prev := a
		for _, c := range append(slices.Clone(cuts), l.RecordSize) {
			write(prev, nb[prev:a+int64(c)])
			prev = a + int64(c)
		}
	}
	write(0, nb[:l.HeaderSize])
	if !noSync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	return ix
}

// checkBatch asserts that b carries exactly uids with the state they have in ix.
func checkBatch(t *testing.T, b *diff.Batch, mh *diff.MailboxHeader, ix *diff.Index, uids ...uint32) {
	t.Helper()
	if b.Mailbox != mh.UniqueID || b.UIDValidity != ix.Header.UIDValidity || b.HighestModSeq != ix.Header.HighestModSeq ||
		b.SyncCRC != ix.Header.SyncCRCBasic {
		t.Errorf("batch identity %s/%d hms %d crc %08x, want %s/%d hms %d crc %08x", b.Mailbox, b.UIDValidity, b.HighestModSeq,
			b.SyncCRC, mh.UniqueID, ix.Header.UIDValidity, ix.Header.HighestModSeq, ix.Header.SyncCRCBasic)
	}
	var got []uint32
	for _, d := range b.Records {
		got = append(got, d.UID)
		r := ix.Records[ix.FindUID(d.UID)]
		if d.GUID != r.GUID || d.ModSeq != r.ModSeq || d.SystemFlags != r.SystemFlags&diff.ReplicatedFlags ||
			!slices.Equal(d.UserFlags, diff.FlagNames(r, mh.UserFlags)) {
			t.Errorf("uid %d: delta %+v, record flags %08x modseq %d", d.UID, d, r.SystemFlags, r.ModSeq)
		}
	}
	if !slices.Equal(got, uids) {
		t.Errorf("batch uids %v, want %v", got, uids)
	}
}

func loadHeader(t *testing.T, path string) *diff.MailboxHeader {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mh, err := diff.ParseMailboxHeader(path, b)
	if err != nil {
		t.Fatal(err)
	}
	return mh
}

// setFlags is a STORE: set bits on uids, each with the next modseq.
func setFlags(set uint32, kw int, uids ...uint32) func(ix *diff.Index) {
	return func(ix *diff.Index) {
		for _, u := range uids {
			r := ix.Records[ix.FindUID(u)]
			ix.Header.HighestModSeq++
			r.ModSeq = ix.Header.HighestModSeq
			r.LastUpdated++
			r.SystemFlags |= set
			if kw >= 0 {
				r.SetUserFlag(kw, true)
			}
		}
	}
}

// noOpen is the Config change of the no-open tests.
func noOpen(c *Config) { c.NoOpen = true }

// checkNoOpen asserts that the kernel honoured no-open: one OPEN (answered
// ENOSYS), none after it, and no handle.
func checkNoOpen(t *testing.T, tm *testMount) {
	t.Helper()
	if st := tm.Stats(); st.Opens != 1 || st.HookedOpens != 0 {
		t.Errorf("no-open mount saw %d OPEN requests and %d hooked opens, want 1 and 0", st.Opens, st.HookedOpens)
	}
}

func TestCaptureStore(t *testing.T) { testCaptureStore(t, mountT(t, "")) }

// TestCaptureStoreNoOpen is TestCaptureStore with Config.NoOpen: the same
// writes and fsyncs arrive without a file handle and give the same batches.
func TestCaptureStoreNoOpen(t *testing.T) {
	tm := mountT(t, "", noOpen)
	testCaptureStore(t, tm)
	checkNoOpen(t, tm)
}

func testCaptureStore(t *testing.T, tm *testMount) {
	copyFixture(t, "v17", filepath.Join(tm.backing, "m"))
	mh := loadHeader(t, filepath.Join(tm.backing, "m", "cyrus.header"))
	f, err := os.OpenFile(filepath.Join(tm.mnt, "m", "cyrus.index"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	t.Run("one", func(t *testing.T) {
		ix := cyrusCommit(t, f, mh.UserFlags, false, nil, setFlags(diff.FlagFlagged, -1, 3))
		bs := tm.sink.take()
		if len(bs) != 1 {
			t.Fatalf("%d batches, want 1", len(bs))
		}
		checkBatch(t, bs[0], mh, ix, 3)
	})
	t.Run("many", func(t *testing.T) {
		ix := cyrusCommit(t, f, mh.UserFlags, false, nil, setFlags(diff.FlagSeen, -1, 3, 4, 5, 6, 11, 12))
		bs := tm.sink.take()
		if len(bs) != 1 {
			t.Fatalf("%d batches, want 1", len(bs))
		}
		checkBatch(t, bs[0], mh, ix, 3, 4, 5, 6, 11, 12) // 4 and 5 were \Seen already; their modseq moved
	})
	t.Run("torn", func(t *testing.T) {
		ix := cyrusCommit(t, f, mh.UserFlags, false, []int{16, 60}, setFlags(diff.FlagAnswered, -1, 7))
		bs := tm.sink.take()
		if len(bs) != 1 {
			t.Fatalf("%d batches, want 1", len(bs))
		}
		checkBatch(t, bs[0], mh, ix, 7)
	})
	t.Run("header-only", func(t *testing.T) {
		ix := cyrusCommit(t, f, mh.UserFlags, false, nil, func(ix *diff.Index) { ix.Header.RecentUID++ })
		bs := tm.sink.take()
		if len(bs) != 1 {
			t.Fatalf("%d batches, want 1", len(bs))
		}
		checkBatch(t, bs[0], mh, ix)
		if v, ok := bs[0].HeaderValue("recentuid"); !ok || v != uint64(ix.Header.RecentUID) {
			t.Errorf("header changes %+v, want recentuid %d", bs[0].Header, ix.Header.RecentUID)
		}
	})
	t.Run("append", func(t *testing.T) {
		ix := cyrusCommit(t, f, mh.UserFlags, false, nil, func(ix *diff.Index) {
			r := *ix.Records[len(ix.Records)-1]
			ix.Header.LastUID++
			ix.Header.HighestModSeq++
			r.UID, r.ModSeq, r.SystemFlags = ix.Header.LastUID, ix.Header.HighestModSeq, 0
			r.GUID[0] ^= 0xff
			ix.Records = append(ix.Records, &r)
		})
		bs := tm.sink.take()
		if len(bs) != 1 {
			t.Fatalf("%d batches, want 1", len(bs))
		}
		checkBatch(t, bs[0], mh, ix, ix.Header.LastUID)
		if d := bs[0].Records[0]; d.Changed&diff.FieldAppended == 0 {
			t.Errorf("appended uid %d not flagged appended: %v", d.UID, d.Changed.Names())
		}
	})
	t.Run("keyword", func(t *testing.T) {
		// A new keyword: Cyrus renames a new cyrus.header into place, then commits the index.
		nh := loadHeader(t, filepath.Join(tm.backing, "m", "cyrus.header"))
		bit, err := nh.AddFlag("urgent")
		if err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(tm.mnt, "m", "cyrus.header.NEW")
		if err := os.WriteFile(tmp, nh.Encode(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(tm.mnt, "m", "cyrus.header")); err != nil {
			t.Fatal(err)
		}
		ix := cyrusCommit(t, f, nh.UserFlags, false, nil, setFlags(0, bit, 12))
		bs := tm.sink.take()
		if len(bs) != 1 {
			t.Fatalf("%d batches, want 1", len(bs))
		}
		checkBatch(t, bs[0], nh, ix, 12)
		if !slices.Contains(bs[0].Records[0].UserFlags, "urgent") {
			t.Errorf("keyword missing: %v", bs[0].Records[0].UserFlags)
		}
	})
	tm.noCaptureErrors(t)
}

func TestCaptureCloseWithoutFsync(t *testing.T) {
	tm := mountT(t, "")
	copyFixture(t, "v17", filepath.Join(tm.backing, "m"))
	mh := loadHeader(t, filepath.Join(tm.backing, "m", "cyrus.header"))
	f, err := os.OpenFile(filepath.Join(tm.mnt, "m", "cyrus.index"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	ix := cyrusCommit(t, f, mh.UserFlags, true, nil, setFlags(diff.FlagDeleted, -1, 2, 9))
	if bs := tm.sink.take(); len(bs) != 0 {
		t.Fatalf("%d batches before close, want 0", len(bs))
	}
	f.Close()
	bs := tm.sink.waitFor(t, 1)
	if len(bs) != 1 {
		t.Fatalf("%d batches after close, want 1", len(bs))
	}
	checkBatch(t, bs[0], mh, ix, 2, 9)
	tm.noCaptureErrors(t)
}

// TestCaptureCloseWithoutFsyncNoOpen: without RELEASE there is no commit at
// close; the writes stay pending and go into the next commit's batch.
func TestCaptureCloseWithoutFsyncNoOpen(t *testing.T) {
	tm := mountT(t, "", noOpen)
	copyFixture(t, "v17", filepath.Join(tm.backing, "m"))
	mh := loadHeader(t, filepath.Join(tm.backing, "m", "cyrus.header"))
	p := filepath.Join(tm.mnt, "m", "cyrus.index")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cyrusCommit(t, f, mh.UserFlags, true, nil, setFlags(diff.FlagDeleted, -1, 2, 9))
	f.Close()
	time.Sleep(100 * time.Millisecond) // a RELEASE would have arrived by now
	if bs := tm.sink.take(); len(bs) != 0 {
		t.Fatalf("%d batches after close without fsync, want 0 (no RELEASE in no-open mode)", len(bs))
	}
	f, err = os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ix := cyrusCommit(t, f, mh.UserFlags, false, nil, setFlags(diff.FlagFlagged, -1, 4))
	bs := tm.sink.take()
	if len(bs) != 1 {
		t.Fatalf("%d batches after the next fsync, want 1", len(bs))
	}
	checkBatch(t, bs[0], mh, ix, 2, 4, 9)
	checkNoOpen(t, tm)
	tm.noCaptureErrors(t)
}

func TestCaptureRepackRename(t *testing.T) { testCaptureRepackRename(t, mountT(t, "")) }

// TestCaptureRepackRenameNoOpen: the rename still commits, and the replaced
// index stays readable through a descriptor opened before.
func TestCaptureRepackRenameNoOpen(t *testing.T) {
	tm := mountT(t, "", noOpen)
	testCaptureRepackRename(t, tm)
	checkNoOpen(t, tm)
}

func testCaptureRepackRename(t *testing.T, tm *testMount) {
	copyFixture(t, "v17", filepath.Join(tm.backing, "m"))
	mh := loadHeader(t, filepath.Join(tm.backing, "m", "cyrus.header"))
	dir := filepath.Join(tm.mnt, "m")
	old, err := os.ReadFile(filepath.Join(dir, "cyrus.index"))
	if err != nil {
		t.Fatal(err)
	}
	// Keep the old index open and mapped, as an imapd would.
	keep, err := os.Open(filepath.Join(dir, "cyrus.index"))
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()

	ix, err := diff.DecodeIndex("old", old)
	if err != nil {
		t.Fatal(err)
	}
	// Repack: drop uid 2, expunge-flag nothing else, flag uid 3 \Seen on the way.
	ix.Records = slices.Delete(ix.Records, 1, 2)
	ix.Header.Generation++
	ix.Header.HighestModSeq++
	r3 := ix.Records[ix.FindUID(3)]
	r3.SystemFlags |= diff.FlagSeen
	r3.ModSeq = ix.Header.HighestModSeq
	ix.Header.SetCounts(diff.Recount(ix, mh.UserFlags))
	nb, err := ix.Encode()
	if err != nil {
		t.Fatal(err)
	}
	nf, err := os.OpenFile(filepath.Join(dir, "cyrus.index.NEW"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	l := ix.Layout
	if _, err := nf.Write(make([]byte, l.HeaderSize)); err != nil { // placeholder header
		t.Fatal(err)
	}
	for i := range ix.Records {
		a := l.RecordOffset(i + 1)
		if _, err := nf.Write(nb[a : a+int64(l.RecordSize)]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nf.WriteAt(nb[:l.HeaderSize], 0); err != nil {
		t.Fatal(err)
	}
	if err := nf.Sync(); err != nil {
		t.Fatal(err)
	}
	if bs := tm.sink.take(); len(bs) != 0 {
		t.Fatalf("%d batches from writing cyrus.index.NEW, want 0", len(bs))
	}
	if err := os.Rename(filepath.Join(dir, "cyrus.index.NEW"), filepath.Join(dir, "cyrus.index")); err != nil {
		t.Fatal(err)
	}
	nf.Close()
	bs := tm.sink.take()
	if len(bs) != 1 {
		t.Fatalf("%d batches after rename, want 1", len(bs))
	}
	if !bs[0].Repack {
		t.Error("batch not marked Repack")
	}
	checkBatch(t, bs[0], mh, ix, 3)

	// The old descriptor still reads and stats the old file; the path the new one.
	if st, err := keep.Stat(); err != nil || st.Size() != int64(len(old)) {
		t.Errorf("stat of the old descriptor: %v, size want %d", err, len(old))
	}
	// No-open mode serves the replaced file's attributes from the daemon's
	// descriptor. (With handles, an fchmod carries no handle and goes by
	// path, and the replaced file has none any more: ENOENT.)
	if tm.cfg.NoOpen {
		if err := keep.Chmod(0o640); err != nil {
			t.Errorf("fchmod of the old descriptor: %v", err)
		} else if st, err := keep.Stat(); err != nil || st.Mode().Perm() != 0o640 {
			t.Errorf("old descriptor after fchmod 0640: %v %v", st.Mode(), err)
		}
	}
	got := make([]byte, len(old))
	if _, err := keep.ReadAt(got, 0); err != nil || !bytes.Equal(got, old) {
		t.Errorf("old descriptor no longer reads the replaced file (err %v)", err)
	}
	cur, err := os.ReadFile(filepath.Join(dir, "cyrus.index"))
	if err != nil || !bytes.Equal(cur, nb) {
		t.Errorf("path does not read the new index (err %v)", err)
	}
	tm.noCaptureErrors(t)
}

// resyncCollector is a Sink that also records Resync requests.
type resyncCollector struct {
	collector
	mu   sync.Mutex
	dirs []string
}

func (r *resyncCollector) Resync(_ context.Context, dir string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dirs = append(r.dirs, dir)
}

// A commit that cannot become a batch (here: the mailbox's cyrus.header is
// unreadable) asks a Resyncer sink to re-derive the mailbox from its index.
func TestCaptureFailedCommitAsksForResync(t *testing.T) {
	sink := &resyncCollector{}
	tm := mountT(t, "", func(c *Config) { c.Sink = sink })
	copyFixture(t, "v17", filepath.Join(tm.backing, "m"))
	mh := loadHeader(t, filepath.Join(tm.backing, "m", "cyrus.header"))
	if err := os.WriteFile(filepath.Join(tm.backing, "m", "cyrus.header"), []byte("not a cyrus header"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(tm.mnt, "m", "cyrus.index"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cyrusCommit(t, f, mh.UserFlags, false, nil, setFlags(diff.FlagSeen, -1, 11))
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.dirs) != 1 || sink.dirs[0] != "m" || len(sink.take()) != 0 {
		t.Fatalf("resync requests %q, batches %d", sink.dirs, len(sink.take()))
	}
	if n := len(tm.logs.FilterMessage("index commit not captured").All()); n != 1 {
		t.Fatalf("%d failure log lines", n)
	}
}
