package link

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// quicConfig is the QUIC configuration both ends use: keep-alives at the
// heartbeat interval, and a connection silent for three intervals is dead.
func quicConfig(heartbeat time.Duration, maxStreams int) *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:       heartbeat,
		MaxIdleTimeout:        heartbeatMisses * heartbeat,
		MaxIncomingStreams:    int64(maxStreams),
		MaxIncomingUniStreams: -1,
	}
}

// readFrameBy reads one frame from str with a deadline (zero: none) and
// turns a deadline into errDeadline.
func readFrameBy(str *quic.Stream, max int, deadline time.Time) (Frame, error) {
	if err := str.SetReadDeadline(deadline); err != nil {
		return Frame{}, err
	}
	f, err := ReadFrame(str, max)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return f, fmt.Errorf("%w: %w", errDeadline, err)
	}
	return f, err
}

// expectEOF checks the peer ended its side of str after the frame it sent.
func expectEOF(str *quic.Stream) error {
	var b [1]byte
	n, err := str.Read(b[:])
	if n > 0 {
		return fmt.Errorf("data after the frame: %w", ErrUnexpectedFrame)
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err == nil {
		return fmt.Errorf("stream not closed after the frame: %w", ErrUnexpectedFrame)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("waiting for end of stream: %w: %w", errDeadline, err)
	}
	return err
}

// writeFrame writes one frame to str.
func writeFrame(str *quic.Stream, t FrameType, payload []byte, deadline time.Time) (int, error) {
	if err := str.SetWriteDeadline(deadline); err != nil {
		return 0, err
	}
	return str.Write(AppendFrame(make([]byte, 0, FrameSize(len(payload))), t, payload))
}

// resetText describes a stream reset received from the peer.
func resetText(err error) (string, bool) {
	var se *quic.StreamError
	if !errors.As(err, &se) || !se.Remote {
		return "", false
	}
	if t, ok := streamCodeText[se.ErrorCode]; ok {
		return t, true
	}
	return fmt.Sprintf("code %d", se.ErrorCode), true
}
