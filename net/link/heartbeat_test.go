package link

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// A replica whose QUIC stack is alive but which stops answering Pings is
// dropped after three heartbeat intervals, and the sender reconnects.
func TestHeartbeatTimeoutReconnects(t *testing.T) {
	sid, cid := newIdentity(t), newIdentity(t)
	cert, err := LoadKey(sid.dir)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := parsePins([]string{cid.fp})
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(serverTLS(cert, p, zap.NewNop(), func() {}), quicConfig(time.Second, 10))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var accepted atomic.Int64
	done := make(chan struct{})
	go func() { // a mute replica: sends its Hello, then reads Pings and never answers
		defer close(done)
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				str, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				if _, err := ReadFrame(str, DefaultMaxFrame); err != nil {
					return
				}
				str.Write(AppendFrame(nil, FrameHello, AppendHello(nil, &Hello{MaxFrame: DefaultMaxFrame})))
				for {
					if _, err := ReadFrame(str, DefaultMaxFrame); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
		tr.Close()
		udp.Close()
	})
	snd := startSender(t, SenderConfig{Peer: udp.LocalAddr().String(), KeyDir: cid.dir, PeerFingerprints: []string{sid.fp},
		HeartbeatInterval: 30 * time.Millisecond})
	waitFor(t, func() bool { return snd.Stats().Reconnects >= 1 && accepted.Load() >= 2 }, "a reconnect after a heartbeat timeout")
	if snd.logs.FilterMessage("heartbeat timeout").Len() == 0 {
		t.Fatal("no heartbeat timeout logged")
	}
	if st := snd.Stats(); st.Pongs != 0 {
		t.Fatalf("got %d pongs from a mute replica", st.Pongs)
	}
}
