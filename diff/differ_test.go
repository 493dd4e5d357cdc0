package diff

import (
	"bytes"
	"slices"
	"testing"
)

// storeLikeCyrus applies a flag change to uid the way Cyrus 3.6 commits it:
// the record rewritten with the next modseq, then the whole header
// (WRITE-PATTERNS.md). It returns the new file and the writes, split at the
// given cut points inside the record to model torn writes.
func storeLikeCyrus(t *testing.T, file []byte, names []string, uid uint32, set uint32, cuts ...int) ([]byte, []Write) {
	t.Helper()
	ix, err := DecodeIndex("fixture", file)
	if err != nil {
		t.Fatal(err)
	}
	i := ix.FindUID(uid)
	if i < 0 {
		t.Fatalf("uid %d absent", uid)
	}
	r := ix.Records[i]
	c := Recount(ix, names)
	c.Add(r, names, -1)
	ix.Header.HighestModSeq++
	r.ModSeq = ix.Header.HighestModSeq
	r.LastUpdated += 100
	r.SystemFlags |= set
	c.Add(r, names, 1)
	ix.Header.SetCounts(c)
	nb, err := ix.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var ws []Write
	off := ix.Layout.RecordOffset(i + 1)
	pieces := append([]int{0}, cuts...)
	pieces = append(pieces, ix.Layout.RecordSize)
	for k := 0; k+1 < len(pieces); k++ {
		a, z := off+int64(pieces[k]), off+int64(pieces[k+1])
		ws = append(ws, Write{Off: a, Old: slices.Clone(file[a:z]), New: slices.Clone(nb[a:z])})
	}
	hs := int64(ix.Layout.HeaderSize)
	ws = append(ws, Write{Off: 0, Old: slices.Clone(file[:hs]), New: slices.Clone(nb[:hs])})
	return nb, ws
}

func TestDiffWritesSeen(t *testing.T) {
	file, mh := v17Primary(t)
	for _, cuts := range [][]int{nil, {16}, {8, 60}} {
		nb, ws := storeLikeCyrus(t, file, mh.UserFlags, 11, FlagSeen, cuts...)
		b, err := DiffWrites("cyrus.index", bytes.NewReader(nb), int64(len(nb)), ws, MailboxInfo{UniqueID: mh.UniqueID, UserFlags: mh.UserFlags})
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Records) != 1 {
			t.Fatalf("cuts %v: %d deltas", cuts, len(b.Records))
		}
		d := b.Records[0]
		if d.UID != 11 || d.ModSeq != 30 || d.OldModSeq == 0 || d.SystemFlags&FlagSeen == 0 ||
			d.Changed != FieldSystemFlags|FieldModSeq|FieldLastUpdated {
			t.Fatalf("delta %+v changed=%v", d, d.Changed.Names())
		}
		if b.OldHighestModSeq != 29 || b.HighestModSeq != 30 || b.Mailbox != mh.UniqueID || b.UIDValidity != 1796318450 {
			t.Fatalf("batch %+v", b)
		}
		ni, _ := DecodeIndex("new", nb)
		if b.SyncCRC != ni.Header.SyncCRCBasic || Check("new", ni, mh.UserFlags) != nil {
			t.Fatalf("synccrc %08x vs %08x: %v", b.SyncCRC, ni.Header.SyncCRCBasic, Check("new", ni, mh.UserFlags))
		}
		if !slices.Equal(fieldNamesOf(b.Header), []string{"unseen"}) {
			t.Fatalf("header changes %+v", b.Header)
		}
		// The same commit seen as two whole files gives the same deltas.
		bf, err := DiffFiles("cyrus.index", file, nb, MailboxInfo{UniqueID: mh.UniqueID, UserFlags: mh.UserFlags})
		if err != nil || bf.Repack || !bf.Equal(b) {
			t.Fatalf("DiffFiles %+v, %v", bf, err)
		}
	}
}

func fieldNamesOf(hs []HeaderChange) []string {
	var s []string
	for _, h := range hs {
		s = append(s, h.Field)
	}
	return s
}

func TestDiffWritesAppend(t *testing.T) {
	file, _ := v17Primary(t)
	ix, _ := DecodeIndex("f", file)
	last := *ix.Records[len(ix.Records)-1]
	last.UID = 13
	last.ModSeq = 30
	ix.Records = append(ix.Records, &last)
	ix.Header.LastUID = 13
	ix.Header.HighestModSeq = 30
	nb, _ := ix.Encode()
	off := int64(len(file))
	ws := []Write{
		{Off: off, Old: nil, New: nb[off:]},
		{Off: 0, Old: file[:160], New: nb[:160]},
	}
	b, err := DiffWrites("cyrus.index", bytes.NewReader(nb), int64(len(nb)), ws, MailboxInfo{UniqueID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Records) != 1 || b.Records[0].UID != 13 || b.Records[0].Changed != FieldAppended {
		t.Fatalf("%+v", b.Records)
	}
}

func TestDiffWritesLocalOnly(t *testing.T) {
	// cyr_expire marks expunged records UNLINKED silently: no delta.
	file, _ := v17Primary(t)
	ix, _ := DecodeIndex("f", file)
	ix.Records[9].SystemFlags |= FlagUnlinked | FlagNeedsCleanup // uid 10, expunged
	nb, _ := ix.Encode()
	off := ix.Layout.RecordOffset(10)
	ws := []Write{{Off: off, Old: file[off : off+112], New: nb[off : off+112]}}
	b, err := DiffWrites("cyrus.index", bytes.NewReader(nb), int64(len(nb)), ws, MailboxInfo{UniqueID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Records) != 0 {
		t.Fatalf("%+v", b.Records)
	}
}

func TestUndoWrites(t *testing.T) {
	orig := []byte("0123456789")
	cur := []byte("0ab3456789XY")
	ws := []Write{{Off: 1, Old: []byte("12"), New: []byte("ab")}, {Off: 10, Old: nil, New: []byte("XY")}}
	if got := UndoWrites(cur, ws); !bytes.Equal(got, orig) {
		t.Errorf("undo = %q, want %q", got, orig)
	}
	// The same range written twice: the first write's old bytes win.
	ws = []Write{{Off: 2, Old: []byte("23"), New: []byte("xx")}, {Off: 2, Old: []byte("xx"), New: []byte("yy")}}
	if got := UndoWrites([]byte("01yy456789"), ws); !bytes.Equal(got, orig) {
		t.Errorf("undo twice = %q", got)
	}
}
