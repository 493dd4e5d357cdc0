// Package relay is a small UDP forwarder that impairs the path between two
// loopback endpoints: it drops, delays, jitters, reorders and duplicates
// packets and blacks the path out for given windows, all drawn from a seeded
// random source so that a failing run replays.
//
// It exists because the test machines have no netem. quic-go's own helpers
// do not fit: integrationtests/tools/proxy only drops and delays (no
// duplication, no counters, no context), and testutils/simnet is an
// in-memory network that a separate process cannot reach.
//
// Every address must be loopback: the relay is a test tool and must never
// send traffic off the machine.
package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults and limits.
const (
	// DefaultMaxQueue bounds the packets held for delayed delivery; a packet
	// beyond it is dropped and counted as overflow.
	DefaultMaxQueue = 1 << 16
	// MinReorderHold is the least extra hold of a reordered packet.
	MinReorderHold = 5 * time.Millisecond
	// clientIdle is how long a client mapping lives without traffic.
	clientIdle = 2 * time.Minute
	maxPacket  = 1 << 16
)

// ErrNotLoopback is returned for an address that is not a loopback IP.
var ErrNotLoopback = errors.New("address is not loopback")

// Blackout is a window, measured from the start of Run, in which every
// packet in both directions is dropped.
type Blackout struct {
	At  time.Duration // start, from the start of Run
	For time.Duration // length
}

// Config configures a Relay. Probabilities are fractions in [0, 1].
type Config struct {
	Listen string // loopback UDP address clients send to; port 0 picks one
	To     string // loopback UDP address packets are forwarded to

	Loss      float64 // probability a packet is dropped
	Reorder   float64 // probability a packet is held back behind later ones
	Duplicate float64 // probability a packet is sent twice
	// Delay is added to every packet, in each direction; a round trip
	// through the relay gains 2*Delay.
	Delay time.Duration
	// Jitter spreads the delay uniformly over Delay±Jitter (never below 0).
	// Jitter alone reorders packets too, as on a real path.
	Jitter    time.Duration
	Blackouts []Blackout
	Seed      int64 // seed of the random source; the same seed and packet order give the same decisions
	MaxQueue  int   // default DefaultMaxQueue
	Logger    *zap.Logger
}

// DirStats counts what happened to packets in one direction.
type DirStats struct {
	Received   uint64 // packets read
	Forwarded  uint64 // packets written, copies included
	Dropped    uint64 // packets lost to Loss
	BlackedOut uint64 // packets dropped inside a blackout
	Duplicated uint64 // packets sent a second time
	Reordered  uint64 // packets held back behind later ones
	Overflow   uint64 // packets dropped because the delay queue was full
	Failed     uint64 // writes the kernel refused
	Bytes      uint64 // bytes written
}

// Stats is a snapshot of both directions. Up is from the clients towards
// To, Down is the replies.
type Stats struct {
	Up, Down DirStats
}

type dirCounters struct {
	received, forwarded, dropped, blackedOut, duplicated, reordered, overflow, failed, bytes atomic.Uint64
}

func (c *dirCounters) snapshot() DirStats {
	return DirStats{Received: c.received.Load(), Forwarded: c.forwarded.Load(), Dropped: c.dropped.Load(),
		BlackedOut: c.blackedOut.Load(), Duplicated: c.duplicated.Load(), Reordered: c.reordered.Load(),
		Overflow: c.overflow.Load(), Failed: c.failed.Load(), Bytes: c.bytes.Load()}
}

// Relay forwards UDP datagrams between clients on Listen and the address To.
// Each client address gets its own upstream socket, so To sees one peer per
// client, as it would without the relay.
type Relay struct {
	cfg  Config
	log  *zap.Logger
	conn *net.UDPConn
	up   dirCounters
	down dirCounters

	to      atomic.Pointer[net.UDPAddr]
	start   atomic.Int64 // unix nanoseconds of Run's start
	blocked atomic.Int64 // unix nanoseconds until which a manual blackout lasts
	running atomic.Bool

	rngMu sync.Mutex
	rng   *rand.Rand

	sched *scheduler

	mu      sync.Mutex
	clients map[netip.AddrPort]*client
}

// client is one client address and its upstream socket.
type client struct {
	addr     *net.UDPAddr
	conn     *net.UDPConn
	lastSeen atomic.Int64
}

// New validates cfg and binds Listen; Run then forwards.
func New(cfg Config) (*Relay, error) {
	lap, err := loopback("listen", cfg.Listen, true)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	to, err := loopback("to", cfg.To, false)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	for name, p := range map[string]float64{"loss": cfg.Loss, "reorder": cfg.Reorder, "duplicate": cfg.Duplicate} {
		if !(p >= 0 && p <= 1) {
			return nil, fmt.Errorf("relay: %s %v outside 0..1", name, p)
		}
	}
	if cfg.Delay < 0 || cfg.Jitter < 0 {
		return nil, fmt.Errorf("relay: negative delay %v or jitter %v", cfg.Delay, cfg.Jitter)
	}
	for _, b := range cfg.Blackouts {
		if b.At < 0 || b.For <= 0 {
			return nil, fmt.Errorf("relay: blackout %v@%v: want a positive length at a non-negative offset", b.For, b.At)
		}
	}
	if cfg.MaxQueue < 0 {
		return nil, fmt.Errorf("relay: max queue %d is negative", cfg.MaxQueue)
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(lap))
	if err != nil {
		return nil, fmt.Errorf("relay: listen %s: %w", cfg.Listen, err)
	}
	setBuffers(conn)
	seed := uint64(cfg.Seed)
	r := &Relay{
		cfg:     cfg,
		log:     cfg.Logger.Named("relay"),
		conn:    conn,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		clients: map[netip.AddrPort]*client{},
		sched:   newScheduler(cfg.MaxQueue),
	}
	r.to.Store(net.UDPAddrFromAddrPort(to))
	return r, nil
}

// loopback parses a loopback IP literal with a port.
func loopback(field, addr string, zeroPort bool) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q: want a loopback IP and port such as 127.0.0.1:7443: %w", field, addr, err)
	}
	if !ap.Addr().Unmap().IsLoopback() {
		return netip.AddrPort{}, fmt.Errorf("%s %q: %w (the relay only forwards on this machine)", field, addr, ErrNotLoopback)
	}
	if ap.Port() == 0 && !zeroPort {
		return netip.AddrPort{}, fmt.Errorf("%s %q: port 0", field, addr)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// setBuffers asks for large socket buffers so the relay, not the kernel,
// decides what is lost; failure only means the kernel default stays.
func setBuffers(c *net.UDPConn) {
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
}

// Addr is the address clients send to.
func (r *Relay) Addr() net.Addr { return r.conn.LocalAddr() }

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats { return Stats{Up: r.up.snapshot(), Down: r.down.snapshot()} }

// SetTo changes where packets are forwarded, as when the far end restarts
// on another port. Replies from the old address are still relayed.
func (r *Relay) SetTo(addr string) error {
	ap, err := loopback("to", addr, false)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	r.to.Store(net.UDPAddrFromAddrPort(ap))
	r.log.Info("forwarding to new address", zap.String("to", addr))
	return nil
}

// BlackoutFor drops every packet, both ways, from now for d.
func (r *Relay) BlackoutFor(d time.Duration) {
	r.blocked.Store(time.Now().Add(d).UnixNano())
	r.log.Info("blackout", zap.Duration("for", d))
}

// blackedOut reports whether now falls in a blackout.
func (r *Relay) blackedOut(now time.Time) bool {
	if now.UnixNano() < r.blocked.Load() {
		return true
	}
	since := now.Sub(time.Unix(0, r.start.Load()))
	for _, b := range r.cfg.Blackouts {
		if since >= b.At && since < b.At+b.For {
			return true
		}
	}
	return false
}

// Run forwards until ctx ends, then closes every socket and returns nil.
// A Relay runs once.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("relay: already run")
	}
	r.start.Store(time.Now().UnixNano())
	r.log.Info("relaying", zap.Stringer("listen", r.conn.LocalAddr()), zap.Stringer("to", r.to.Load()),
		zap.Float64("loss", r.cfg.Loss), zap.Float64("reorder", r.cfg.Reorder), zap.Float64("duplicate", r.cfg.Duplicate),
		zap.Duration("delay", r.cfg.Delay), zap.Duration("jitter", r.cfg.Jitter), zap.Int64("seed", r.cfg.Seed))
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.sched.run(ctx) })
	wg.Go(func() {
		<-ctx.Done()
		r.conn.Close()
		r.mu.Lock()
		for _, c := range r.clients {
			c.conn.Close()
		}
		r.mu.Unlock()
	})
	err := r.readClients(ctx, &wg)
	cancel()
	wg.Wait()
	return err
}

// readClients reads datagrams from clients and forwards them upstream.
func (r *Relay) readClients(ctx context.Context, wg *sync.WaitGroup) error {
	buf := make([]byte, maxPacket)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("relay: read from clients: %w", err)
		}
		c, err := r.client(ctx, from, wg)
		if err != nil {
			r.log.Warn("no upstream socket for client", zap.Stringer("client", from), zap.Error(err))
			continue
		}
		c.lastSeen.Store(time.Now().UnixNano())
		r.impair(&r.up, buf[:n], c.conn, r.to.Load())
	}
}

// client returns the mapping for a client address, opening its upstream
// socket and reader on first sight. Idle mappings are dropped here too.
func (r *Relay) client(ctx context.Context, from netip.AddrPort, wg *sync.WaitGroup) (*client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.clients[from]; ok {
		return c, nil
	}
	now := time.Now().UnixNano()
	for a, c := range r.clients {
		if time.Duration(now-c.lastSeen.Load()) > clientIdle {
			c.conn.Close()
			delete(r.clients, a)
		}
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: from.Addr().AsSlice()})
	if err != nil {
		return nil, err
	}
	setBuffers(conn)
	c := &client{addr: net.UDPAddrFromAddrPort(from), conn: conn}
	r.clients[from] = c
	r.log.Info("new client", zap.Stringer("client", from), zap.Stringer("upstream", conn.LocalAddr()))
	wg.Go(func() { r.readUpstream(ctx, c) })
	return c, nil
}

// readUpstream relays replies on one client's upstream socket back to it.
func (r *Relay) readUpstream(ctx context.Context, c *client) {
	buf := make([]byte, maxPacket)
	for {
		n, _, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				r.log.Warn("read upstream", zap.Stringer("client", c.addr), zap.Error(err))
			}
			return
		}
		r.impair(&r.down, buf[:n], r.conn, c.addr)
	}
}

// decision is what happens to one packet.
type decision struct {
	drop      bool
	delay     time.Duration
	reorder   bool
	duplicate bool
	dupDelay  time.Duration
}

// decide draws the fate of one packet. It always draws the same number of
// values so that one packet's fate does not shift the next one's.
func (r *Relay) decide() decision {
	r.rngMu.Lock()
	loss, reorder, dup, j1, j2 := r.rng.Float64(), r.rng.Float64(), r.rng.Float64(), r.rng.Float64(), r.rng.Float64()
	r.rngMu.Unlock()
	d := decision{drop: loss < r.cfg.Loss, reorder: reorder < r.cfg.Reorder, duplicate: dup < r.cfg.Duplicate}
	d.delay = r.jittered(j1)
	d.dupDelay = r.jittered(j2)
	if d.reorder {
		d.delay += r.reorderHold()
	}
	return d
}

func (r *Relay) jittered(u float64) time.Duration {
	d := r.cfg.Delay + time.Duration((2*u-1)*float64(r.cfg.Jitter))
	return max(d, 0)
}

// reorderHold is how much longer a reordered packet waits: long enough for
// packets sent after it to overtake it.
func (r *Relay) reorderHold() time.Duration {
	return max(r.cfg.Delay/2+2*r.cfg.Jitter, MinReorderHold)
}

// impair applies the configured faults to one packet and schedules what
// survives to be written from conn to dst.
func (r *Relay) impair(c *dirCounters, p []byte, conn *net.UDPConn, dst *net.UDPAddr) {
	c.received.Add(1)
	now := time.Now()
	d := r.decide()
	if r.blackedOut(now) {
		c.blackedOut.Add(1)
		return
	}
	if d.drop {
		c.dropped.Add(1)
		return
	}
	if d.reorder {
		c.reordered.Add(1)
	}
	data := append([]byte(nil), p...)
	send := func() {
		if _, err := conn.WriteToUDP(data, dst); err == nil {
			c.forwarded.Add(1)
			c.bytes.Add(uint64(len(data)))
		} else {
			c.failed.Add(1)
		}
	}
	if !r.sched.add(now.Add(d.delay), send) {
		c.overflow.Add(1)
		return
	}
	if d.duplicate {
		c.duplicated.Add(1)
		if !r.sched.add(now.Add(d.dupDelay), send) {
			c.overflow.Add(1)
		}
	}
}
