// Package diff is indexwire's pure core: it decodes and encodes Cyrus
// cyrus.index and cyrus.header files (index minor versions 12 to 17), finds
// the records a commit changed, carries them as a Batch in a compact binary
// encoding, and computes the record and header bytes that apply a Batch to a
// replica's index.
//
// Nothing here does I/O: every function takes bytes (or an io.ReaderAt over
// bytes already read) and returns values or bytes. The FUSE overlay (fs), the
// QUIC link (net/link) and the replica's file layer (diff/replica) are
// adapters around it.
package diff
