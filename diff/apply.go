package diff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrUIDValidity is returned when a batch's uidvalidity differs from the
// replica mailbox's: the mailbox was recreated on one side and the batch
// must not be applied.
var ErrUIDValidity = errors.New("uidvalidity differs")

// GUIDMismatch describes a record that was not written because the replica
// holds a different message under the same UID (Rule 4).
type GUIDMismatch struct {
	UID     uint32
	Primary GUID
	Replica GUID
}

// Difference is a record that carries the same modseq on both sides but
// not the same state: the two servers diverged (Rule 8). It is reported,
// never resolved by guessing which side is right.
type Difference struct {
	UID            uint32
	ModSeq         uint64
	Primary        []string // flags on the primary, IMAP names (\Expunged for the expunged bit)
	Replica        []string
	PrimaryUpdated uint32 // last_updated on each side
	ReplicaUpdated uint32
}

// ApplyResult is the outcome of applying one batch to one replica index.
type ApplyResult struct {
	Applied      int
	Stale        int // replica record modseq >= delta modseq: already there
	Missing      int // UID absent on the replica
	GUIDMismatch int
	MissingUIDs  []uint32
	Mismatches   []GUIDMismatch
	// Differences are records at the delta's modseq whose flags differ; a
	// catch-up that sends every record (a full compare) finds them all.
	Differences []Difference

	// Writes are the bytes to write: changed records in file order, then the
	// header last. Empty when nothing changes.
	Writes []Write
	// NewFlags are keywords added to the replica's cyrus.header. The caller
	// must write HeaderFile as the new cyrus.header (.NEW, fsync, rename)
	// before the index writes; the index header's header_file_crc already
	// names it.
	NewFlags   []string
	HeaderFile []byte
	// HighestModSeq and SyncCRC are the replica header's values after the apply.
	HighestModSeq uint64
	SyncCRC       uint32
	// Diverged is set when the replica reached the batch's highestmodseq but
	// its synccrcs.basic differs from the primary's (Rule 8).
	Diverged bool
}

// Apply computes how to apply b to a replica index whose current bytes are
// file, with keyword names from the replica's cyrus.header mh (AddFlag is
// called on mh for names it lacks). Per record (Rules 3, 4, 6): a UID the
// replica lacks is missing; a different GUID is a mismatch and is never
// written; a record whose modseq is already >= the delta's is stale;
// otherwise flags, modseq and last_updated are set and the record CRC
// recomputed. The header's counts, synccrcs.basic, highestmodseq and CRC are
// then brought in line incrementally, as Cyrus does.
func Apply(path string, file []byte, mh *MailboxHeader, b *Batch) (*ApplyResult, error) {
	h, err := DecodeHeader(path, file)
	if err != nil {
		return nil, err
	}
	if h.UIDValidity != b.UIDValidity {
		return nil, fmt.Errorf("apply batch for %s to %s: replica %d, primary %d: %w", b.Mailbox, path, h.UIDValidity, b.UIDValidity, ErrUIDValidity)
	}
	l, _ := h.Layout()
	n := int(h.NumRecords)
	if need := l.RecordOffset(n + 1); int64(len(file)) < need {
		return nil, corrupt(path, int64(len(file)), fmt.Sprintf("%d records", n), ErrTruncated, fmt.Sprintf("%d bytes", need), fmt.Sprintf("%d bytes", len(file)))
	}
	uidAt := func(i int) uint32 { return binary.BigEndian.Uint32(file[l.RecordOffset(i+1):]) }

	res := &ApplyResult{}
	c := Counts{Exists: h.Exists, Answered: h.Answered, Flagged: h.Flagged, Deleted: h.Deleted, Unseen: h.Unseen,
		QuotaMailboxUsed: h.QuotaMailboxUsed, SyncCRCBasic: h.SyncCRCBasic}
	hms := h.HighestModSeq
	var prevRec = -1
	for i := range b.Records {
		d := &b.Records[i]
		pos := findUID(n, uidAt, d.UID)
		if pos < 0 {
			res.Missing++
			res.MissingUIDs = append(res.MissingUIDs, d.UID)
			continue
		}
		off := l.RecordOffset(pos + 1)
		r, err := DecodeRecord(path, off, l, file[off:off+int64(l.RecordSize)])
		if err != nil {
			return nil, err
		}
		if r.GUID != d.GUID {
			res.GUIDMismatch++
			res.Mismatches = append(res.Mismatches, GUIDMismatch{UID: d.UID, Primary: d.GUID, Replica: r.GUID})
			continue
		}
		if r.ModSeq >= d.ModSeq {
			res.Stale++
			if r.ModSeq == d.ModSeq {
				if have := replicatedState(r, mh.UserFlags); !slices.Equal(have, deltaState(d)) {
					res.Differences = append(res.Differences, Difference{UID: d.UID, ModSeq: d.ModSeq,
						Primary: deltaState(d), Replica: have, PrimaryUpdated: d.LastUpdated, ReplicaUpdated: r.LastUpdated})
				}
			}
			continue
		}
		var uf [4]uint32
		for _, name := range d.UserFlags {
			k := mh.FlagIndex(name)
			if k < 0 {
				if k, err = mh.AddFlag(name); err != nil {
					return nil, fmt.Errorf("apply uid %d to %s: %w", d.UID, path, err)
				}
				res.NewFlags = append(res.NewFlags, name)
			}
			uf[k/32] |= 1 << (k % 32)
		}
		nr := *r
		nr.SystemFlags = r.SystemFlags&^ReplicatedFlags | d.SystemFlags&ReplicatedFlags
		nr.UserFlags = uf
		nr.ModSeq = d.ModSeq
		nr.LastUpdated = d.LastUpdated
		c.Add(r, mh.UserFlags, -1)
		c.Add(&nr, mh.UserFlags, 1)
		buf := make([]byte, l.RecordSize)
		EncodeRecord(l, &nr, buf)
		w := Write{Off: off, Old: file[off : off+int64(l.RecordSize)], New: buf}
		if pos < prevRec {
			res.Writes = insertSorted(res.Writes, w)
		} else {
			res.Writes = append(res.Writes, w)
		}
		prevRec = pos
		hms = max(hms, d.ModSeq)
		res.Applied++
	}

	nh := *h
	nh.SetCounts(c)
	if res.Missing == 0 && res.GUIDMismatch == 0 {
		hms = max(hms, b.HighestModSeq)
	}
	nh.HighestModSeq = hms
	for _, f := range ReplicatedHeaderFields {
		if v, ok := b.HeaderValue(f); ok {
			nh.raise(f, v)
		}
	}
	if len(res.NewFlags) > 0 {
		res.HeaderFile = mh.Encode()
		nh.HeaderFileCRC = CRC32(res.HeaderFile)
	}
	res.HighestModSeq, res.SyncCRC = nh.HighestModSeq, nh.SyncCRCBasic
	res.Diverged = len(res.Differences) > 0 || !b.Partial && nh.HighestModSeq == b.HighestModSeq && nh.SyncCRCBasic != b.SyncCRC
	hb, err := nh.Encode()
	if err != nil {
		return nil, err
	}
	if res.Applied > 0 || string(hb) != string(file[:l.HeaderSize]) {
		res.Writes = append(res.Writes, Write{Off: 0, Old: file[:l.HeaderSize], New: hb})
	}
	return res, nil
}

func insertSorted(ws []Write, w Write) []Write {
	i := len(ws)
	for i > 0 && ws[i-1].Off > w.Off {
		i--
	}
	ws = append(ws, Write{})
	copy(ws[i+1:], ws[i:])
	ws[i] = w
	return ws
}

// raise sets a 32-bit header field to v if v is larger.
func (h *Header) raise(field string, v uint64) {
	var p *uint32
	switch field {
	case "recentuid":
		p = &h.RecentUID
	case "recenttime":
		p = &h.RecentTime
	case "pop3_last_login":
		p = &h.POP3LastLogin
	case "pop3_show_after":
		if h.MinorVersion >= 13 {
			p = &h.POP3ShowAfter
		}
	}
	if p != nil && v > uint64(*p) && v <= 1<<32-1 {
		*p = uint32(v)
	}
}

// Repair recomputes every derived header value of ix from its records (as
// Cyrus's mailbox_index_recalc does) and raises highestmodseq to the highest
// record modseq. It is used after a crash between record and header writes.
// It reports whether the header changed.
func Repair(ix *Index, names []string) bool {
	before := *ix.Header
	c := Recount(ix, names)
	ix.Header.SetCounts(c)
	ix.Header.HighestModSeq = max(ix.Header.HighestModSeq, c.MaxModSeq)
	after := *ix.Header
	before.CRC, after.CRC = 0, 0
	return before != after
}

// FlagString formats system flags and keywords the way IMAP shows them.
func FlagString(sys uint32, keywords []string) []string {
	var out []string
	for _, f := range []struct {
		bit  uint32
		name string
	}{{FlagAnswered, `\Answered`}, {FlagFlagged, `\Flagged`}, {FlagDeleted, `\Deleted`}, {FlagDraft, `\Draft`}, {FlagSeen, `\Seen`}} {
		if sys&f.bit != 0 {
			out = append(out, f.name)
		}
	}
	return append(out, keywords...)
}

// replicatedState lists a record's replicated flags by name, sorted and
// lower-cased (keywords compare case-insensitively, as in Cyrus).
func replicatedState(r *Record, names []string) []string {
	return flagState(r.SystemFlags, FlagNames(r, names))
}

func deltaState(d *Delta) []string { return flagState(d.SystemFlags, d.UserFlags) }

func flagState(sys uint32, keywords []string) []string {
	out := FlagString(sys, nil)
	if sys&FlagExpunged != 0 {
		out = append(out, `\Expunged`)
	}
	for _, k := range keywords {
		out = append(out, strings.ToLower(k))
	}
	slices.Sort(out)
	return out
}
