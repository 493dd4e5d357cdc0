package diff

import (
	"bytes"
	"errors"
	"testing"
)

func TestDecodeSharedV17(t *testing.T) {
	b := readShared(t, "v17/cyrus.index")
	hb := readShared(t, "v17/cyrus.header")
	mh, err := ParseMailboxHeader("cyrus.header", hb)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := DecodeIndex("v17/cyrus.index", b)
	if err != nil {
		t.Fatal(err)
	}
	h := ix.Header
	// Values from fixtures/README.md, written by Cyrus 3.6.1.
	if h.MinorVersion != 17 || h.NumRecords != 20 || h.Exists != 19 || h.LastUID != 20 || h.HighestModSeq != 42 ||
		h.Unseen != 7 || h.RecentUID != 20 || h.Options != 1 || h.UIDValidity != 1796312666 {
		t.Fatalf("header %+v", h)
	}
	if r := ix.Records[14]; r.UID != 15 || r.SystemFlags != 0x80000004 {
		t.Fatalf("record 15: %+v", r)
	}
	if r := ix.Records[7]; r.UserFlags[0] != 3 {
		t.Fatalf("uid 8 user flags %x", r.UserFlags)
	}
	if err := Check("v17", ix, mh.UserFlags); err != nil {
		t.Fatal(err)
	}
	out, err := ix.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, b) {
		t.Fatal("round trip is not byte-identical")
	}
}

func TestDecodeSharedV12(t *testing.T) {
	b := readShared(t, "cassandane/v12/cyrus.index")
	ix, err := DecodeIndex("v12", b)
	if err != nil {
		t.Fatal(err)
	}
	// cyrus-index-format.md §12: header and record 1 of the 2.4 fixture.
	if ix.Header.SyncCRCBasic != 0x578db63c || ix.Header.NumRecords != 9 || ix.Header.HighestModSeq != 2 {
		t.Fatalf("%+v", ix.Header)
	}
	r := ix.Records[0]
	if r.GUID.String() != "4355b0d3d08ee200938b528dcf6be6ffd5d8e0ee" || r.CRC != 0x6b613798 || r.CacheCRC != 0x37eafb63 {
		t.Fatalf("%+v", r)
	}
	if got := SyncCRCBasic(r, nil); got != 0xD9D38489 {
		t.Fatalf("crc_basic %08x", got)
	}
	if err := Check("v12", ix, nil); err != nil {
		t.Fatal(err)
	}
	out, _ := ix.Encode()
	if !bytes.Equal(out, b) {
		t.Fatal("round trip is not byte-identical")
	}
}

func TestRefusedVersions(t *testing.T) {
	for _, f := range []string{"cassandane/v9/cyrus.index", "cassandane/v10/cyrus.index", "cassandane/v19/user/cassandane/cyrus.index"} {
		b := readShared(t, f)
		_, err := DecodeIndex(f, b)
		var ce *CorruptError
		if !errors.Is(err, ErrUnknownVersion) || !errors.As(err, &ce) || ce.Offset != 8 {
			t.Errorf("%s: want unknown version at offset 8, got %v", f, err)
		}
	}
}

// Versions outside 12..17 are refused at offset 8 before anything else is
// read (no committed fixture needed: the version word of a real v17 file is
// patched).
func TestRefusedVersionsPatched(t *testing.T) {
	raw := mustRead(t, "testdata/v17/cyrus.index")
	for _, v := range []byte{0, 9, 10, 11, 18, 19, 20, 255} {
		b := bytes.Clone(raw)
		b[11] = v
		_, err := DecodeIndex("p", b)
		var ce *CorruptError
		if !errors.Is(err, ErrUnknownVersion) || !errors.As(err, &ce) || ce.Offset != 8 {
			t.Errorf("version %d: %v", v, err)
		}
	}
}
