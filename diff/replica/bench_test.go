package replica

import (
	"context"
	"testing"

	"github.com/indexwire/indexwire/diff"
)

// BenchmarkApply100k applies batches of 1000 flag changes to a 100k-record
// v17 mailbox on disk, everything included (redo file and its fsync, locks,
// mapping, record and header writes, index fsync), and reports records
// applied per second (goal >= 200k/s). "contiguous" is one STORE over a UID
// range (1000 records on 28 pages); "spread" changes every 100th UID, so
// each record dirties its own page and the index fsync flushes 1000 pages.
func BenchmarkApply100k(b *testing.B) {
	const n, per = 100_000, 1000
	for _, bc := range []struct {
		name string
		uid  func(round, k int) uint32
	}{
		{"contiguous", func(round, k int) uint32 { return uint32(1 + (round*per+k)%n) }},
		{"spread", func(round, k int) uint32 { return uint32(1 + (k*(n/per)+round)%n) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newSynthSpool(b)
			const id = "bench0123456789"
			s.addMailbox(b, uuidRel(id), id, n, "work")
			a, _ := s.applier(b)
			ctx := context.Background()
			uids := make([]uint32, per)
			modseq := uint64(n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for k := range uids {
					uids[k] = bc.uid(i, k)
				}
				batch := flagBatch(id, modseq, modseq, uids, diff.FlagSeen, "work")
				modseq += per
				b.StartTimer()
				res, err := a.Apply(ctx, batch)
				if err != nil {
					b.Fatal(err)
				}
				if res.Applied != per {
					b.Fatalf("applied %d of %d", res.Applied, per)
				}
			}
			b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
