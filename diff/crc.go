package diff

import (
	"hash/crc32"
	"strconv"
	"strings"
)

// CRC32 is the checksum Cyrus uses for headers, records and sync CRCs:
// plain CRC-32/IEEE (zlib's crc32).
func CRC32(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

// System flag bits in a record's system_flags word (cyrus-index-format.md §4.2).
const (
	FlagAnswered uint32 = 1 << 0
	FlagFlagged  uint32 = 1 << 1
	FlagDeleted  uint32 = 1 << 2
	FlagDraft    uint32 = 1 << 3
	FlagSeen     uint32 = 1 << 4

	FlagSnoozed      uint32 = 1 << 26
	FlagSplitConv    uint32 = 1 << 27
	FlagNeedsCleanup uint32 = 1 << 28
	FlagArchived     uint32 = 1 << 29
	FlagUnlinked     uint32 = 1 << 30
	FlagExpunged     uint32 = 1 << 31

	// IMAPFlags are the five IMAP system flags stored in the word.
	IMAPFlags = FlagAnswered | FlagFlagged | FlagDeleted | FlagDraft | FlagSeen
	// ReplicatedFlags are the bits a delta carries: IMAP flags and expunged.
	// The other internal bits (unlinked, archived, ...) are each server's own
	// housekeeping and are never copied.
	ReplicatedFlags = IMAPFlags | FlagExpunged
)

// systemFlagNames lists the IMAP system flags in Cyrus's crc_basic order.
var systemFlagNames = []struct {
	bit  uint32
	name string
}{
	{FlagDeleted, `\Deleted`},
	{FlagAnswered, `\Answered`},
	{FlagFlagged, `\Flagged`},
	{FlagDraft, `\Draft`},
	{FlagSeen, `\Seen`},
}

var systemFlagCRC = func() map[uint32]uint32 {
	m := map[uint32]uint32{}
	for _, f := range systemFlagNames {
		m[f.bit] = CRC32([]byte(strings.ToLower(f.name)))
	}
	return m
}()

// SyncCRCBasic computes Cyrus's crc_basic of one record: 0 for an expunged
// record, else the CRC of "<uid> <modseq> <last_updated> (<flagcrc>)
// <internaldate> <guidhex>" where flagcrc XORs the CRCs of the lower-cased
// names of every set flag whose name is known (cyrus-index-format.md §6).
// names maps user flag bit n to its name ("" for an unused slot).
func SyncCRCBasic(r *Record, names []string) uint32 {
	if r.SystemFlags&FlagExpunged != 0 {
		return 0
	}
	var flagcrc uint32
	for _, f := range systemFlagNames {
		if r.SystemFlags&f.bit != 0 {
			flagcrc ^= systemFlagCRC[f.bit]
		}
	}
	for n := 0; n < MaxUserFlags; n++ {
		if r.UserFlags[n/32]&(1<<(n%32)) == 0 || n >= len(names) || names[n] == "" {
			continue
		}
		flagcrc ^= CRC32([]byte(strings.ToLower(names[n])))
	}
	buf := make([]byte, 0, 96)
	buf = strconv.AppendUint(buf, uint64(r.UID), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendUint(buf, r.ModSeq, 10)
	buf = append(buf, ' ')
	buf = strconv.AppendUint(buf, uint64(r.LastUpdated), 10)
	buf = append(buf, " ("...)
	buf = strconv.AppendUint(buf, uint64(flagcrc), 10)
	buf = append(buf, ") "...)
	buf = strconv.AppendUint(buf, uint64(r.InternalDate), 10)
	buf = append(buf, ' ')
	buf = r.GUID.appendHex(buf)
	return CRC32(buf)
}
