package link

import (
	"errors"
	"fmt"
	"io"
)

// DefaultMaxFrame is the default limit on a frame's payload, in bytes.
const DefaultMaxFrame = 1 << 20

// Bounds on a configured maximum frame size. The lower bound leaves room for
// at least one mailbox state in a Hello and an Ack with its error text.
const (
	MinMaxFrame = 1 << 10
	MaxMaxFrame = 1 << 28
)

// FrameType says what a frame's payload is.
type FrameType byte

// Frame types. A frame is the type byte, the payload length as a minimal
// uvarint (at most 4 bytes, as MaxMaxFrame < 2^28), then the payload.
const (
	FrameHello FrameType = 1 // control stream: primary opens with an empty Hello, replica answers with its states
	FrameBatch FrameType = 2 // batch stream, primary to replica: diff.EncodeBatch bytes
	FrameAck   FrameType = 3 // batch stream, replica to primary: the outcome of one batch
	FramePing  FrameType = 4 // control stream, primary to replica: heartbeat with a sequence number
	FramePong  FrameType = 5 // control stream, replica to primary: echoes the Ping's sequence number
)

var frameNames = [...]string{FrameHello: "hello", FrameBatch: "batch", FrameAck: "ack", FramePing: "ping", FramePong: "pong"}

func (t FrameType) String() string {
	if t.known() {
		return frameNames[t]
	}
	return fmt.Sprintf("type(%d)", byte(t))
}

func (t FrameType) known() bool { return t >= FrameHello && t <= FramePong }

// Frame is one decoded frame.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// AppendFrame appends the encoded frame to dst.
func AppendFrame(dst []byte, t FrameType, payload []byte) []byte {
	dst = append(dst, byte(t))
	n := uint64(len(payload))
	for n >= 0x80 {
		dst = append(dst, byte(n)|0x80)
		n >>= 7
	}
	dst = append(dst, byte(n))
	return append(dst, payload...)
}

// FrameSize is the encoded size of a frame with an n-byte payload.
func FrameSize(n int) int {
	h := 2
	for v := n >> 7; v > 0; v >>= 7 {
		h++
	}
	return h + n
}

// ReadFrame reads one frame from r, refusing a payload longer than max bytes
// before allocating it. It returns io.EOF if r ends cleanly before a frame,
// and an error wrapping ErrTruncated if it ends inside one, ErrFrameTooLarge
// for an oversize length and ErrUnknownFrame for an unknown type.
func ReadFrame(r io.Reader, max int) (Frame, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Frame{}, err
	}
	t := FrameType(b[0])
	if !t.known() {
		return Frame{}, fmt.Errorf("frame %v: %w", t, ErrUnknownFrame)
	}
	var n uint64
	for i := 0; ; i++ {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Frame{}, fmt.Errorf("%v frame length: %w", t, eofTruncated(err))
		}
		if i == 3 && b[0] >= 0x80 {
			return Frame{}, fmt.Errorf("%v frame length: more than 4 bytes: %w", t, ErrFrameTooLarge)
		}
		n |= uint64(b[0]&0x7f) << (7 * i)
		if b[0] < 0x80 {
			if i > 0 && b[0] == 0 {
				return Frame{}, fmt.Errorf("%v frame length: non-minimal uvarint: %w", t, ErrMalformed)
			}
			break
		}
	}
	if n > uint64(max) {
		return Frame{}, fmt.Errorf("%v frame of %d bytes, max %d: %w", t, n, max, ErrFrameTooLarge)
	}
	p := make([]byte, n)
	if got, err := io.ReadFull(r, p); err != nil {
		return Frame{}, fmt.Errorf("%v frame: got %d of %d payload bytes: %w", t, got, n, eofTruncated(err))
	}
	return Frame{Type: t, Payload: p}, nil
}

// eofTruncated turns an end of stream inside a frame into ErrTruncated.
func eofTruncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}

// FrameError locates a framing failure: which peer, which stream.
type FrameError struct {
	Peer   string // remote address
	Stream int64  // QUIC stream id
	Err    error
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("peer %s stream %d: %v", e.Peer, e.Stream, e.Err)
}

func (e *FrameError) Unwrap() error { return e.Err }
