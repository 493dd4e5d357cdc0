package diff

import (
	"fmt"
	"sort"
)

// Index is a whole decoded cyrus.index: header and records in file order.
type Index struct {
	Header  *Header
	Layout  Layout
	Records []*Record // Records[i] is record number i+1
}

// DecodeIndex decodes and verifies a whole cyrus.index held in b. path only
// names the source in errors. Bytes past the last record (an uncommitted
// append) are ignored, as Cyrus ignores them.
func DecodeIndex(path string, b []byte) (*Index, error) {
	h, err := DecodeHeader(path, b)
	if err != nil {
		return nil, err
	}
	l, _ := h.Layout()
	need := l.RecordOffset(int(h.NumRecords) + 1)
	if int64(len(b)) < need {
		return nil, corrupt(path, int64(len(b)), fmt.Sprintf("%d records", h.NumRecords), ErrTruncated,
			fmt.Sprintf("file of at least %d bytes", need), fmt.Sprintf("%d bytes", len(b)))
	}
	ix := &Index{Header: h, Layout: l, Records: make([]*Record, h.NumRecords)}
	recs := make([]Record, h.NumRecords) // one allocation for all records
	var prev uint32
	for i := range ix.Records {
		off := l.RecordOffset(i + 1)
		rb := b[off : off+int64(l.RecordSize)]
		if err := checkRecordCRC(path, off, l, rb); err != nil {
			return nil, err
		}
		r := &recs[i]
		decodeInto(r, l, rb)
		if r.UID != 0 && r.UID <= prev {
			return nil, corrupt(path, off, "uid", ErrInconsistent, fmt.Sprintf("uid > %d (records sorted by uid)", prev), fmt.Sprint(r.UID))
		}
		if r.UID != 0 {
			prev = r.UID
		}
		ix.Records[i] = r
	}
	return ix, nil
}

// Encode returns the whole file: header then records, CRCs recomputed.
func (ix *Index) Encode() ([]byte, error) {
	l, err := LayoutOf(ix.Header.MinorVersion)
	if err != nil {
		return nil, err
	}
	ix.Header.NumRecords = uint32(len(ix.Records))
	b := make([]byte, l.RecordOffset(len(ix.Records)+1))
	for i, r := range ix.Records {
		off := l.RecordOffset(i + 1)
		EncodeRecord(l, r, b[off:])
	}
	ix.Header.encodeInto(b, l)
	return b, nil
}

// FindUID returns the 0-based position of the record with uid, by binary
// search (records are sorted by UID; uid 0 marks a wiped record and is skipped
// by scanning neighbours), or -1.
func (ix *Index) FindUID(uid uint32) int {
	return findUID(len(ix.Records), func(i int) uint32 { return ix.Records[i].UID }, uid)
}

func findUID(n int, uidAt func(int) uint32, uid uint32) int {
	i := sort.Search(n, func(i int) bool {
		// Wiped records (uid 0) sit where their old uid was; look right for a real one.
		j := i
		for j < n && uidAt(j) == 0 {
			j++
		}
		return j == n || uidAt(j) >= uid
	})
	for ; i < n; i++ {
		if u := uidAt(i); u != 0 {
			if u == uid {
				return i
			}
			return -1
		}
	}
	return -1
}
