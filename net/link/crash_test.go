package link

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// A replica that crashes (its socket gone without a CONNECTION_CLOSE)
// while the primary waits for an Ack, then comes back on the same address
// with the same key: the primary's early Ping draws a stateless reset from
// the new process, so the Send fails and the link reconnects well before
// the heartbeat timeout (three 5 s intervals here).
func TestCrashedReplicaNoticedByStatelessReset(t *testing.T) {
	sid, cid := newIdentity(t), newIdentity(t)
	hold := make(chan struct{})
	defer close(hold)
	a := &fakeApplier{block: map[string]chan struct{}{"mbA": hold}}
	srv, err := Listen(ServerConfig{Listen: "127.0.0.1:0", KeyDir: sid.dir, PeerFingerprints: []string{cid.fp}, Applier: a, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		_ = srv.Serve(ctx) // fails once its socket is pulled away: that is the crash
		close(served)
	}()
	addr := srv.Addr().String()
	snd := startSender(t, SenderConfig{Peer: addr, KeyDir: cid.dir, PeerFingerprints: []string{sid.fp}, HeartbeatInterval: 5 * time.Second})
	waitFor(t, snd.Connected, "sender to connect")

	errc := make(chan error, 1)
	go func() {
		_, err := snd.Send(ctxT(t, time.Minute), testBatch("mbA", 1))
		errc <- err
	}()
	waitFor(t, func() bool { return a.calls.Load() == 1 }, "the batch to reach the applier")
	srv.udp.Close() // crash: no CONNECTION_CLOSE leaves
	start := time.Now()
	startServer(t, ServerConfig{Listen: addr, KeyDir: sid.dir, PeerFingerprints: []string{cid.fp}, Applier: &fakeApplier{}})

	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "stateless reset") {
			t.Fatalf("send across the crash: %v, want a stateless reset", err)
		}
		t.Logf("in-flight send failed %v after the replica restarted: %v", time.Since(start), err)
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight send still waiting 5s after the replica restarted")
	}
	if _, err := snd.Send(ctxT(t, 10*time.Second), testBatch("mbB", 1)); err != nil {
		t.Fatalf("send after the restart: %v", err)
	}
	cancel()
	<-served
}
