package diff

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// BatchVersion is the version byte of the batch encoding.
const BatchVersion = 1

// Limits enforced by DecodeBatch so a hostile input cannot make it allocate
// without bound.
const (
	MaxBatchRecords = 1 << 20
	maxNameLen      = 1024
)

const (
	bflagRepack = 1 << iota
	bflagPartial
	bflagKnown = bflagRepack | bflagPartial
)

// headerFieldIDs numbers the header fields a HeaderChange can name on the wire.
var headerFieldIDs = []string{
	"generation", "format", "minor_version", "num_records", "last_appenddate", "last_uid",
	"quota_mailbox_used", "pop3_last_login", "uidvalidity", "deleted", "answered", "flagged",
	"options", "leaked_cache_records", "highestmodseq", "deletedmodseq", "exists", "first_expunged",
	"last_repack_time", "header_file_crc", "synccrcs.basic", "recentuid", "recenttime",
	"pop3_show_after", "quota_annot_used", "synccrcs.annot", "unseen", "createdmodseq", "changes_epoch",
}

// EncodeBatch returns the compact binary form of b: a version byte, varint
// fields, keyword names interned once per batch, record UIDs and modseqs as
// deltas, and an xxhash64 of everything before it in the last 8 bytes.
func EncodeBatch(b *Batch) ([]byte, error) {
	var names []string
	idx := map[string]uint64{}
	for _, d := range b.Records {
		for _, n := range d.UserFlags {
			if _, ok := idx[n]; !ok {
				idx[n] = uint64(len(names))
				names = append(names, n)
			}
		}
	}
	out := make([]byte, 0, 64+len(b.Mailbox)+40*len(b.Records))
	out = append(out, BatchVersion)
	var fl byte
	if b.Repack {
		fl |= bflagRepack
	}
	if b.Partial {
		fl |= bflagPartial
	}
	out = append(out, fl)
	out = appendString(out, b.Mailbox)
	out = binary.AppendUvarint(out, uint64(b.UIDValidity))
	out = binary.AppendUvarint(out, b.HighestModSeq)
	out = binary.AppendVarint(out, int64(b.HighestModSeq-b.OldHighestModSeq))
	out = binary.BigEndian.AppendUint32(out, b.SyncCRC)
	out = binary.AppendUvarint(out, uint64(len(names)))
	for _, n := range names {
		out = appendString(out, n)
	}
	out = binary.AppendUvarint(out, uint64(len(b.Records)))
	var prevUID uint32
	var prevLU uint32
	for i := range b.Records {
		d := &b.Records[i]
		out = binary.AppendVarint(out, int64(d.UID)-int64(prevUID))
		prevUID = d.UID
		out = binary.AppendUvarint(out, uint64(d.Changed))
		out = append(out, d.GUID[:]...)
		out = binary.AppendVarint(out, int64(b.HighestModSeq-d.ModSeq))
		out = binary.AppendVarint(out, int64(d.ModSeq-d.OldModSeq))
		out = binary.AppendVarint(out, int64(d.LastUpdated)-int64(prevLU))
		prevLU = d.LastUpdated
		if d.SystemFlags&^ReplicatedFlags != 0 {
			return nil, fmt.Errorf("encode batch: uid %d: system flags %#x outside the replicated set", d.UID, d.SystemFlags)
		}
		out = binary.AppendUvarint(out, uint64(d.SystemFlags&IMAPFlags)|uint64(d.SystemFlags>>31)<<5)
		out = binary.AppendUvarint(out, uint64(len(d.UserFlags)))
		for _, n := range d.UserFlags {
			out = binary.AppendUvarint(out, idx[n])
		}
	}
	out = binary.AppendUvarint(out, uint64(len(b.Header)))
	for _, h := range b.Header {
		id := slices.Index(headerFieldIDs, h.Field)
		if id < 0 {
			return nil, fmt.Errorf("encode batch: unknown header field %q", h.Field)
		}
		out = binary.AppendUvarint(out, uint64(id))
		out = binary.AppendUvarint(out, h.Old)
		out = binary.AppendUvarint(out, h.New)
	}
	return binary.BigEndian.AppendUint64(out, xxhash.Sum64(out)), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// batchReader walks an encoded batch and remembers the first error with its offset.
type batchReader struct {
	b   []byte
	off int
	err error
}

func (r *batchReader) fail(field string, err error, want, got string) {
	if r.err == nil {
		r.err = corrupt("batch", int64(r.off), field, err, want, got)
	}
}

func (r *batchReader) uvarint(field string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail(field, ErrMalformed, "uvarint", "truncated or overlong")
		return 0
	}
	r.off += n
	return v
}

func (r *batchReader) varint(field string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail(field, ErrMalformed, "varint", "truncated or overlong")
		return 0
	}
	r.off += n
	return v
}

func (r *batchReader) bytes(field string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail(field, ErrTruncated, fmt.Sprintf("%d bytes", n), fmt.Sprintf("%d bytes", len(r.b)-r.off))
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

func (r *batchReader) str(field string) string {
	n := r.uvarint(field + " length")
	if n > maxNameLen {
		r.fail(field, ErrMalformed, fmt.Sprintf("length <= %d", maxNameLen), fmt.Sprint(n))
		return ""
	}
	return string(r.bytes(field, int(n)))
}

func (r *batchReader) u32(field string, v uint64) uint32 {
	if v > 1<<32-1 {
		r.fail(field, ErrMalformed, "32-bit value", fmt.Sprint(v))
	}
	return uint32(v)
}

// DecodeBatch decodes and verifies an encoded batch. Any malformation is an
// error naming the byte offset; the mailbox id is checked with ValidUniqueID.
func DecodeBatch(p []byte) (*Batch, error) {
	if len(p) < 2+8 {
		return nil, corrupt("batch", 0, "batch", ErrTruncated, "at least 10 bytes", fmt.Sprintf("%d bytes", len(p)))
	}
	body := p[:len(p)-8]
	if want, got := xxhash.Sum64(body), binary.BigEndian.Uint64(p[len(p)-8:]); want != got {
		return nil, corrupt("batch", int64(len(body)), "xxhash64", ErrBadCRC, fmt.Sprintf("%016x", want), fmt.Sprintf("%016x", got))
	}
	if body[0] != BatchVersion {
		return nil, corrupt("batch", 0, "version", ErrUnknownVersion, fmt.Sprint(BatchVersion), fmt.Sprint(body[0]))
	}
	if body[1]&^bflagKnown != 0 {
		return nil, corrupt("batch", 1, "flags", ErrMalformed, fmt.Sprintf("bits %#x", bflagKnown), fmt.Sprintf("%#x", body[1]))
	}
	r := &batchReader{b: body, off: 2}
	b := &Batch{Repack: body[1]&bflagRepack != 0, Partial: body[1]&bflagPartial != 0}
	b.Mailbox = r.str("mailbox")
	if r.err == nil {
		if err := ValidUniqueID(b.Mailbox); err != nil {
			r.fail("mailbox", ErrMalformed, "unique id", fmt.Sprintf("%q", b.Mailbox))
		}
	}
	b.UIDValidity = r.u32("uidvalidity", r.uvarint("uidvalidity"))
	b.HighestModSeq = r.uvarint("highestmodseq")
	b.OldHighestModSeq = b.HighestModSeq - uint64(r.varint("old highestmodseq"))
	if crc := r.bytes("synccrc", 4); crc != nil {
		b.SyncCRC = binary.BigEndian.Uint32(crc)
	}
	nn := r.uvarint("name count")
	if nn > MaxUserFlags*4 {
		r.fail("name count", ErrMalformed, "at most 512", fmt.Sprint(nn))
	}
	names := make([]string, 0, min(nn, MaxUserFlags))
	for i := uint64(0); i < nn && r.err == nil; i++ {
		names = append(names, r.str("keyword name"))
	}
	nr := r.uvarint("record count")
	if nr > MaxBatchRecords || nr > uint64(len(body)) {
		r.fail("record count", ErrMalformed, fmt.Sprintf("at most %d", min(MaxBatchRecords, len(body))), fmt.Sprint(nr))
	}
	if r.err == nil {
		b.Records = make([]Delta, 0, nr)
	}
	var uid int64
	var lu int64
	for i := uint64(0); i < nr && r.err == nil; i++ {
		var d Delta
		uid += r.varint("uid")
		if uid <= 0 || uid > 1<<32-1 {
			r.fail("uid", ErrMalformed, "1..2^32-1", fmt.Sprint(uid))
		}
		d.UID = uint32(uid)
		d.Changed = Field(r.uvarint("changed"))
		copy(d.GUID[:], r.bytes("guid", 20))
		d.ModSeq = b.HighestModSeq - uint64(r.varint("modseq"))
		d.OldModSeq = d.ModSeq - uint64(r.varint("old modseq"))
		lu += r.varint("last_updated")
		if lu < 0 || lu > 1<<32-1 {
			r.fail("last_updated", ErrMalformed, "32-bit time", fmt.Sprint(lu))
		}
		d.LastUpdated = uint32(lu)
		fl := r.uvarint("system flags")
		if fl > 0x3f {
			r.fail("system flags", ErrMalformed, "6 bits", fmt.Sprintf("%#x", fl))
		}
		d.SystemFlags = uint32(fl&0x1f) | uint32(fl>>5)<<31
		nu := r.uvarint("user flag count")
		if nu > MaxUserFlags {
			r.fail("user flag count", ErrMalformed, "at most 128", fmt.Sprint(nu))
		}
		for j := uint64(0); j < nu && r.err == nil; j++ {
			k := r.uvarint("user flag")
			if k >= uint64(len(names)) {
				r.fail("user flag", ErrMalformed, fmt.Sprintf("index < %d", len(names)), fmt.Sprint(k))
				break
			}
			d.UserFlags = append(d.UserFlags, names[k])
		}
		b.Records = append(b.Records, d)
	}
	nh := r.uvarint("header change count")
	if nh > uint64(len(headerFieldIDs)) {
		r.fail("header change count", ErrMalformed, fmt.Sprintf("at most %d", len(headerFieldIDs)), fmt.Sprint(nh))
	}
	for i := uint64(0); i < nh && r.err == nil; i++ {
		id := r.uvarint("header field")
		if id >= uint64(len(headerFieldIDs)) {
			r.fail("header field", ErrMalformed, fmt.Sprintf("id < %d", len(headerFieldIDs)), fmt.Sprint(id))
			break
		}
		b.Header = append(b.Header, HeaderChange{Field: headerFieldIDs[id], Old: r.uvarint("header old"), New: r.uvarint("header new")})
	}
	if r.err == nil && r.off != len(body) {
		r.fail("batch end", ErrMalformed, "end of batch", fmt.Sprintf("%d trailing bytes", len(body)-r.off))
	}
	if r.err != nil {
		return nil, r.err
	}
	return b, nil
}
