package link

import (
	"encoding/binary"
	"fmt"

	"github.com/indexwire/indexwire/diff"
)

// ProtocolVersion is the version byte every Hello starts with.
const ProtocolVersion = 1

// maxErrorText bounds the error text an Ack carries.
const maxErrorText = 512

// Hello is the control-stream greeting. The primary sends one with no
// states; the replica answers with its mailbox states split over as many
// Hello frames as the primary's MaxFrame needs, the last with More unset.
type Hello struct {
	MaxFrame int                 // largest frame the sender of this Hello accepts
	More     bool                // another Hello frame with more states follows
	States   []diff.MailboxState // the replica's position per mailbox
}

const helloMore = 1

// AppendHello appends the payload of h to dst.
func AppendHello(dst []byte, h *Hello) []byte {
	var fl byte
	if h.More {
		fl |= helloMore
	}
	dst = append(dst, ProtocolVersion, fl)
	dst = binary.AppendUvarint(dst, uint64(h.MaxFrame))
	dst = binary.AppendUvarint(dst, uint64(len(h.States)))
	for i := range h.States {
		dst = appendState(dst, &h.States[i])
	}
	return dst
}

func appendState(dst []byte, s *diff.MailboxState) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s.Mailbox)))
	dst = append(dst, s.Mailbox...)
	dst = binary.AppendUvarint(dst, uint64(s.UIDValidity))
	dst = binary.AppendUvarint(dst, s.HighestModSeq)
	return binary.BigEndian.AppendUint32(dst, s.SyncCRC)
}

// stateSize is the encoded size of one state.
func stateSize(s *diff.MailboxState) int { return len(appendState(nil, s)) }

// DecodeHello decodes a Hello payload; every mailbox id is checked with
// diff.ValidUniqueID.
func DecodeHello(p []byte) (*Hello, error) {
	r := &payloadReader{b: p, what: "hello"}
	if v := r.byte("version"); r.err == nil && v != ProtocolVersion {
		return nil, fmt.Errorf("hello: protocol version %d, want %d: %w", v, ProtocolVersion, ErrMalformed)
	}
	fl := r.byte("flags")
	if r.err == nil && fl&^helloMore != 0 {
		r.fail("flags", fmt.Sprintf("unknown bits %#x", fl))
	}
	h := &Hello{More: fl&helloMore != 0}
	mf := r.uvarint("max frame")
	if r.err == nil && (mf < MinMaxFrame || mf > MaxMaxFrame) {
		r.fail("max frame", fmt.Sprintf("%d outside %d..%d", mf, MinMaxFrame, MaxMaxFrame))
	}
	h.MaxFrame = int(mf)
	n := r.uvarint("state count")
	// Each state takes at least 1+1+1+1+4 bytes, which bounds the allocation.
	if r.err == nil && n > uint64(len(p)/8) {
		r.fail("state count", fmt.Sprintf("%d states in %d bytes", n, len(p)))
	}
	if r.err == nil && n > 0 {
		h.States = make([]diff.MailboxState, 0, n)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		var s diff.MailboxState
		s.Mailbox = r.str("mailbox", 64)
		if r.err == nil {
			if err := diff.ValidUniqueID(s.Mailbox); err != nil {
				r.fail("mailbox", err.Error())
			}
		}
		uv := r.uvarint("uidvalidity")
		if r.err == nil && uv > 1<<32-1 {
			r.fail("uidvalidity", fmt.Sprintf("%d is not 32-bit", uv))
		}
		s.UIDValidity = uint32(uv)
		s.HighestModSeq = r.uvarint("highestmodseq")
		s.SyncCRC = r.u32("synccrc")
		h.States = append(h.States, s)
	}
	r.end()
	if r.err != nil {
		return nil, r.err
	}
	return h, nil
}

// Ack is the replica's answer to one batch.
type Ack struct {
	Applied       uint64 // records written
	Stale         uint64 // records skipped because the replica's modseq was not lower
	Missing       uint64 // UIDs absent on the replica
	GUIDMismatch  uint64 // records left alone because the GUIDs differ
	HighestModSeq uint64 // the replica's highestmodseq for the mailbox after the batch
	Diverged      bool   // synccrcs.basic differs from the primary's after applying
	Error         string // non-empty if the replica refused or failed the batch
}

const ackDiverged = 1

// AppendAck appends the payload of a to dst. Error text longer than 512
// bytes is cut.
func AppendAck(dst []byte, a *Ack) []byte {
	var fl byte
	if a.Diverged {
		fl |= ackDiverged
	}
	dst = append(dst, fl)
	for _, v := range []uint64{a.Applied, a.Stale, a.Missing, a.GUIDMismatch, a.HighestModSeq} {
		dst = binary.AppendUvarint(dst, v)
	}
	e := a.Error
	if len(e) > maxErrorText {
		e = e[:maxErrorText]
	}
	dst = binary.AppendUvarint(dst, uint64(len(e)))
	return append(dst, e...)
}

// DecodeAck decodes an Ack payload.
func DecodeAck(p []byte) (*Ack, error) {
	r := &payloadReader{b: p, what: "ack"}
	fl := r.byte("flags")
	if r.err == nil && fl&^ackDiverged != 0 {
		r.fail("flags", fmt.Sprintf("unknown bits %#x", fl))
	}
	a := &Ack{Diverged: fl&ackDiverged != 0}
	a.Applied = r.uvarint("applied")
	a.Stale = r.uvarint("stale")
	a.Missing = r.uvarint("missing")
	a.GUIDMismatch = r.uvarint("guid_mismatch")
	a.HighestModSeq = r.uvarint("highestmodseq")
	a.Error = r.str("error", maxErrorText)
	r.end()
	if r.err != nil {
		return nil, r.err
	}
	return a, nil
}

// pingSize is what AppendPing pads a Ping or Pong payload to. A bare
// heartbeat packet would be smaller than the smallest packet quic-go
// answers with a stateless reset (RFC 9000 10.3); padded, a heartbeat
// reaching a replica restarted after a crash draws the reset at once and
// the primary reconnects instead of waiting for the heartbeat timeout.
const pingSize = 32

// AppendPing appends the payload of a Ping or Pong with sequence number
// seq: the sequence as a uvarint, then zero padding up to pingSize bytes.
func AppendPing(dst []byte, seq uint64) []byte {
	n := len(dst)
	dst = binary.AppendUvarint(dst, seq)
	for len(dst)-n < pingSize {
		dst = append(dst, 0)
	}
	return dst
}

// DecodePing decodes a Ping or Pong payload: a sequence number followed by
// optional zero padding.
func DecodePing(p []byte) (uint64, error) {
	r := &payloadReader{b: p, what: "ping"}
	seq := r.uvarint("sequence")
	for r.err == nil && r.off < len(r.b) && r.b[r.off] == 0 {
		r.off++
	}
	r.end()
	return seq, r.err
}

// payloadReader walks a frame payload and keeps the first error with its offset.
type payloadReader struct {
	b    []byte
	off  int
	what string
	err  error
}

func (r *payloadReader) fail(field, msg string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s payload offset %d: %s: %s: %w", r.what, r.off, field, msg, ErrMalformed)
	}
}

func (r *payloadReader) byte(field string) byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail(field, "truncated")
		return 0
	}
	r.off++
	return r.b[r.off-1]
}

func (r *payloadReader) uvarint(field string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail(field, "truncated or overlong uvarint")
		return 0
	}
	r.off += n
	return v
}

func (r *payloadReader) u32(field string) uint32 {
	if r.err != nil {
		return 0
	}
	if len(r.b)-r.off < 4 {
		r.fail(field, "truncated")
		return 0
	}
	r.off += 4
	return binary.BigEndian.Uint32(r.b[r.off-4:])
}

func (r *payloadReader) str(field string, max int) string {
	n := r.uvarint(field + " length")
	if r.err != nil {
		return ""
	}
	if n > uint64(max) || n > uint64(len(r.b)-r.off) {
		r.fail(field, fmt.Sprintf("length %d (max %d, %d bytes left)", n, max, len(r.b)-r.off))
		return ""
	}
	s := string(r.b[r.off : r.off+int(n)])
	r.off += int(n)
	return s
}

func (r *payloadReader) end() {
	if r.err == nil && r.off != len(r.b) {
		r.fail("end", fmt.Sprintf("%d trailing bytes", len(r.b)-r.off))
	}
}
