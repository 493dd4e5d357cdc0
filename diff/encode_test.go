package diff

import (
	"errors"
	"testing"
)

func sampleBatch() *Batch {
	g, _ := ParseGUID("44814967d2728113e1d83ce06fed00a4e27a0697")
	return &Batch{
		Mailbox: "8iewv5rgkc8cd7c4l4843u64", UIDValidity: 1796312666,
		OldHighestModSeq: 42, HighestModSeq: 44, SyncCRC: 0xdeadbeef,
		Records: []Delta{
			{UID: 3, GUID: g, OldModSeq: 36, ModSeq: 43, LastUpdated: 1796312700, SystemFlags: FlagSeen | FlagAnswered,
				UserFlags: []string{"$Label1"}, Changed: FieldSystemFlags | FieldModSeq | FieldLastUpdated},
			{UID: 9, GUID: g, OldModSeq: 30, ModSeq: 44, LastUpdated: 1796312700, SystemFlags: FlagExpunged | FlagDeleted,
				UserFlags: []string{"$Label1", "work"}, Changed: FieldExpunged | FieldModSeq},
		},
		Header: []HeaderChange{{Field: "recentuid", Old: 10, New: 20}},
	}
}

func TestBatchRoundTrip(t *testing.T) {
	for _, b := range []*Batch{sampleBatch(), {Mailbox: "a", UIDValidity: 1, HighestModSeq: 5, OldHighestModSeq: 5}} {
		p, err := EncodeBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeBatch(p)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(b) {
			t.Fatalf("got %+v\nwant %+v", got, b)
		}
	}
}

func TestBatchSingleSeenSize(t *testing.T) {
	b := sampleBatch()
	b.Records = b.Records[:1]
	b.Records[0].UserFlags = nil
	b.Header = nil
	p, _ := EncodeBatch(b)
	// Fixed costs: 25-byte unique id, 20-byte GUID, 8-byte xxhash64, 4-byte CRC.
	if len(p) > 80 {
		t.Fatalf("single \\Seen batch is %d bytes", len(p))
	}
}

func TestDecodeBatchRejects(t *testing.T) {
	good, _ := EncodeBatch(sampleBatch())
	reseal := sealForTest
	cases := map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)-3],
		"bitflip":   append(append([]byte{}, good[:20]...), append([]byte{good[20] ^ 1}, good[21:]...)...),
		"version":   reseal(append([]byte{9}, good[1:len(good)-8]...)),
		"trailing":  reseal(append(append([]byte{}, good[:len(good)-8]...), 0)),
		"path id":   reseal(append([]byte{1, 0, 5}, append([]byte("../x1"), good[2+1+24:len(good)-8]...)...)),
	}
	for name, in := range cases {
		_, err := DecodeBatch(in)
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Errorf("%s: want CorruptError, got %v", name, err)
		}
	}
}

func TestForReplica(t *testing.T) {
	b := sampleBatch()
	b.Header = []HeaderChange{{"unseen", 7, 6}, {"recenttime", 1, 2}, {"generation", 0, 1}}
	rb, ok := b.ForReplica()
	if !ok || len(rb.Header) != 1 || rb.Header[0].Field != "recenttime" || len(b.Header) != 3 {
		t.Fatalf("%+v %v", rb.Header, ok)
	}
	// A repack: no records, no modseq move, only local header fields.
	rp := &Batch{Mailbox: "m", HighestModSeq: 9, OldHighestModSeq: 9, Repack: true,
		Header: []HeaderChange{{"generation", 0, 1}, {"num_records", 20, 16}}}
	if _, ok := rp.ForReplica(); ok {
		t.Fatal("a repack with nothing replicated would be sent")
	}
}
