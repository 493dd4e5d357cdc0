package diff

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func applyWrites(file []byte, ws []Write) []byte {
	out := slices.Clone(file)
	for _, w := range ws {
		copy(out[w.Off:], w.New)
	}
	return out
}

func v17Primary(t *testing.T) ([]byte, *MailboxHeader) {
	mh, err := ParseMailboxHeader("h", mustRead(t, "testdata/v17/cyrus.header"))
	if err != nil {
		t.Fatal(err)
	}
	return mustRead(t, "testdata/v17/cyrus.index"), mh
}

func commitBatch(t *testing.T, before, after []byte, mh *MailboxHeader) *Batch {
	b, err := DiffFiles("p", before, after, MailboxInfo{UniqueID: mh.UniqueID, UserFlags: mh.UserFlags})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestApplyMakesReplicaEqual(t *testing.T) {
	replica, mh := v17Primary(t)
	primary, _ := storeLikeCyrus(t, replica, mh.UserFlags, 11, FlagSeen)
	b := commitBatch(t, replica, primary, mh)
	res, err := Apply("r", replica, mh, b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 1 || res.Diverged || len(res.Writes) != 2 || res.Writes[1].Off != 0 {
		t.Fatalf("%+v", res)
	}
	got := applyWrites(replica, res.Writes)
	if !bytes.Equal(got, primary) {
		t.Fatal("replica is not byte-identical to the primary after apply")
	}
	// Same batch again: stale, nothing to write (Rule 3).
	res2, err := Apply("r", got, mh, b)
	if err != nil || res2.Stale != 1 || len(res2.Writes) != 0 {
		t.Fatalf("second apply %+v %v", res2, err)
	}
}

func TestApplyOutOfOrder(t *testing.T) {
	replica, mh := v17Primary(t)
	p1, _ := storeLikeCyrus(t, replica, mh.UserFlags, 11, FlagSeen)
	p2, _ := storeLikeCyrus(t, p1, mh.UserFlags, 12, FlagFlagged)
	b1, b2 := commitBatch(t, replica, p1, mh), commitBatch(t, p1, p2, mh)
	r := replica
	for _, b := range []*Batch{b2, b1, b2} {
		res, err := Apply("r", r, mh, b)
		if err != nil {
			t.Fatal(err)
		}
		r = applyWrites(r, res.Writes)
	}
	if !bytes.Equal(r, p2) {
		t.Fatal("swapped batches did not converge")
	}
}

func TestApplyGUIDMismatchAndMissing(t *testing.T) {
	replica, mh := v17Primary(t)
	primary, _ := storeLikeCyrus(t, replica, mh.UserFlags, 11, FlagSeen)
	b := commitBatch(t, replica, primary, mh)
	b.Records[0].GUID[0] ^= 0xff
	b.Records = append(b.Records, Delta{UID: 99, ModSeq: 50})
	res, err := Apply("r", replica, mh, b)
	if err != nil {
		t.Fatal(err)
	}
	if res.GUIDMismatch != 1 || res.Missing != 1 || res.Applied != 0 || !slices.Equal(res.MissingUIDs, []uint32{99}) {
		t.Fatalf("%+v", res)
	}
	for _, w := range res.Writes {
		if w.Off != 0 {
			t.Fatalf("a record was written despite the GUID mismatch: %+v", w.Off)
		}
	}
}

func TestApplyNewKeyword(t *testing.T) {
	replica, mh := v17Primary(t)
	ix, _ := DecodeIndex("r", replica)
	pmh := *mh
	pmh.UserFlags = append(slices.Clone(mh.UserFlags), "urgent")
	r := ix.Records[ix.FindUID(5)]
	c := Recount(ix, pmh.UserFlags)
	c.Add(r, pmh.UserFlags, -1)
	ix.Header.HighestModSeq++
	r.ModSeq = ix.Header.HighestModSeq
	r.SetUserFlag(2, true)
	c.Add(r, pmh.UserFlags, 1)
	ix.Header.SetCounts(c)
	primary, _ := ix.Encode()
	b := commitBatch(t, replica, primary, &pmh)
	if !slices.Equal(b.Records[0].UserFlags, []string{"urgent"}) {
		t.Fatalf("%+v", b.Records[0])
	}
	rmh := *mh
	rmh.UserFlags = slices.Clone(mh.UserFlags)
	res, err := Apply("r", replica, &rmh, b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.NewFlags, []string{"urgent"}) || !slices.Equal(rmh.UserFlags, pmh.UserFlags) || res.Diverged {
		t.Fatalf("%+v %v", res, rmh.UserFlags)
	}
	got, _ := DecodeIndex("r", applyWrites(replica, res.Writes))
	if got.Header.HeaderFileCRC != CRC32(res.HeaderFile) || !bytes.Equal(res.HeaderFile, rmh.Encode()) {
		t.Fatal("header_file_crc does not name the new cyrus.header")
	}
	got.Header.HeaderFileCRC = ix.Header.HeaderFileCRC
	if b, _ := got.Encode(); !bytes.Equal(b, primary) {
		t.Fatal("replica differs after keyword apply")
	}
}

func TestApplyRefusesUIDValidity(t *testing.T) {
	replica, mh := v17Primary(t)
	_, err := Apply("r", replica, mh, &Batch{Mailbox: mh.UniqueID, UIDValidity: 1})
	if !errors.Is(err, ErrUIDValidity) {
		t.Fatal(err)
	}
}

func TestRepairAfterTornApply(t *testing.T) {
	replica, mh := v17Primary(t)
	primary, _ := storeLikeCyrus(t, replica, mh.UserFlags, 11, FlagSeen)
	res, _ := Apply("r", replica, mh, commitBatch(t, replica, primary, mh))
	torn := applyWrites(replica, res.Writes[:1]) // records written, header not
	ix, err := DecodeIndex("torn", torn)
	if err != nil {
		t.Fatal(err)
	}
	if Check("torn", ix, mh.UserFlags) == nil {
		t.Fatal("torn index passes Check")
	}
	if !Repair(ix, mh.UserFlags) {
		t.Fatal("Repair changed nothing")
	}
	fixed, _ := ix.Encode()
	if !bytes.Equal(fixed, primary) {
		t.Fatal("repaired index differs from the primary")
	}
}

// A full compare (catch-up from 0) finds a record whose flags differ at an
// equal modseq, reports it and writes nothing.
func TestApplyFindsDifferencesAtEqualModSeq(t *testing.T) {
	primary, mh := v17Primary(t)
	ix, _ := DecodeIndex("r", primary)
	ix.Records[ix.FindUID(11)].SystemFlags |= FlagFlagged // same modseq, another flag
	replica, _ := ix.Encode()
	bs := Since(mustDecode(t, primary), MailboxInfo{UniqueID: mh.UniqueID, UserFlags: mh.UserFlags}, 0, 0)
	res, err := Apply("r", replica, mh, bs[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Differences) != 1 || res.Differences[0].UID != 11 || !res.Diverged || res.Applied != 0 {
		t.Fatalf("%+v", res)
	}
	d := res.Differences[0]
	if slices.Contains(d.Primary, `\Flagged`) || !slices.Contains(d.Replica, `\Flagged`) {
		t.Fatalf("difference %+v", d)
	}
	for _, w := range res.Writes {
		if w.Off != 0 {
			t.Fatal("a differing record was overwritten")
		}
	}
	// Identical sides: nothing differs.
	if res, _ := Apply("r", primary, mh, bs[0]); len(res.Differences) != 0 || res.Diverged {
		t.Fatalf("identical: %+v", res)
	}
}

func mustDecode(t *testing.T, b []byte) *Index {
	t.Helper()
	ix, err := DecodeIndex("t", b)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}
