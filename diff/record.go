package diff

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// MaxUserFlags is the number of keyword bits in a record (4 x 32).
const MaxUserFlags = 128

// GUID is a message GUID: the raw SHA-1 of the message file in the spool.
type GUID [20]byte

// String returns the 40-character lowercase hex form Cyrus prints.
func (g GUID) String() string { return hex.EncodeToString(g[:]) }

func (g GUID) appendHex(b []byte) []byte { return hex.AppendEncode(b, g[:]) }

// ParseGUID parses the 40-character hex form.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 40 {
		return g, fmt.Errorf("guid %q: want 40 hex digits: %w", s, ErrMalformed)
	}
	if _, err := hex.Decode(g[:], []byte(s)); err != nil {
		return g, fmt.Errorf("guid %q: %w", s, ErrMalformed)
	}
	return g, nil
}

// Record is one decoded index record. Fields a version does not have stay
// zero; every byte a version has maps to a field, so encoding is exact.
type Record struct {
	UID           uint32
	InternalDate  uint32
	SentDate      uint32
	Size          uint32
	HeaderSize    uint32
	GMTime        uint32
	CacheOffset   uint64 // 48 bits: low 32 at 24, bits 32..47 in the high half of the word at 56
	LastUpdated   uint32
	SystemFlags   uint32 // IMAP flags and internal flags, as on disk
	UserFlags     [4]uint32
	ContentLines  uint32 // offset 52 in v12..v14
	SaveDate      uint32 // offset 52 in v15+
	CacheVersion  uint16
	GUID          GUID
	ModSeq        uint64
	CID           uint64 // v13+
	CreatedModSeq uint64 // v16+
	CacheCRC      uint32
	CRC           uint32 // as stored, or as computed by encode
}

// Expunged reports whether the record carries the internal EXPUNGED flag.
func (r *Record) Expunged() bool { return r.SystemFlags&FlagExpunged != 0 }

// HasUserFlag reports whether keyword bit n is set.
func (r *Record) HasUserFlag(n int) bool { return r.UserFlags[n/32]&(1<<(n%32)) != 0 }

// SetUserFlag sets or clears keyword bit n.
func (r *Record) SetUserFlag(n int, on bool) {
	if on {
		r.UserFlags[n/32] |= 1 << (n % 32)
	} else {
		r.UserFlags[n/32] &^= 1 << (n % 32)
	}
}

// DecodeRecord decodes and CRC-checks one record of layout l from b, which
// must hold at least l.RecordSize bytes. off is the record's offset in path,
// used only in errors.
func DecodeRecord(path string, off int64, l Layout, b []byte) (*Record, error) {
	if len(b) < l.RecordSize {
		return nil, corrupt(path, off, "index record", ErrTruncated, fmt.Sprintf("%d bytes", l.RecordSize), fmt.Sprintf("%d bytes", len(b)))
	}
	if err := checkRecordCRC(path, off, l, b); err != nil {
		return nil, err
	}
	r := &Record{}
	decodeInto(r, l, b)
	return r, nil
}

// checkRecordCRC verifies the CRC of the record at off in path.
func checkRecordCRC(path string, off int64, l Layout, b []byte) error {
	c := l.crcOffset()
	if stored, sum := binary.BigEndian.Uint32(b[c:]), CRC32(b[:c]); stored != sum {
		return corrupt(path, off+int64(c), fmt.Sprintf("crc of record uid %d", binary.BigEndian.Uint32(b)), ErrBadCRC, fmt.Sprintf("%08x", sum), fmt.Sprintf("%08x", stored))
	}
	return nil
}

// decodeInto fills r from the record bytes b of layout l (CRC not checked).
func decodeInto(r *Record, l Layout, b []byte) {
	be := binary.BigEndian
	w56 := be.Uint32(b[56:])
	*r = Record{
		UID: be.Uint32(b[0:]), InternalDate: be.Uint32(b[4:]), SentDate: be.Uint32(b[8:]),
		Size: be.Uint32(b[12:]), HeaderSize: be.Uint32(b[16:]), GMTime: be.Uint32(b[20:]),
		CacheOffset:  uint64(be.Uint32(b[24:])) | uint64(w56>>16)<<32,
		LastUpdated:  be.Uint32(b[28:]),
		SystemFlags:  be.Uint32(b[32:]),
		CacheVersion: uint16(w56),
		ModSeq:       be.Uint64(b[80:]),
		CRC:          be.Uint32(b[l.crcOffset():]),
	}
	for i := range r.UserFlags {
		r.UserFlags[i] = be.Uint32(b[36+4*i:])
	}
	if l.HasSaveDate {
		r.SaveDate = be.Uint32(b[52:])
	} else {
		r.ContentLines = be.Uint32(b[52:])
	}
	copy(r.GUID[:], b[60:80])
	switch {
	case l.HasCreated:
		r.CID = be.Uint64(b[88:])
		r.CreatedModSeq = be.Uint64(b[96:])
		r.CacheCRC = be.Uint32(b[104:])
	case l.HasCID:
		r.CID = be.Uint64(b[88:])
		r.CacheCRC = be.Uint32(b[96:])
	default:
		r.CacheCRC = be.Uint32(b[88:])
	}
}

// EncodeRecord writes r in layout l into b (len >= l.RecordSize) with a
// freshly computed CRC, and sets r.CRC.
func EncodeRecord(l Layout, r *Record, b []byte) {
	be := binary.BigEndian
	be.PutUint32(b[0:], r.UID)
	be.PutUint32(b[4:], r.InternalDate)
	be.PutUint32(b[8:], r.SentDate)
	be.PutUint32(b[12:], r.Size)
	be.PutUint32(b[16:], r.HeaderSize)
	be.PutUint32(b[20:], r.GMTime)
	be.PutUint32(b[24:], uint32(r.CacheOffset))
	be.PutUint32(b[28:], r.LastUpdated)
	be.PutUint32(b[32:], r.SystemFlags)
	for i, u := range r.UserFlags {
		be.PutUint32(b[36+4*i:], u)
	}
	if l.HasSaveDate {
		be.PutUint32(b[52:], r.SaveDate)
	} else {
		be.PutUint32(b[52:], r.ContentLines)
	}
	be.PutUint32(b[56:], uint32(r.CacheOffset>>32)<<16|uint32(r.CacheVersion))
	copy(b[60:80], r.GUID[:])
	be.PutUint64(b[80:], r.ModSeq)
	switch {
	case l.HasCreated:
		be.PutUint64(b[88:], r.CID)
		be.PutUint64(b[96:], r.CreatedModSeq)
		be.PutUint32(b[104:], r.CacheCRC)
	case l.HasCID:
		be.PutUint64(b[88:], r.CID)
		be.PutUint32(b[96:], r.CacheCRC)
	default:
		be.PutUint32(b[88:], r.CacheCRC)
	}
	c := l.crcOffset()
	r.CRC = CRC32(b[:c])
	be.PutUint32(b[c:], r.CRC)
}
