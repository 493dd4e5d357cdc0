package diff

import "sort"

// DefaultCatchUpChunk is how many records one catch-up batch carries at most.
const DefaultCatchUpChunk = 10000

// Since builds the catch-up for a replica whose position in this mailbox is
// since: every record with a modseq above it (Rule 1: the primary's index is
// the source of truth, re-read instead of queued). Records go in modseq
// order in batches of at most chunk records; each batch starts where the one
// before ended, so a replica's position advances batch by batch. All batches
// but the last are Partial. It returns nil when the replica is up to date.
func Since(ix *Index, mb MailboxInfo, since uint64, chunk int) []*Batch {
	h := ix.Header
	if chunk <= 0 {
		chunk = DefaultCatchUpChunk
	}
	var recs []*Record
	for _, r := range ix.Records {
		if r.UID != 0 && r.ModSeq > since {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 && h.HighestModSeq <= since {
		return nil
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].ModSeq < recs[j].ModSeq })
	var out []*Batch
	from := since
	for len(recs) > 0 || len(out) == 0 {
		n := min(chunk, len(recs))
		b := &Batch{Mailbox: mb.UniqueID, UIDValidity: h.UIDValidity, OldHighestModSeq: from,
			HighestModSeq: h.HighestModSeq, SyncCRC: h.SyncCRCBasic}
		for _, r := range recs[:n] {
			b.Records = append(b.Records, stateDelta(r, mb.UserFlags))
		}
		recs = recs[n:]
		if len(recs) > 0 {
			b.Partial = true
			b.HighestModSeq = b.Records[n-1].ModSeq
			// Records sharing a modseq must not straddle two chunks' boundary.
			for len(recs) > 0 && recs[0].ModSeq == b.HighestModSeq {
				r := recs[0]
				b.Records = append(b.Records, stateDelta(r, mb.UserFlags))
				recs = recs[1:]
			}
			if len(recs) == 0 {
				b.Partial = false
				b.HighestModSeq = h.HighestModSeq
			}
		}
		sort.Slice(b.Records, func(i, j int) bool { return b.Records[i].UID < b.Records[j].UID })
		out = append(out, b)
		from = b.HighestModSeq
	}
	return out
}

// stateDelta is a record's whole replicated state as a delta.
func stateDelta(r *Record, names []string) Delta {
	return Delta{UID: r.UID, GUID: r.GUID, ModSeq: r.ModSeq, LastUpdated: r.LastUpdated,
		SystemFlags: r.SystemFlags & ReplicatedFlags, UserFlags: FlagNames(r, names),
		Changed: FieldSystemFlags | FieldUserFlags | FieldModSeq}
}
