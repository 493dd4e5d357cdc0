package diff

import "fmt"

// Layout is the byte layout of one index minor version, as Cyrus lays it out
// (cyrus-index-format.md §0).
type Layout struct {
	Version     uint32 // minor_version
	HeaderSize  int    // start_offset: header bytes, CRC in its last 4
	RecordSize  int    // bytes per record, CRC in its last 4
	HasCID      bool   // v13+: conversation id at record offset 88
	HasSaveDate bool   // v15+: savedate at record offset 52 (else content_lines)
	HasCreated  bool   // v16+: createdmodseq at record offset 96
}

// Supported minor versions. Cyrus 3.6 reads and writes all of them in place.
var layouts = map[uint32]Layout{
	12: {12, 128, 96, false, false, false},
	13: {13, 128, 104, true, false, false},
	14: {14, 160, 104, true, false, false},
	15: {15, 160, 104, true, true, false},
	16: {16, 160, 112, true, true, true},
	17: {17, 160, 112, true, true, true},
}

// MinVersion and MaxVersion bound the index minor versions indexwire reads.
const (
	MinVersion = 12
	MaxVersion = 17
)

// LayoutOf returns the layout of minor version v or ErrUnknownVersion.
func LayoutOf(v uint32) (Layout, error) {
	l, ok := layouts[v]
	if !ok {
		return Layout{}, fmt.Errorf("minor version %d (want %d..%d): %w", v, MinVersion, MaxVersion, ErrUnknownVersion)
	}
	return l, nil
}

// crcOffset is where a record's CRC is stored; it covers bytes [0, crcOffset).
func (l Layout) crcOffset() int { return l.RecordSize - 4 }

// RecordOffset is the byte offset of 1-based record number recno.
func (l Layout) RecordOffset(recno int) int64 {
	return int64(l.HeaderSize) + int64(recno-1)*int64(l.RecordSize)
}
