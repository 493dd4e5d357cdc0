package link

import (
	"context"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
)

// BenchmarkSendSeen sends a batch of one record gaining \Seen, the most
// common Cyrus commit, and reports the bytes written to the QUIC stream
// (frame header and payload), the UDP bytes each way, and the round trip to
// its Ack (ns/op).
func BenchmarkSendSeen(b *testing.B) {
	_, snd := pair(b, &fakeApplier{}, ServerConfig{}, SenderConfig{})
	batch := &diff.Batch{Mailbox: "6f1e1b5c-4a57-4d4c-9d3a-0c8f2a1b7e90", UIDValidity: 1700000000,
		OldHighestModSeq: 4711, HighestModSeq: 4712, SyncCRC: 0x9e3779b9,
		Records: []diff.Delta{{UID: 1234, GUID: diff.GUID{0xde, 0xad, 0xbe, 0xef}, OldModSeq: 4000, ModSeq: 4712,
			LastUpdated: 1700000123, SystemFlags: diff.FlagSeen, Changed: diff.FieldSystemFlags | diff.FieldModSeq | diff.FieldLastUpdated}},
		Header: []diff.HeaderChange{{Field: "highestmodseq", Old: 4711, New: 4712}, {Field: "unseen", Old: 3, New: 2}}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := snd.Send(ctx, batch); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	before := snd.Stats()
	snd.mu.Lock()
	conn := snd.sess.conn
	snd.mu.Unlock()
	udpBefore := conn.ConnectionStats()
	b.ResetTimer()
	for b.Loop() {
		if _, err := snd.Send(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st := snd.Stats()
	udp := conn.ConnectionStats()
	n := float64(st.BatchesSent - before.BatchesSent)
	b.ReportMetric(float64(st.FrameBytes-before.FrameBytes)/n, "frame-B/batch")
	b.ReportMetric(float64(st.PayloadBytes-before.PayloadBytes)/n, "payload-B/batch")
	// UDP bytes include QUIC packet overhead, ACKs, stream open/close and the occasional heartbeat.
	b.ReportMetric(float64(udp.BytesSent-udpBefore.BytesSent)/n, "udp-tx-B/batch")
	b.ReportMetric(float64(udp.BytesReceived-udpBefore.BytesReceived)/n, "udp-rx-B/batch")
}
