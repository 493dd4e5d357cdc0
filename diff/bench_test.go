package diff

import (
	"crypto/sha1"
	"encoding/binary"
	"testing"
	"time"
)

// benchIndex builds a v17 cyrus.index of n records with the codec itself:
// UIDs 1..n, every 7th message \Seen, every 50th expunged, one keyword.
func benchIndex(tb testing.TB, n int) []byte {
	tb.Helper()
	l, _ := LayoutOf(17)
	ix := &Index{Layout: l, Header: &Header{MinorVersion: 17, UIDValidity: 1796312666,
		LastUID: uint32(n), HighestModSeq: uint64(n), LastAppendDate: 1796312000}}
	for i := 1; i <= n; i++ {
		var u [4]byte
		binary.BigEndian.PutUint32(u[:], uint32(i))
		r := &Record{UID: uint32(i), InternalDate: 1704099600 + uint32(i)*60, SentDate: 1704099600,
			Size: 800 + uint32(i%300), HeaderSize: 300, GMTime: 1704099600 + uint32(i)*60,
			CacheOffset: uint64(i) * 420, LastUpdated: 1796312000 + uint32(i), CacheVersion: 12,
			GUID: sha1.Sum(u[:]), ModSeq: uint64(i), CreatedModSeq: uint64(i), CacheCRC: uint32(i) * 2654435761}
		if i%7 == 0 {
			r.SystemFlags |= FlagSeen
		}
		if i%50 == 0 {
			r.SystemFlags |= FlagExpunged
		}
		if i%11 == 0 {
			r.SetUserFlag(0, true)
		}
		ix.Records = append(ix.Records, r)
	}
	ix.Header.SetCounts(Recount(ix, []string{"$Label1"}))
	b, err := ix.Encode()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkScanIndex100k decodes and CRC-checks a whole synthetic 100k-record
// v17 index, and in the same loop times a plain copy of the same bytes into
// a preallocated buffer, so the ratio is measured in one process under the
// same load: "x-copy" is decode time / copy time.
func BenchmarkScanIndex100k(b *testing.B) {
	file := benchIndex(b, 100_000)
	dst := make([]byte, len(file))
	if _, err := DecodeIndex("bench", file); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(file)))
	var dec, cp time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		copy(dst, file)
		t1 := time.Now()
		ix, err := DecodeIndex("bench", file)
		t2 := time.Now()
		if err != nil || len(ix.Records) != 100_000 {
			b.Fatalf("decode: %v", err)
		}
		cp += t1.Sub(t0)
		dec += t2.Sub(t1)
	}
	b.StopTimer()
	b.ReportMetric(float64(dec.Nanoseconds())/float64(b.N), "decode-ns/op")
	b.ReportMetric(float64(cp.Nanoseconds())/float64(b.N), "copy-ns/op")
	b.ReportMetric(float64(dec)/float64(cp), "x-copy")
	b.ReportMetric(float64(len(file))/1e6/(dec.Seconds()/float64(b.N)), "decode-MB/s")
}

// seenBatch is the batch one `UID STORE u +FLAGS (\Seen)` commits on a
// 10k-message mailbox, with a real Cyrus 3.6 unique id (24 characters),
// records at UIDs uid, uid+1, ...
func seenBatch(records int) *Batch {
	const hms = 10_006
	b := &Batch{Mailbox: "iz8u3bq0w1xqkhv1q6mj5bxc", UIDValidity: 1796312508,
		OldHighestModSeq: hms, HighestModSeq: hms + uint64(records), SyncCRC: 3730263012}
	for i := 0; i < records; i++ {
		uid := uint32(1667 + 13*i)
		var u [4]byte
		binary.BigEndian.PutUint32(u[:], uid)
		b.Records = append(b.Records, Delta{UID: uid, GUID: sha1.Sum(u[:]), OldModSeq: uint64(uid),
			ModSeq: hms + uint64(i) + 1, LastUpdated: 1796312543, SystemFlags: FlagSeen,
			Changed: FieldSystemFlags | FieldModSeq | FieldLastUpdated})
	}
	return b
}

// BenchmarkEncodeSeen encodes the batch of a single \Seen change and reports
// its size ("bytes/change", goal <= 48 before transport framing) and the
// marginal size of each further record ("bytes/extra-record": a two-record
// batch minus a one-record batch).
func BenchmarkEncodeSeen(b *testing.B) {
	one, two := seenBatch(1), seenBatch(2)
	p1, err := EncodeBatch(one)
	if err != nil {
		b.Fatal(err)
	}
	p2, err := EncodeBatch(two)
	if err != nil {
		b.Fatal(err)
	}
	if got, err := DecodeBatch(p1); err != nil || !got.Equal(one) {
		b.Fatalf("round trip: %v", err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := EncodeBatch(one); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(p1)), "bytes/change")
	b.ReportMetric(float64(len(p2)-len(p1)), "bytes/extra-record")
	b.ReportMetric(float64(len(one.Mailbox)), "uniqueid-bytes")
}
