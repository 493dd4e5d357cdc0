package linktest_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/indexwire/indexwire/net/link"
	"github.com/indexwire/indexwire/net/linktest"
	"github.com/indexwire/indexwire/net/relay"
)

type keys struct {
	serverDir, clientDir string
	serverFP, clientFP   string
}

func newKeys(t *testing.T) keys {
	t.Helper()
	k := keys{serverDir: t.TempDir(), clientDir: t.TempDir()}
	var err error
	if k.serverFP, err = link.GenerateKey(k.serverDir); err != nil {
		t.Fatal(err)
	}
	if k.clientFP, err = link.GenerateKey(k.clientDir); err != nil {
		t.Fatal(err)
	}
	return k
}

// startServer runs a linktest server on 127.0.0.1 for the test's lifetime.
func startServer(t *testing.T, k keys) *linktest.Server {
	t.Helper()
	s, err := linktest.Listen(linktest.ServerConfig{Listen: "127.0.0.1:0", KeyDir: k.serverDir, PeerFingerprints: []string{k.clientFP}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

func TestRunDirect(t *testing.T) {
	k := newKeys(t)
	s := startServer(t, k)
	var progress []linktest.Progress
	rep, err := linktest.Run(t.Context(), linktest.Config{
		Peer: s.Addr().String(), KeyDir: k.clientDir, PeerFingerprints: []string{k.serverFP},
		Duration: 2 * time.Second, Streams: 3,
		Progress: func(p linktest.Progress) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	rep.WriteTable(&b)
	t.Logf("\n%s", b.String())
	if rep.Handshake <= 0 || rep.Handshake > time.Second {
		t.Errorf("handshake %v on loopback", rep.Handshake)
	}
	if rep.IdleRTT.Samples != linktest.DefaultIdlePings || rep.IdleRTT.Min <= 0 || rep.IdleRTT.Min > 20*time.Millisecond {
		t.Errorf("idle rtt %+v on loopback", rep.IdleRTT)
	}
	if rep.LoadedRTT.Samples < 20 { // 2 s at 20 ms; a loaded machine delays some
		t.Errorf("%d pings during 2 s of load, want at least 20", rep.LoadedRTT.Samples)
	}
	if len(rep.Streams) != 3 {
		t.Fatalf("%d stream results, want 3", len(rep.Streams))
	}
	var sum uint64
	for _, st := range rep.Streams {
		if st.Err != "" || st.Bytes < 1<<20 {
			t.Errorf("stream %d: %d bytes, error %q", st.Stream, st.Bytes, st.Err)
		}
		sum += st.Bytes
	}
	if sum != rep.Bytes || rep.Goodput < 8e6 {
		t.Errorf("total %d bytes (streams %d), goodput %.0f bit/s", rep.Bytes, sum, rep.Goodput)
	}
	if rep.Duration < 2*time.Second || rep.Duration > 4*time.Second {
		t.Errorf("load phase took %v, want about 2 s", rep.Duration)
	}
	// The server read everything confirmed, so it received at least as many
	// bytes as were confirmed, and each end's view matches the other's.
	if rep.Remote.BytesReceived < rep.Bytes || rep.Local.BytesSent < rep.Bytes {
		t.Errorf("quic bytes: local sent %d, remote received %d, confirmed %d", rep.Local.BytesSent, rep.Remote.BytesReceived, rep.Bytes)
	}
	if len(progress) < 1 || progress[0].Bytes == 0 {
		t.Errorf("progress reports %+v", progress)
	}
	j, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(j, &back); err != nil {
		t.Fatal(err)
	}
	if back["bytes"].(float64) != float64(rep.Bytes) || back["rtt_idle"].(map[string]any)["samples"].(float64) != float64(rep.IdleRTT.Samples) {
		t.Errorf("json %s", j)
	}
}

func TestRunSize(t *testing.T) {
	k := newKeys(t)
	s := startServer(t, k)
	const size = 3 << 20
	rep, err := linktest.Run(t.Context(), linktest.Config{
		Peer: s.Addr().String(), KeyDir: k.clientDir, PeerFingerprints: []string{k.serverFP},
		Duration: 20 * time.Second, Streams: 2, Size: size, IdlePings: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range rep.Streams {
		if st.Bytes != size {
			t.Errorf("stream %d: server read %d bytes, want %d", st.Stream, st.Bytes, size)
		}
	}
	if rep.Duration > 10*time.Second {
		t.Errorf("6 MiB on loopback took %v", rep.Duration)
	}
}

// TestRunThroughRelay checks that what linktest measures matches what the
// relay was told: 20 ms each way, 5 % loss each way.
func TestRunThroughRelay(t *testing.T) {
	k := newKeys(t)
	s := startServer(t, k)
	const delay, loss = 20 * time.Millisecond, 0.05
	r, err := relay.New(relay.Config{Listen: "127.0.0.1:0", To: s.Addr().String(), Loss: loss, Delay: delay, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	rep, err := linktest.Run(t.Context(), linktest.Config{
		Peer: r.Addr().String(), KeyDir: k.clientDir, PeerFingerprints: []string{k.serverFP},
		Duration: 3 * time.Second, Streams: 2, PingInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	rep.WriteTable(&b)
	st := r.Stats()
	t.Logf("relay %+v\n%s", st, b.String())

	// A round trip crosses the relay twice. The relay never delivers early;
	// a lost ping is retransmitted, so the minimum, not the average, is the
	// path's own round trip.
	rtt := 2 * delay
	for name, got := range map[string]time.Duration{"idle min": rep.IdleRTT.Min, "loaded min": rep.LoadedRTT.Min, "quic min": rep.Local.MinRTT} {
		if got < rtt || got > rtt+15*time.Millisecond {
			t.Errorf("%s rtt %v, want %v..%v", name, got, rtt, rtt+15*time.Millisecond)
		}
	}
	if rep.Handshake < rtt {
		t.Errorf("handshake %v shorter than one round trip %v", rep.Handshake, rtt)
	}
	// quic-go counts what it declared lost; it should see the relay's drops,
	// give or take spurious declarations and late detections.
	dropped := float64(st.Up.Dropped) / float64(st.Up.Received)
	if rep.Local.PacketsLost == 0 || rep.Local.LossRate() < dropped/2 || rep.Local.LossRate() > 2*dropped+0.02 {
		t.Errorf("quic reports %d of %d packets lost (%.3f); the relay dropped %.3f upstream",
			rep.Local.PacketsLost, rep.Local.PacketsSent, rep.Local.LossRate(), dropped)
	}
	if dropped < loss/2 || dropped > 2*loss {
		t.Errorf("relay dropped %.3f of packets, told %.3f", dropped, loss)
	}
	if rep.Bytes == 0 {
		t.Error("no data through the relay")
	}
}

func TestRunRefusedPin(t *testing.T) {
	k := newKeys(t)
	s := startServer(t, k)
	other := t.TempDir()
	if _, err := link.GenerateKey(other); err != nil {
		t.Fatal(err)
	}
	_, err := linktest.Run(t.Context(), linktest.Config{
		Peer: s.Addr().String(), KeyDir: other, PeerFingerprints: []string{k.serverFP}, Duration: time.Second,
	})
	if !errors.Is(err, link.ErrRefusedByPeer) {
		t.Fatalf("run with an unpinned key: %v, want ErrRefusedByPeer", err)
	}
	if s.Refused() != 1 {
		t.Errorf("server refused %d handshakes, want 1", s.Refused())
	}
	// And the server's certificate must match our pin too.
	_, err = linktest.Run(t.Context(), linktest.Config{
		Peer: s.Addr().String(), KeyDir: k.clientDir, PeerFingerprints: []string{k.clientFP}, Duration: time.Second,
	})
	if !errors.Is(err, link.ErrNotPinned) {
		t.Fatalf("run against an unpinned server: %v, want ErrNotPinned", err)
	}
}
