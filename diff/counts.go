package diff

import (
	"errors"
	"fmt"
)

// Counts are the header values Cyrus derives from the records
// (header_update_counts and mailbox_index_recalc).
type Counts struct {
	Exists           uint32
	Answered         uint32
	Flagged          uint32
	Deleted          uint32
	Unseen           uint32
	QuotaMailboxUsed uint64
	MaxModSeq        uint64 // highest record modseq; the header's highestmodseq may be higher
	SyncCRCBasic     uint32
}

// Add adds (or, with sign -1, removes) one record's contribution.
func (c *Counts) Add(r *Record, names []string, sign int) {
	if r.Expunged() || r.UID == 0 {
		return
	}
	s := uint32(sign)
	bit := func(f uint32) uint32 {
		if r.SystemFlags&f != 0 {
			return s
		}
		return 0
	}
	c.Exists += s
	c.Answered += bit(FlagAnswered)
	c.Flagged += bit(FlagFlagged)
	c.Deleted += bit(FlagDeleted)
	if r.SystemFlags&FlagSeen == 0 {
		c.Unseen += s
	}
	c.QuotaMailboxUsed += uint64(int64(sign) * int64(r.Size))
	c.SyncCRCBasic ^= SyncCRCBasic(r, names)
}

// Recount computes the derived header values from all records.
func Recount(ix *Index, names []string) Counts {
	var c Counts
	for _, r := range ix.Records {
		c.Add(r, names, 1)
		if r.UID != 0 {
			c.MaxModSeq = max(c.MaxModSeq, r.ModSeq)
		}
	}
	return c
}

// Check verifies that the header of ix agrees with its records the way Cyrus
// keeps them: counts, quota used, synccrcs.basic and highestmodseq >= every
// record's modseq. names are the user flag names from cyrus.header. Every
// disagreement is reported, joined, each naming its header offset.
func Check(path string, ix *Index, names []string) error {
	c := Recount(ix, names)
	h := ix.Header
	var errs []error
	cmp := func(off int64, field string, stored, derived uint64) {
		if stored != derived {
			errs = append(errs, corrupt(path, off, field, ErrInconsistent, fmt.Sprintf("%d (from records)", derived), fmt.Sprint(stored)))
		}
	}
	cmp(84, "exists", uint64(h.Exists), uint64(c.Exists))
	cmp(52, "answered", uint64(h.Answered), uint64(c.Answered))
	cmp(56, "flagged", uint64(h.Flagged), uint64(c.Flagged))
	cmp(48, "deleted", uint64(h.Deleted), uint64(c.Deleted))
	if ix.Layout.HeaderSize > 128 {
		cmp(124, "unseen", uint64(h.Unseen), uint64(c.Unseen))
	}
	cmp(32, "quota_mailbox_used", h.QuotaMailboxUsed, c.QuotaMailboxUsed)
	cmp(100, "synccrcs.basic", uint64(h.SyncCRCBasic), uint64(c.SyncCRCBasic))
	if h.HighestModSeq < c.MaxModSeq {
		errs = append(errs, corrupt(path, 68, "highestmodseq", ErrInconsistent, fmt.Sprintf(">= %d (highest record modseq)", c.MaxModSeq), fmt.Sprint(h.HighestModSeq)))
	}
	for i, r := range ix.Records {
		if r.UID > h.LastUID {
			errs = append(errs, corrupt(path, ix.Layout.RecordOffset(i+1), "uid", ErrInconsistent, fmt.Sprintf("<= last_uid %d", h.LastUID), fmt.Sprint(r.UID)))
			break
		}
	}
	return errors.Join(errs...)
}

// SetCounts writes c into h (the unseen count only where the version has it).
func (h *Header) SetCounts(c Counts) {
	h.Exists, h.Answered, h.Flagged, h.Deleted = c.Exists, c.Answered, c.Flagged, c.Deleted
	if h.MinorVersion >= 14 {
		h.Unseen = c.Unseen
	}
	h.QuotaMailboxUsed = c.QuotaMailboxUsed
	h.SyncCRCBasic = c.SyncCRCBasic
}
