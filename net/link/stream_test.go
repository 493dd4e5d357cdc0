package link

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// rawConn dials srv as a pinned primary without a Sender, so a test can
// write arbitrary bytes on a stream.
func rawConn(t *testing.T, srvAddr, srvFP string, cid identity) *quic.Conn {
	t.Helper()
	cert, err := LoadKey(cid.dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := parsePins([]string{srvFP})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := quic.DialAddr(ctxT(t, 5*time.Second), srvAddr, clientTLS(cert, p, srvAddr, zap.NewNop()), quicConfig(time.Second, -1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "test done") })
	return conn
}

// rawServer starts a server with applier a and a raw connection to it.
func rawServer(t *testing.T, a Applier, maxFrame int) (*testServer, *quic.Conn) {
	sid, cid := newIdentity(t), newIdentity(t)
	srv := startServer(t, ServerConfig{KeyDir: sid.dir, PeerFingerprints: []string{cid.fp}, Applier: a, MaxFrame: maxFrame, StreamTimeout: 2 * time.Second})
	return srv, rawConn(t, srv.Addr().String(), sid.fp, cid)
}

// rawSend writes raw bytes on a new stream, closes it and returns the Ack or
// the stream error.
func rawSend(t *testing.T, conn *quic.Conn, raw []byte) (*quic.Stream, *Ack, error) {
	t.Helper()
	str, err := conn.OpenStreamSync(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	str.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := str.Write(raw); err != nil {
		return str, nil, err
	}
	str.Close()
	f, err := ReadFrame(str, DefaultMaxFrame)
	if err != nil {
		return str, nil, err
	}
	if f.Type != FrameAck {
		t.Fatalf("got %v frame, want ack", f.Type)
	}
	a, err := DecodeAck(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return str, a, nil
}

func batchFrame(t *testing.T, b *diff.Batch) []byte {
	p, err := diff.EncodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	return AppendFrame(nil, FrameBatch, p)
}

// wantReset checks err is the server's reset of str with code.
func wantReset(t *testing.T, err error, str *quic.Stream, code quic.StreamErrorCode) {
	t.Helper()
	var se *quic.StreamError
	if !errors.As(err, &se) || !se.Remote || se.ErrorCode != code || se.StreamID != str.StreamID() {
		t.Fatalf("err = %v, want remote reset of stream %d with code %d (%s)", err, str.StreamID(), code, streamCodeText[code])
	}
}

// wantLog checks the server logged a stream reset naming the stream and reason.
func wantLog(t *testing.T, srv *testServer, str *quic.Stream, reason string) {
	t.Helper()
	waitFor(t, func() bool { return srv.logs.FilterMessage("stream reset").Len() > 0 }, "stream reset log")
	e := srv.logs.FilterMessage("stream reset").All()[0]
	msg := fmt.Sprint(e.ContextMap()["error"])
	want := fmt.Sprintf("stream %d:", str.StreamID())
	if !strings.Contains(msg, want) || !strings.Contains(msg, reason) || !strings.Contains(msg, "peer 127.0.0.1:") {
		t.Fatalf("log error %q does not name peer, %q and %q", msg, want, reason)
	}
}

func TestOversizeFrameResetsOnlyThatStream(t *testing.T) {
	a := &fakeApplier{}
	srv, conn := rawServer(t, a, MinMaxFrame)
	// A header announcing MinMaxFrame+1 bytes is refused before the payload.
	big := AppendFrame(nil, FrameBatch, make([]byte, MinMaxFrame+1))
	str, _, err := rawSend(t, conn, big)
	wantReset(t, err, str, codeFrameTooLarge)
	wantLog(t, srv, str, "frame too large")
	// The same connection still carries the next batch.
	_, ack, err := rawSend(t, conn, batchFrame(t, testBatch("mb", 1, 3)))
	if err != nil || ack.Applied != 2 || ack.Error != "" {
		t.Fatalf("next batch: ack %+v, err %v", ack, err)
	}
	if st := srv.Stats(); st.StreamResets != 1 || st.Connections != 1 || st.BatchesApplied != 1 {
		t.Fatalf("server stats %+v", st)
	}
}

func TestTruncatedFrameNamesStream(t *testing.T) {
	a := &fakeApplier{}
	srv, conn := rawServer(t, a, 0)
	frame := batchFrame(t, testBatch("mb", 1))
	str, _, err := rawSend(t, conn, frame[:len(frame)-5])
	wantReset(t, err, str, codeTruncated)
	wantLog(t, srv, str, "truncated")
	if a.calls.Load() != 0 {
		t.Fatal("Apply called for a truncated frame")
	}
	if _, ack, err := rawSend(t, conn, frame); err != nil || ack.Applied != 1 {
		t.Fatalf("next batch: ack %+v, err %v", ack, err)
	}
}

func TestCorruptBatchPayloadRefused(t *testing.T) {
	a := &fakeApplier{}
	srv, conn := rawServer(t, a, 0)
	frame := batchFrame(t, testBatch("mb", 1))
	frame[len(frame)-12] ^= 0x40 // inside the batch body: the xxhash64 check fails
	_, ack, err := rawSend(t, conn, frame)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ack.Error, "decode batch") || !strings.Contains(ack.Error, "xxhash64") || ack.Applied != 0 {
		t.Fatalf("ack %+v, want a decode error", ack)
	}
	if a.calls.Load() != 0 {
		t.Fatal("Apply called for a corrupt batch")
	}
	if st := srv.Stats(); st.BatchesRejected != 1 || st.BatchesApplied != 0 {
		t.Fatalf("server stats %+v", st)
	}
}

func TestUnexpectedFramesResetStream(t *testing.T) {
	srv, conn := rawServer(t, &fakeApplier{}, 0)
	for _, raw := range [][]byte{
		AppendFrame(nil, FrameAck, AppendAck(nil, &Ack{})), // wrong opener
		{42, 0}, // unknown type
		append(batchFrame(t, testBatch("mb", 1)), 4, 0),                                      // data after the batch frame
		AppendFrame(nil, FramePing, AppendPing(nil, 1)),                                      // ping outside the control stream
		AppendFrame(nil, FrameBatch, append([]byte{1, 0, 2, '.', '.'}, make([]byte, 20)...)), // bad mailbox, caught by DecodeBatch
	} {
		str, ack, err := rawSend(t, conn, raw)
		if ack != nil {
			if !strings.Contains(ack.Error, "decode batch") {
				t.Fatalf("% x: ack %+v", raw, ack)
			}
			continue
		}
		wantReset(t, err, str, codeBadFrame)
	}
	if _, ack, err := rawSend(t, conn, batchFrame(t, testBatch("mb", 1))); err != nil || ack.Applied != 1 {
		t.Fatalf("batch after bad streams: ack %+v, err %v", ack, err)
	}
	if st := srv.Stats(); st.StreamResets != 4 {
		t.Fatalf("server stats %+v, want 4 resets", st)
	}
}

func TestPrimaryHelloWithStatesClosesConnection(t *testing.T) {
	_, conn := rawServer(t, &fakeApplier{}, 0)
	str, err := conn.OpenStreamSync(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	h := &Hello{MaxFrame: DefaultMaxFrame, States: []diff.MailboxState{{Mailbox: "mb", UIDValidity: 1}}}
	if _, err := str.Write(AppendFrame(nil, FrameHello, AppendHello(nil, h))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after a primary hello with states")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || ae.ErrorCode != connProtocol || !strings.Contains(ae.ErrorMessage, "hello carries states") {
		t.Fatalf("close cause %v", err)
	}
}
