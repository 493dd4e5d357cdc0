package diff

import (
	"errors"
	"fmt"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrUnknownVersion is returned for an index minor version outside 12..17.
	ErrUnknownVersion = errors.New("unsupported cyrus.index minor version")
	// ErrBadCRC is returned when a stored CRC-32 does not match the bytes it covers.
	ErrBadCRC = errors.New("crc mismatch")
	// ErrTruncated is returned when a file or message ends before its declared length.
	ErrTruncated = errors.New("truncated")
	// ErrLayout is returned when start_offset or record_size disagree with the version.
	ErrLayout = errors.New("bad layout")
	// ErrInconsistent is returned when header counts disagree with the records.
	ErrInconsistent = errors.New("header inconsistent with records")
	// ErrMalformed is returned for a malformed cyrus.header or batch encoding.
	ErrMalformed = errors.New("malformed")
)

// CorruptError locates a decoding failure: the file (or other source), the
// byte offset, what was expected and what was found.
type CorruptError struct {
	Path   string // file name or source description; may be empty
	Offset int64  // byte offset of the offending field
	Field  string // what was being read
	Want   string // what was expected
	Got    string // what was found
	Err    error  // one of the sentinel errors above
}

func (e *CorruptError) Error() string {
	p := e.Path
	if p == "" {
		p = "<input>"
	}
	return fmt.Sprintf("%s: offset %d: %s: %v: want %s, got %s", p, e.Offset, e.Field, e.Err, e.Want, e.Got)
}

func (e *CorruptError) Unwrap() error { return e.Err }

func corrupt(path string, off int64, field string, err error, want, got string) *CorruptError {
	return &CorruptError{Path: path, Offset: off, Field: field, Want: want, Got: got, Err: err}
}
