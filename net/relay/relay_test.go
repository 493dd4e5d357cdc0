package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// endpoint is a UDP socket on 127.0.0.1 that records what it receives and,
// if echo is set, sends every packet back.
type endpoint struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []received
	echo bool
}

type received struct {
	seq uint64
	at  time.Time
}

func newEndpoint(t *testing.T, echo bool) *endpoint {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	e := &endpoint{conn: c, echo: echo}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.got = append(e.got, received{seq: binary.BigEndian.Uint64(buf), at: time.Now()})
			e.mu.Unlock()
			if e.echo {
				c.WriteToUDP(buf[:n], from)
			}
		}
	}()
	return e
}

func (e *endpoint) addr() string { return e.conn.LocalAddr().String() }

func (e *endpoint) received() []received {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]received(nil), e.got...)
}

// startRelay runs a relay for the test's lifetime.
func startRelay(t *testing.T, cfg Config) *Relay {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay run: %v", err)
		}
	})
	return r
}

// sendSeq sends n packets numbered 0..n-1 through the relay, pausing every
// burst packets so that no kernel buffer overflows.
func sendSeq(t *testing.T, c *net.UDPConn, to net.Addr, n, burst int, pause time.Duration) {
	t.Helper()
	p := make([]byte, 64)
	for i := range n {
		binary.BigEndian.PutUint64(p, uint64(i))
		if _, err := c.WriteTo(p, to); err != nil {
			t.Fatal(err)
		}
		if (i+1)%burst == 0 {
			time.Sleep(pause)
		}
	}
}

func clientConn(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func within(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if got < want-tol || got > want+tol {
		t.Errorf("%s = %.4f, want %.4f ± %.4f", what, got, want, tol)
	} else {
		t.Logf("%s = %.4f (want %.4f ± %.4f)", what, got, want, tol)
	}
}

func TestLossRate(t *testing.T) {
	sink := newEndpoint(t, false)
	r := startRelay(t, Config{To: sink.addr(), Loss: 0.05, Seed: 1})
	const n = 10000
	sendSeq(t, clientConn(t), r.Addr(), n, 200, time.Millisecond)
	waitFor(t, "all packets decided", func() bool {
		s := r.Stats().Up
		return s.Forwarded+s.Dropped+s.Failed == n && uint64(len(sink.received())) == s.Forwarded
	})
	s := r.Stats().Up
	if s.Failed != 0 || s.Overflow != 0 {
		t.Fatalf("%d writes failed, %d packets overflowed", s.Failed, s.Overflow)
	}
	// Binomial(10000, 0.05) has a standard deviation of 0.0022; the seed is
	// fixed, so this replays exactly, and 0.01 is more than 4 sigma.
	within(t, "loss rate", float64(s.Dropped)/n, 0.05, 0.01)
}

func TestDelay(t *testing.T) {
	echo := newEndpoint(t, true)
	const delay = 30 * time.Millisecond
	r := startRelay(t, Config{To: echo.addr(), Delay: delay, Seed: 2})
	c := clientConn(t)
	buf := make([]byte, 64)
	var rtts []time.Duration
	for range 10 {
		start := time.Now()
		if _, err := c.WriteTo(buf, r.Addr()); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := c.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
		rtts = append(rtts, time.Since(start))
	}
	// The relay must never deliver early; late is possible on a loaded
	// machine, so the upper bound is on the median.
	slices.Sort(rtts)
	if rtts[0] < 2*delay {
		t.Errorf("fastest round trip %v through a relay with %v delay each way, want at least %v", rtts[0], delay, 2*delay)
	}
	if med := rtts[len(rtts)/2]; med > 2*delay+20*time.Millisecond {
		t.Errorf("median round trip %v, want at most %v", med, 2*delay+20*time.Millisecond)
	}
	t.Logf("round trips: %v", rtts)
}

func TestJitterSpread(t *testing.T) {
	sink := newEndpoint(t, false)
	const delay, jitter = 20 * time.Millisecond, 10 * time.Millisecond
	r := startRelay(t, Config{To: sink.addr(), Delay: delay, Jitter: jitter, Seed: 3})
	c := clientConn(t)
	sent := make([]time.Time, 200)
	p := make([]byte, 64)
	for i := range sent {
		binary.BigEndian.PutUint64(p, uint64(i))
		sent[i] = time.Now()
		c.WriteTo(p, r.Addr())
		time.Sleep(time.Millisecond)
	}
	waitFor(t, "200 packets", func() bool { return len(sink.received()) == 200 })
	var ds []time.Duration
	for _, g := range sink.received() {
		ds = append(ds, g.at.Sub(sent[g.seq]))
	}
	slices.Sort(ds)
	lo, p90, hi := ds[0], ds[len(ds)*9/10], ds[len(ds)-1]
	t.Logf("one-way delay min %v, p90 %v, max %v", lo, p90, hi)
	if lo < delay-jitter || lo > delay-jitter/2 {
		t.Errorf("least delay %v, want %v..%v", lo, delay-jitter, delay-jitter/2)
	}
	// Uniform over 10..30 ms: the 90th percentile is 28 ms; a loaded
	// machine only adds, so bound it loosely above and firmly below.
	if p90 < delay+jitter/2 || p90 > delay+jitter+15*time.Millisecond {
		t.Errorf("90th percentile delay %v, want %v..%v", p90, delay+jitter/2, delay+jitter+15*time.Millisecond)
	}
}

func TestDuplicate(t *testing.T) {
	sink := newEndpoint(t, false)
	r := startRelay(t, Config{To: sink.addr(), Duplicate: 0.02, Seed: 4})
	const n = 5000
	sendSeq(t, clientConn(t), r.Addr(), n, 200, time.Millisecond)
	waitFor(t, "all copies", func() bool {
		s := r.Stats().Up
		return s.Received == n && uint64(len(sink.received())) == n+s.Duplicated
	})
	s := r.Stats().Up
	within(t, "duplicate rate", float64(s.Duplicated)/n, 0.02, 0.008)
	seen := map[uint64]int{}
	for _, g := range sink.received() {
		seen[g.seq]++
	}
	twice := 0
	for seq := range uint64(n) {
		switch seen[seq] {
		case 1:
		case 2:
			twice++
		default:
			t.Fatalf("packet %d arrived %d times", seq, seen[seq])
		}
	}
	if uint64(twice) != s.Duplicated {
		t.Errorf("%d packets arrived twice, relay counted %d duplicates", twice, s.Duplicated)
	}
}

func TestReorder(t *testing.T) {
	sink := newEndpoint(t, false)
	r := startRelay(t, Config{To: sink.addr(), Reorder: 0.05, Seed: 5})
	const n = 2000
	sendSeq(t, clientConn(t), r.Addr(), n, 20, time.Millisecond)
	waitFor(t, "all packets", func() bool { return len(sink.received()) == n })
	late := 0 // packets arriving after a higher-numbered one
	var highest uint64
	for i, g := range sink.received() {
		if i > 0 && g.seq < highest {
			late++
		}
		highest = max(highest, g.seq)
	}
	s := r.Stats().Up
	within(t, "reorder rate", float64(s.Reordered)/n, 0.05, 0.015)
	// A held packet is overtaken only if another was sent during its hold
	// (5 ms here, with a packet every 50 µs in bursts), so nearly all are.
	if late < int(s.Reordered)*8/10 || uint64(late) > s.Reordered {
		t.Errorf("%d packets arrived late, relay held back %d", late, s.Reordered)
	}
}

func TestBlackoutWindow(t *testing.T) {
	sink := newEndpoint(t, false)
	r := startRelay(t, Config{To: sink.addr(), Blackouts: []Blackout{{At: 300 * time.Millisecond, For: 400 * time.Millisecond}}, Seed: 6})
	start := time.Now() // Run started just before; the window is in the relay's clock
	c := clientConn(t)
	sent := make([]time.Duration, 200)
	p := make([]byte, 64)
	for i := range sent {
		binary.BigEndian.PutUint64(p, uint64(i))
		sent[i] = time.Since(start)
		c.WriteTo(p, r.Addr())
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, "packets outside the blackout", func() bool {
		s := r.Stats().Up
		return s.Forwarded+s.BlackedOut == 200 && uint64(len(sink.received())) == s.Forwarded
	})
	got := map[uint64]bool{}
	for _, g := range sink.received() {
		got[g.seq] = true
	}
	// Allow 30 ms at each edge for scheduling between our clock and the relay's.
	for i, at := range sent {
		inside := at > 330*time.Millisecond && at < 670*time.Millisecond
		outside := at < 270*time.Millisecond || at > 730*time.Millisecond
		if inside && got[uint64(i)] {
			t.Errorf("packet %d sent at %v, inside the blackout, arrived", i, at)
		}
		if outside && !got[uint64(i)] {
			t.Errorf("packet %d sent at %v, outside the blackout, was dropped", i, at)
		}
	}
	s := r.Stats().Up
	if s.BlackedOut < 60 || s.BlackedOut > 90 || s.Dropped != 0 {
		t.Errorf("blacked out %d (want about 400ms/5ms = 80), dropped %d", s.BlackedOut, s.Dropped)
	}
}

func TestBlackoutForAndSetTo(t *testing.T) {
	a, b := newEndpoint(t, true), newEndpoint(t, true)
	r := startRelay(t, Config{To: a.addr(), Seed: 7})
	c := clientConn(t)
	ping := func() bool {
		p := make([]byte, 64)
		c.WriteTo(p, r.Addr())
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _, err := c.ReadFrom(p)
		return err == nil
	}
	if !ping() {
		t.Fatal("no echo through the relay")
	}
	r.BlackoutFor(300 * time.Millisecond)
	if ping() {
		t.Fatal("echo during a blackout")
	}
	time.Sleep(150 * time.Millisecond)
	if !ping() {
		t.Fatal("no echo after the blackout")
	}
	if err := r.SetTo(b.addr()); err != nil {
		t.Fatal(err)
	}
	if !ping() {
		t.Fatal("no echo after SetTo")
	}
	if len(a.received()) != 2 || len(b.received()) != 1 {
		t.Errorf("endpoints received %d and %d packets, want 2 and 1", len(a.received()), len(b.received()))
	}
	if s := r.Stats(); s.Up.BlackedOut != 1 || s.Up.Forwarded != 3 || s.Down.Forwarded != 3 {
		t.Errorf("stats %+v, want 1 blacked out and 3 forwarded up, 3 forwarded down", s)
	}
}

func TestSeedReplays(t *testing.T) {
	mk := func(seed int64) *Relay {
		r, err := New(Config{Listen: "127.0.0.1:0", To: "127.0.0.1:9", Loss: 0.3, Reorder: 0.2, Duplicate: 0.1,
			Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.conn.Close() })
		return r
	}
	a, b, c := mk(42), mk(42), mk(43)
	same, differ := true, false
	for range 1000 {
		da, db, dc := a.decide(), b.decide(), c.decide()
		same = same && da == db
		differ = differ || da != dc
	}
	if !same {
		t.Error("two relays with the same seed decided differently")
	}
	if !differ {
		t.Error("relays with different seeds decided the same 1000 times")
	}
}

func TestRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Listen: "10.1.2.3:7000", To: "127.0.0.1:7001"},
		{Listen: "127.0.0.1:0", To: "192.0.2.1:7001"},
		{Listen: "0.0.0.0:0", To: "127.0.0.1:7001"},
	} {
		_, err := New(cfg)
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("New(%q -> %q) = %v, want ErrNotLoopback", cfg.Listen, cfg.To, err)
		}
	}
	for _, cfg := range []Config{
		{Listen: "localhost:0", To: "127.0.0.1:7001"},
		{Listen: "127.0.0.1:0", To: "127.0.0.1:0"},
		{Listen: "127.0.0.1:0", To: "127.0.0.1:7001", Loss: 1.5},
		{Listen: "127.0.0.1:0", To: "127.0.0.1:7001", Delay: -time.Second},
		{Listen: "127.0.0.1:0", To: "127.0.0.1:7001", Blackouts: []Blackout{{At: time.Second}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	r, err := New(Config{Listen: "127.0.0.1:0", To: "127.0.0.1:7001"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.conn.Close()
	if err := r.SetTo("8.8.8.8:53"); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("SetTo(8.8.8.8:53) = %v, want ErrNotLoopback", err)
	}
}
