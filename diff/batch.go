package diff

import (
	"fmt"
	"slices"
)

// Field is a bit set naming the record fields a delta changed.
type Field uint16

// Fields a Delta can report as changed.
const (
	FieldSystemFlags Field = 1 << iota // IMAP system flags (answered, flagged, deleted, draft, seen)
	FieldUserFlags                     // keywords
	FieldExpunged                      // the EXPUNGED bit
	FieldModSeq
	FieldLastUpdated
	FieldInternal // internal flags other than expunged (unlinked, archived, ...)
	FieldCID
	FieldSaveDate
	FieldCreatedModSeq
	FieldCache    // cache offset, version or crc
	FieldAppended // the UID is new in this commit
	FieldOther    // any other byte of the record
)

var fieldNames = []string{"system_flags", "user_flags", "expunged", "modseq", "last_updated", "internal_flags",
	"cid", "savedate", "createdmodseq", "cache", "appended", "other"}

// Names lists the names of the fields set in f.
func (f Field) Names() []string {
	var s []string
	for i, n := range fieldNames {
		if f&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	return s
}

// Delta is the new replicated state of one record after a commit. It carries
// the whole replicated state, not an edit, so applying it is idempotent.
type Delta struct {
	UID         uint32
	GUID        GUID
	OldModSeq   uint64 // 0 for an appended record
	ModSeq      uint64
	LastUpdated uint32
	SystemFlags uint32   // ReplicatedFlags bits only
	UserFlags   []string // names of the set keywords, in bit order
	Changed     Field
}

// Expunged reports whether the delta marks the record expunged.
func (d *Delta) Expunged() bool { return d.SystemFlags&FlagExpunged != 0 }

// HeaderChange is one header field a commit changed.
type HeaderChange struct {
	Field string `json:"field"`
	Old   uint64 `json:"old"`
	New   uint64 `json:"new"`
}

// Batch is one Cyrus commit on one mailbox: the record deltas and header
// changes between the index before and after it. Identity of the mailbox is
// (Mailbox, UIDValidity); paths never travel.
type Batch struct {
	Mailbox          string // cyrus.header unique id
	UIDValidity      uint32
	OldHighestModSeq uint64
	HighestModSeq    uint64
	SyncCRC          uint32 // primary's synccrcs.basic after the commit
	Repack           bool   // the commit replaced the index file (cyrus.index.NEW renamed over)
	Partial          bool   // a catch-up chunk before the last: SyncCRC is not the state after it
	Records          []Delta
	Header           []HeaderChange // changed header fields (informational; not all are replicated)
}

// Empty reports whether the batch changes nothing.
func (b *Batch) Empty() bool { return len(b.Records) == 0 && len(b.Header) == 0 }

// HeaderValue returns the new value of a changed header field.
func (b *Batch) HeaderValue(field string) (uint64, bool) {
	for _, h := range b.Header {
		if h.Field == field {
			return h.New, true
		}
	}
	return 0, false
}

// MailboxState is what a replica reports about one mailbox when a link
// connects, so the primary can send what it lacks (catch-up by modseq).
type MailboxState struct {
	Mailbox       string
	UIDValidity   uint32
	HighestModSeq uint64 // the replica's position: every change up to here is applied
	SyncCRC       uint32
}

// ValidUniqueID reports whether s can be a Cyrus mailbox unique id: 1..64
// characters of [A-Za-z0-9._-], not "." or "..". Anything from the wire that
// names a mailbox is checked with it before it can reach a path.
func ValidUniqueID(s string) error {
	if len(s) == 0 || len(s) > 64 || s == "." || s == ".." {
		return fmt.Errorf("mailbox unique id %q: %w", s, ErrMalformed)
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("mailbox unique id %q: byte %q not allowed: %w", s, c, ErrMalformed)
		}
	}
	return nil
}

// Equal reports whether two batches carry the same content.
func (b *Batch) Equal(o *Batch) bool {
	if b.Mailbox != o.Mailbox || b.UIDValidity != o.UIDValidity || b.OldHighestModSeq != o.OldHighestModSeq ||
		b.HighestModSeq != o.HighestModSeq || b.SyncCRC != o.SyncCRC || b.Repack != o.Repack || b.Partial != o.Partial ||
		len(b.Records) != len(o.Records) || !slices.Equal(b.Header, o.Header) {
		return false
	}
	for i := range b.Records {
		x, y := &b.Records[i], &o.Records[i]
		if x.UID != y.UID || x.GUID != y.GUID || x.OldModSeq != y.OldModSeq || x.ModSeq != y.ModSeq ||
			x.LastUpdated != y.LastUpdated || x.SystemFlags != y.SystemFlags || x.Changed != y.Changed ||
			!slices.Equal(x.UserFlags, y.UserFlags) {
			return false
		}
	}
	return true
}

// ReplicatedHeaderFields are the header fields a replica takes from the
// primary; each only ever grows, so applying them is idempotent and
// order-free. Every other header value is either the replica's own
// (generation, cache and repack bookkeeping) or derived from its records
// (counts, quota, synccrcs), and is recomputed there.
var ReplicatedHeaderFields = []string{"recentuid", "recenttime", "pop3_last_login", "pop3_show_after"}

// ForReplica returns b without the header changes a replica does not take
// (see ReplicatedHeaderFields), and reports whether anything is left to
// send: a record delta, a highestmodseq move or a replicated header field.
func (b *Batch) ForReplica() (*Batch, bool) {
	out := *b
	out.Header = nil
	for _, h := range b.Header {
		if slices.Contains(ReplicatedHeaderFields, h.Field) {
			out.Header = append(out.Header, h)
		}
	}
	return &out, len(out.Records) > 0 || len(out.Header) > 0 || out.HighestModSeq != out.OldHighestModSeq
}
