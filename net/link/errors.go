package link

import (
	"errors"

	"github.com/quic-go/quic-go"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrFrameTooLarge is returned for a frame whose payload exceeds the maximum frame size.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrTruncated is returned when a stream ends in the middle of a frame.
	ErrTruncated = errors.New("truncated frame")
	// ErrUnknownFrame is returned for a frame type this version does not know.
	ErrUnknownFrame = errors.New("unknown frame type")
	// ErrUnexpectedFrame is returned for a known frame type where the protocol does not allow it.
	ErrUnexpectedFrame = errors.New("unexpected frame")
	// ErrMalformed is returned for a frame payload that does not decode.
	ErrMalformed = errors.New("malformed frame payload")
	// ErrNotPinned is returned when a peer presents a certificate whose fingerprint is not pinned.
	ErrNotPinned = errors.New("peer certificate not pinned")
	// ErrRefusedByPeer is returned to a dialer whose certificate the peer refused.
	ErrRefusedByPeer = errors.New("peer refused our certificate")
	// ErrBatchRefused is returned by Sender.Send when the replica answered with an error.
	ErrBatchRefused = errors.New("batch refused by replica")
	// ErrStreamReset is returned when the peer reset a batch stream.
	ErrStreamReset = errors.New("stream reset by peer")
	// ErrConfig is returned for an invalid configuration.
	ErrConfig = errors.New("invalid link config")
)

// Stream error codes sent with a stream reset, so the other end can say why.
const (
	codeFrameTooLarge quic.StreamErrorCode = 1 + iota
	codeTruncated
	codeBadFrame
	codeTimeout
	codeShutdown
	codeCanceled
)

var streamCodeText = map[quic.StreamErrorCode]string{
	codeFrameTooLarge: "frame too large",
	codeTruncated:     "truncated frame",
	codeBadFrame:      "malformed or unexpected frame",
	codeTimeout:       "timed out waiting for frame",
	codeShutdown:      "peer shutting down",
	codeCanceled:      "canceled",
}

// streamCode picks the reset code for a frame error.
func streamCode(err error) quic.StreamErrorCode {
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		return codeFrameTooLarge
	case errors.Is(err, ErrTruncated):
		return codeTruncated
	case errors.Is(err, errDeadline):
		return codeTimeout
	default:
		return codeBadFrame
	}
}

// Connection error codes sent when a whole connection is closed.
const (
	connShutdown  quic.ApplicationErrorCode = 0
	connHeartbeat quic.ApplicationErrorCode = 1
	connProtocol  quic.ApplicationErrorCode = 2
)

// errDeadline marks a stream read that hit its deadline.
var errDeadline = errors.New("deadline exceeded")
