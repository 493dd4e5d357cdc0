package diff

import (
	"encoding/binary"
	"fmt"
)

// Header is a decoded cyrus.index header. Every byte of the header maps to
// a field, so Encode(Decode(b)) == b for any header Cyrus wrote.
type Header struct {
	Generation         uint32
	Format             uint32
	MinorVersion       uint32
	StartOffset        uint32
	RecordSize         uint32
	NumRecords         uint32 // records in the file, expunged included
	LastAppendDate     uint32
	LastUID            uint32
	QuotaMailboxUsed   uint64
	POP3LastLogin      uint32
	UIDValidity        uint32
	Deleted            uint32
	Answered           uint32
	Flagged            uint32
	Options            uint32
	LeakedCacheRecords uint32
	HighestModSeq      uint64
	DeletedModSeq      uint64
	Exists             uint32
	FirstExpunged      uint32
	LastRepackTime     uint32
	HeaderFileCRC      uint32 // CRC of the whole cyrus.header file
	SyncCRCBasic       uint32
	RecentUID          uint32
	RecentTime         uint32
	POP3ShowAfter      uint32 // v13+ (zero in v12)
	QuotaAnnotUsed     uint32 // v13+
	SyncCRCAnnot       uint32 // v13+
	Unseen             uint32 // v14+ (offset 124 is the CRC in v12/v13)
	CreatedModSeq      uint64 // v14+ slot, used from v16
	ChangesEpoch       uint32 // v14+ slot, used from v17
	Spare              [4]uint32
	CRC                uint32 // header CRC as stored (or computed by Encode)
}

// Option bits of Header.Options.
const (
	OptPOP3NewUIDL   uint32 = 1 << 0
	OptSharedSeen    uint32 = 1 << 2
	OptDupDeliver    uint32 = 1 << 3
	OptHasAlarms     uint32 = 1 << 4
	OptNeedsUnlink   uint32 = 1 << 29
	OptNeedsRepack   uint32 = 1 << 30
	OptMailboxDelete uint32 = 1 << 31
)

// Layout returns the layout for the header's minor version.
func (h *Header) Layout() (Layout, error) { return LayoutOf(h.MinorVersion) }

// DecodeHeader decodes and verifies an index header from the start of b.
// path only names the source in errors. It checks the version, that
// start_offset and record_size match it, and the header CRC.
func DecodeHeader(path string, b []byte) (*Header, error) {
	if len(b) < 12 {
		return nil, corrupt(path, 0, "index header", ErrTruncated, "at least 12 bytes", fmt.Sprintf("%d bytes", len(b)))
	}
	be := binary.BigEndian
	v := be.Uint32(b[8:])
	l, err := LayoutOf(v)
	if err != nil {
		return nil, corrupt(path, 8, "minor_version", ErrUnknownVersion, fmt.Sprintf("%d..%d", MinVersion, MaxVersion), fmt.Sprint(v))
	}
	if len(b) < l.HeaderSize {
		return nil, corrupt(path, 0, "index header", ErrTruncated, fmt.Sprintf("%d bytes", l.HeaderSize), fmt.Sprintf("%d bytes", len(b)))
	}
	if so := be.Uint32(b[12:]); so != uint32(l.HeaderSize) {
		return nil, corrupt(path, 12, "start_offset", ErrLayout, fmt.Sprint(l.HeaderSize), fmt.Sprint(so))
	}
	if rs := be.Uint32(b[16:]); rs != uint32(l.RecordSize) {
		return nil, corrupt(path, 16, "record_size", ErrLayout, fmt.Sprint(l.RecordSize), fmt.Sprint(rs))
	}
	crcAt := l.HeaderSize - 4
	stored, sum := be.Uint32(b[crcAt:]), CRC32(b[:crcAt])
	if stored != sum {
		return nil, corrupt(path, int64(crcAt), "header crc", ErrBadCRC, fmt.Sprintf("%08x", sum), fmt.Sprintf("%08x", stored))
	}
	h := &Header{
		Generation: be.Uint32(b[0:]), Format: be.Uint32(b[4:]), MinorVersion: v,
		StartOffset: be.Uint32(b[12:]), RecordSize: be.Uint32(b[16:]), NumRecords: be.Uint32(b[20:]),
		LastAppendDate: be.Uint32(b[24:]), LastUID: be.Uint32(b[28:]), QuotaMailboxUsed: be.Uint64(b[32:]),
		POP3LastLogin: be.Uint32(b[40:]), UIDValidity: be.Uint32(b[44:]), Deleted: be.Uint32(b[48:]),
		Answered: be.Uint32(b[52:]), Flagged: be.Uint32(b[56:]), Options: be.Uint32(b[60:]),
		LeakedCacheRecords: be.Uint32(b[64:]), HighestModSeq: be.Uint64(b[68:]), DeletedModSeq: be.Uint64(b[76:]),
		Exists: be.Uint32(b[84:]), FirstExpunged: be.Uint32(b[88:]), LastRepackTime: be.Uint32(b[92:]),
		HeaderFileCRC: be.Uint32(b[96:]), SyncCRCBasic: be.Uint32(b[100:]), RecentUID: be.Uint32(b[104:]),
		RecentTime: be.Uint32(b[108:]), POP3ShowAfter: be.Uint32(b[112:]), QuotaAnnotUsed: be.Uint32(b[116:]),
		SyncCRCAnnot: be.Uint32(b[120:]), CRC: stored,
	}
	if l.HeaderSize > 128 {
		h.Unseen = be.Uint32(b[124:])
		h.CreatedModSeq = be.Uint64(b[128:])
		h.ChangesEpoch = be.Uint32(b[136:])
		for i := range h.Spare {
			h.Spare[i] = be.Uint32(b[140+4*i:])
		}
	}
	return h, nil
}

// Encode returns the header bytes with a freshly computed CRC, and sets h.CRC.
// The layout must be a supported one.
func (h *Header) Encode() ([]byte, error) {
	l, err := LayoutOf(h.MinorVersion)
	if err != nil {
		return nil, err
	}
	b := make([]byte, l.HeaderSize)
	h.encodeInto(b, l)
	return b, nil
}

func (h *Header) encodeInto(b []byte, l Layout) {
	be := binary.BigEndian
	be.PutUint32(b[0:], h.Generation)
	be.PutUint32(b[4:], h.Format)
	be.PutUint32(b[8:], h.MinorVersion)
	be.PutUint32(b[12:], uint32(l.HeaderSize))
	be.PutUint32(b[16:], uint32(l.RecordSize))
	be.PutUint32(b[20:], h.NumRecords)
	be.PutUint32(b[24:], h.LastAppendDate)
	be.PutUint32(b[28:], h.LastUID)
	be.PutUint64(b[32:], h.QuotaMailboxUsed)
	be.PutUint32(b[40:], h.POP3LastLogin)
	be.PutUint32(b[44:], h.UIDValidity)
	be.PutUint32(b[48:], h.Deleted)
	be.PutUint32(b[52:], h.Answered)
	be.PutUint32(b[56:], h.Flagged)
	be.PutUint32(b[60:], h.Options)
	be.PutUint32(b[64:], h.LeakedCacheRecords)
	be.PutUint64(b[68:], h.HighestModSeq)
	be.PutUint64(b[76:], h.DeletedModSeq)
	be.PutUint32(b[84:], h.Exists)
	be.PutUint32(b[88:], h.FirstExpunged)
	be.PutUint32(b[92:], h.LastRepackTime)
	be.PutUint32(b[96:], h.HeaderFileCRC)
	be.PutUint32(b[100:], h.SyncCRCBasic)
	be.PutUint32(b[104:], h.RecentUID)
	be.PutUint32(b[108:], h.RecentTime)
	be.PutUint32(b[112:], h.POP3ShowAfter)
	be.PutUint32(b[116:], h.QuotaAnnotUsed)
	be.PutUint32(b[120:], h.SyncCRCAnnot)
	if l.HeaderSize > 128 {
		be.PutUint32(b[124:], h.Unseen)
		be.PutUint64(b[128:], h.CreatedModSeq)
		be.PutUint32(b[136:], h.ChangesEpoch)
		for i, s := range h.Spare {
			be.PutUint32(b[140+4*i:], s)
		}
	}
	crcAt := l.HeaderSize - 4
	h.CRC = CRC32(b[:crcAt])
	be.PutUint32(b[crcAt:], h.CRC)
}
