package diff

import (
	"fmt"
	"io"
	"slices"
	"sort"
)

// Write is one write(2) to an index file inside a commit: where it landed,
// the bytes it replaced and the bytes written. Old is shorter than New when
// the write extended the file (the rest was past the old end of file).
type Write struct {
	Off int64
	Old []byte
	New []byte
}

// MailboxInfo is what the differ needs from the mailbox's cyrus.header.
type MailboxInfo struct {
	UniqueID  string
	UserFlags []string // keyword n is UserFlags[n]
}

// localFields are per-server bookkeeping that is never replicated: a record
// whose only changes are these yields no delta (cyr_expire's silent UNLINKED
// marking, a repack's new cache offsets).
const localFields = FieldCache | FieldInternal

// DiffWrites turns the writes of one commit into a Batch. cur reads the index
// file as it is after the commit (size bytes); writes are in the order they
// were made. A record written in several pieces (a torn write) gives one
// delta; records appended past the old end of file are flagged FieldAppended.
func DiffWrites(path string, cur io.ReaderAt, size int64, writes []Write, mb MailboxInfo) (*Batch, error) {
	head := make([]byte, min(size, 160))
	if _, err := cur.ReadAt(head, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read header of %s: %w", path, err)
	}
	nh, err := DecodeHeader(path, head)
	if err != nil {
		return nil, err
	}
	l, _ := nh.Layout()
	head = head[:l.HeaderSize]

	// The old header: the new bytes with each write's old bytes pasted back,
	// last write first. A header written past the old EOF had no old version.
	var oh *Header
	if touches(writes, 0, int64(l.HeaderSize)) {
		old, complete := unwrite(head, 0, writes)
		if complete {
			if oh, err = DecodeHeader(path+" (before commit)", old); err != nil {
				return nil, err
			}
		}
	} else {
		oh = nh
	}

	recs := map[int]bool{}
	for _, w := range writes {
		end := w.Off + int64(len(w.New))
		if end <= int64(l.HeaderSize) {
			continue
		}
		first := int(max(w.Off-int64(l.HeaderSize), 0) / int64(l.RecordSize))
		last := int((end - 1 - int64(l.HeaderSize)) / int64(l.RecordSize))
		for i := first; i <= last && i < int(nh.NumRecords); i++ {
			recs[i+1] = true
		}
	}
	recnos := make([]int, 0, len(recs))
	for n := range recs {
		recnos = append(recnos, n)
	}
	sort.Ints(recnos)

	b := newBatch(mb, oh, nh)
	buf := make([]byte, l.RecordSize)
	for _, n := range recnos {
		off := l.RecordOffset(n)
		if _, err := cur.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("read record %d of %s at offset %d: %w", n, path, off, err)
		}
		nr, err := DecodeRecord(path, off, l, buf)
		if err != nil {
			return nil, err
		}
		if nr.UID == 0 {
			continue // wiped by reconstruct
		}
		var or *Record
		old, complete := unwrite(buf, off, writes)
		if complete && (oh == nil || n <= int(oh.NumRecords)) {
			if or, err = DecodeRecord(path+" (before commit)", off, l, old); err != nil {
				return nil, err
			}
			if or.UID != nr.UID {
				or = nil // the slot held another (uncommitted) record
			}
		}
		if d, ok := recordDelta(or, nr, mb.UserFlags); ok {
			b.Records = append(b.Records, d)
		}
	}
	return b, nil
}

// touches reports whether any write overlaps [lo, hi).
func touches(ws []Write, lo, hi int64) bool {
	for _, w := range ws {
		if w.Off < hi && w.Off+int64(len(w.New)) > lo {
			return true
		}
	}
	return false
}

// UndoWrites returns a whole file as it was before writes, given its bytes
// cur after them: each write's old bytes are put back, newest first, and a
// file extended by a write is cut back to its old end.
func UndoWrites(cur []byte, writes []Write) []byte {
	b := slices.Clone(cur)
	for i := len(writes) - 1; i >= 0; i-- {
		w := writes[i]
		if end := int(w.Off) + len(w.New); len(b) < end {
			b = append(b, make([]byte, end-len(b))...)
		}
		copy(b[w.Off:], w.Old)
		if len(w.Old) < len(w.New) {
			b = b[:int(w.Off)+len(w.Old)]
		}
	}
	return b
}

// unwrite returns cur (the bytes at off after the writes) as they were before
// them. complete is false when part of the range lay past the old end of file.
func unwrite(cur []byte, off int64, ws []Write) (old []byte, complete bool) {
	old = slices.Clone(cur)
	complete = true
	end := off + int64(len(cur))
	for i := len(ws) - 1; i >= 0; i-- {
		w := ws[i]
		wEnd := w.Off + int64(len(w.New))
		if w.Off >= end || wEnd <= off {
			continue
		}
		// Bytes [w.Off, w.Off+len(Old)) were replaced; [w.Off+len(Old), wEnd) were past EOF.
		for p := max(w.Off, off); p < min(wEnd, end); p++ {
			k := p - w.Off
			if k < int64(len(w.Old)) {
				old[p-off] = w.Old[k]
			} else {
				complete = false
			}
		}
	}
	return old, complete
}

func newBatch(mb MailboxInfo, oh, nh *Header) *Batch {
	b := &Batch{Mailbox: mb.UniqueID, UIDValidity: nh.UIDValidity, HighestModSeq: nh.HighestModSeq, SyncCRC: nh.SyncCRCBasic}
	if oh != nil {
		b.OldHighestModSeq = oh.HighestModSeq
		b.Header = HeaderChanges(oh, nh)
	}
	return b
}

// HeaderChanges lists the header fields that differ between old and new,
// except highestmodseq and synccrcs.basic, which a Batch carries itself.
func HeaderChanges(old, new *Header) []HeaderChange {
	var out []HeaderChange
	ov, nv := old.fieldValues(), new.fieldValues()
	for i, name := range headerFieldIDs {
		if ov[i] != nv[i] && name != "highestmodseq" && name != "synccrcs.basic" {
			out = append(out, HeaderChange{Field: name, Old: ov[i], New: nv[i]})
		}
	}
	return out
}

// fieldValues returns the header's values in headerFieldIDs order.
func (h *Header) fieldValues() []uint64 {
	u := func(v uint32) uint64 { return uint64(v) }
	return []uint64{
		u(h.Generation), u(h.Format), u(h.MinorVersion), u(h.NumRecords), u(h.LastAppendDate), u(h.LastUID),
		h.QuotaMailboxUsed, u(h.POP3LastLogin), u(h.UIDValidity), u(h.Deleted), u(h.Answered), u(h.Flagged),
		u(h.Options), u(h.LeakedCacheRecords), h.HighestModSeq, h.DeletedModSeq, u(h.Exists), u(h.FirstExpunged),
		u(h.LastRepackTime), u(h.HeaderFileCRC), u(h.SyncCRCBasic), u(h.RecentUID), u(h.RecentTime),
		u(h.POP3ShowAfter), u(h.QuotaAnnotUsed), u(h.SyncCRCAnnot), u(h.Unseen), h.CreatedModSeq, u(h.ChangesEpoch),
	}
}

// ChangedFields compares two versions of one record.
func ChangedFields(o, n *Record) Field {
	var f Field
	set := func(c bool, x Field) {
		if c {
			f |= x
		}
	}
	set(o.SystemFlags&IMAPFlags != n.SystemFlags&IMAPFlags, FieldSystemFlags)
	set(o.UserFlags != n.UserFlags, FieldUserFlags)
	set(o.SystemFlags&FlagExpunged != n.SystemFlags&FlagExpunged, FieldExpunged)
	set(o.SystemFlags&^(IMAPFlags|FlagExpunged) != n.SystemFlags&^(IMAPFlags|FlagExpunged), FieldInternal)
	set(o.ModSeq != n.ModSeq, FieldModSeq)
	set(o.LastUpdated != n.LastUpdated, FieldLastUpdated)
	set(o.CID != n.CID, FieldCID)
	set(o.SaveDate != n.SaveDate, FieldSaveDate)
	set(o.CreatedModSeq != n.CreatedModSeq, FieldCreatedModSeq)
	set(o.CacheOffset != n.CacheOffset || o.CacheVersion != n.CacheVersion || o.CacheCRC != n.CacheCRC, FieldCache)
	set(o.InternalDate != n.InternalDate || o.SentDate != n.SentDate || o.Size != n.Size || o.HeaderSize != n.HeaderSize ||
		o.GMTime != n.GMTime || o.ContentLines != n.ContentLines || o.GUID != n.GUID, FieldOther)
	return f
}

// recordDelta builds the delta for a record that was o (nil: appended) and
// is now n; ok is false when nothing replicated changed.
func recordDelta(o, n *Record, names []string) (Delta, bool) {
	d := Delta{UID: n.UID, GUID: n.GUID, ModSeq: n.ModSeq, LastUpdated: n.LastUpdated,
		SystemFlags: n.SystemFlags & ReplicatedFlags, UserFlags: FlagNames(n, names)}
	if o == nil {
		d.Changed = FieldAppended
		return d, true
	}
	d.OldModSeq = o.ModSeq
	d.Changed = ChangedFields(o, n)
	return d, d.Changed&^localFields != 0
}

// FlagNames returns the names of the keywords set in r, in bit order.
// A set bit without a name in cyrus.header is left out, as Cyrus's CRCs do.
func FlagNames(r *Record, names []string) []string {
	var out []string
	for i, n := range names {
		if n != "" && r.HasUserFlag(i) {
			out = append(out, n)
		}
	}
	return out
}

// DiffFiles compares a whole old index with the new one that replaced it
// (a repack renamed cyrus.index.NEW over cyrus.index, or any two snapshots).
// Records are matched by UID, not position.
func DiffFiles(path string, old, new []byte, mb MailboxInfo) (*Batch, error) {
	oi, err := DecodeIndex(path+" (old)", old)
	if err != nil {
		return nil, err
	}
	ni, err := DecodeIndex(path, new)
	if err != nil {
		return nil, err
	}
	b := DiffIndexes(oi, ni, mb)
	b.Repack = oi.Header.Generation != ni.Header.Generation
	return b, nil
}

// DiffIndexes compares two decoded indexes by UID.
func DiffIndexes(oi, ni *Index, mb MailboxInfo) *Batch {
	b := newBatch(mb, oi.Header, ni.Header)
	for _, nr := range ni.Records {
		if nr.UID == 0 {
			continue
		}
		var or *Record
		if i := oi.FindUID(nr.UID); i >= 0 {
			or = oi.Records[i]
		}
		if d, ok := recordDelta(or, nr, mb.UserFlags); ok {
			b.Records = append(b.Records, d)
		}
	}
	return b
}
