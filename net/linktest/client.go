package linktest

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/indexwire/indexwire/net/link"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// Run connects to a linktest server, measures the link and returns the
// report. It takes about IdlePings*PingInterval plus Duration.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	peer, local, err := cfg.check()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.Named("linktest").With(zap.String("peer", cfg.Peer))
	cert, err := link.LoadCertificate(cfg.KeyDir, cfg.Certificate)
	if err != nil {
		return nil, fmt.Errorf("linktest: %w", err)
	}
	tlsConf, err := link.PinnedClientTLS(cert, cfg.PeerFingerprints, ALPN, cfg.Peer, log)
	if err != nil {
		return nil, fmt.Errorf("linktest: %w", err)
	}
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
	if err != nil {
		return nil, fmt.Errorf("linktest: bind %v: %w", local, err)
	}
	defer udp.Close()
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()

	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	start := time.Now()
	conn, err := tr.Dial(dctx, net.UDPAddrFromAddrPort(peer), tlsConf, quicConfig())
	cancel()
	if err != nil {
		return nil, connectError(cfg.Peer, &cert, err)
	}
	rep := &Report{Peer: cfg.Peer, Handshake: time.Since(start)}
	defer conn.CloseWithError(0, "linktest done")
	stop := context.AfterFunc(ctx, func() { conn.CloseWithError(0, "linktest canceled") })
	defer stop()
	log.Info("connected", zap.Duration("handshake", rep.Handshake))

	r := &runner{cfg: cfg, conn: conn, log: log}
	if err := r.run(ctx, rep); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("linktest: %w", ctx.Err())
		}
		return nil, connectError(cfg.Peer, &cert, err)
	}
	return rep, nil
}

// connectError names a refused certificate: with TLS 1.3 the server checks
// ours after our side of the handshake is done, so the refusal can arrive on
// the first stream as well as from Dial.
func connectError(peer string, cert *tls.Certificate, err error) error {
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && te.ErrorCode.IsCryptoError() {
		return fmt.Errorf("linktest: %s: %w (is %s pinned there?): %w", peer, link.ErrRefusedByPeer, link.CertFingerprint(cert), err)
	}
	return fmt.Errorf("linktest with %s: %w", peer, err)
}

// check fills defaults and parses addresses.
func (cfg *Config) check() (peer, local netip.AddrPort, err error) {
	peer, err = netip.ParseAddrPort(cfg.Peer)
	if err != nil || peer.Port() == 0 || peer.Addr().IsUnspecified() {
		return peer, local, fmt.Errorf("linktest: peer %q: want an IP literal and a port", cfg.Peer)
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	switch {
	case cfg.LocalAddr != "":
		if local, err = netip.ParseAddrPort(cfg.LocalAddr); err != nil {
			return peer, local, fmt.Errorf("linktest: local address %q: %w", cfg.LocalAddr, err)
		}
	case peer.Addr().Is4() && peer.Addr().IsLoopback():
		local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	case peer.Addr().IsLoopback():
		local = netip.AddrPortFrom(netip.IPv6Loopback(), 0)
	case peer.Addr().Is6():
		local = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	default:
		local = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	if cfg.Duration < 0 || cfg.Streams < 0 || cfg.Size < 0 || cfg.PingInterval < 0 || cfg.IdlePings < 0 || cfg.DialTimeout < 0 {
		return peer, local, errors.New("linktest: negative duration, streams, size, ping interval, idle pings or dial timeout")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.Duration, DefaultDuration)
	def(&cfg.PingInterval, DefaultPingInterval)
	def(&cfg.DialTimeout, DefaultDialTimeout)
	if cfg.Streams == 0 {
		cfg.Streams = DefaultStreams
	}
	if cfg.IdlePings == 0 {
		cfg.IdlePings = DefaultIdlePings
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return peer, local, nil
}

// runner holds one run's connection.
type runner struct {
	cfg     Config
	conn    *quic.Conn
	log     *zap.Logger
	written atomic.Uint64
}

func (r *runner) run(ctx context.Context, rep *Report) error {
	ping, err := r.openKind(ctx, kindPing)
	if err != nil {
		return err
	}
	idle, err := r.idlePings(ping)
	if err != nil {
		return err
	}
	rep.IdleRTT = summarize(idle)

	loadCtx, stopLoad := context.WithCancel(ctx)
	var pings []time.Duration
	var pingErr error
	var wg sync.WaitGroup
	wg.Go(func() { pings, pingErr = r.loadedPings(loadCtx, ping) })
	wg.Go(func() { r.progress(loadCtx) })
	start := time.Now()
	rep.Streams = r.data(ctx, start)
	rep.Duration = time.Since(start)
	stopLoad()
	wg.Wait()
	if pingErr != nil {
		return pingErr
	}
	rep.LoadedRTT = summarize(pings)
	for _, s := range rep.Streams {
		rep.Bytes += s.Bytes
		if s.Err != "" && rep.Bytes == 0 {
			return fmt.Errorf("data stream: %s", s.Err)
		}
	}
	if rep.Duration > 0 {
		rep.Goodput = float64(rep.Bytes) * 8 / rep.Duration.Seconds()
	}
	rep.Local = pathStats(r.conn.ConnectionStats())
	if rep.Remote, err = r.remoteStats(ctx); err != nil {
		return err
	}
	return nil
}

// openKind opens a stream and writes its kind byte.
func (r *runner) openKind(ctx context.Context, kind byte) (*quic.Stream, error) {
	str, err := r.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if _, err := str.Write([]byte{kind}); err != nil {
		return nil, fmt.Errorf("write stream kind: %w", err)
	}
	return str, nil
}

// idlePings measures round trips one at a time with no other traffic.
func (r *runner) idlePings(str *quic.Stream) ([]time.Duration, error) {
	var out []time.Duration
	var b [8]byte
	for seq := range uint64(r.cfg.IdlePings) {
		binary.BigEndian.PutUint64(b[:], seq)
		t := time.Now()
		if _, err := str.Write(b[:]); err != nil {
			return nil, fmt.Errorf("ping: %w", err)
		}
		if _, err := io.ReadFull(str, b[:]); err != nil {
			return nil, fmt.Errorf("ping: %w", err)
		}
		if got := binary.BigEndian.Uint64(b[:]); got != seq {
			return nil, fmt.Errorf("ping %d answered with %d", seq, got)
		}
		out = append(out, time.Since(t))
		time.Sleep(r.cfg.PingInterval)
	}
	return out, nil
}

// loadedPings sends a ping every interval while the load runs, without
// waiting for answers, and collects the round trips it got.
func (r *runner) loadedPings(ctx context.Context, str *quic.Stream) ([]time.Duration, error) {
	var mu sync.Mutex
	sent := map[uint64]time.Time{}
	var out []time.Duration
	readErr := make(chan error, 1)
	go func() { // ends when the stream is closed below
		var b [8]byte
		for {
			if _, err := io.ReadFull(str, b[:]); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				readErr <- err
				return
			}
			now := time.Now()
			mu.Lock()
			if t, ok := sent[binary.BigEndian.Uint64(b[:])]; ok {
				out = append(out, now.Sub(t))
			}
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(r.cfg.PingInterval)
	defer tick.Stop()
	var b [8]byte
	for seq := uint64(r.cfg.IdlePings); ; seq++ {
		select {
		case <-ctx.Done():
		case <-tick.C:
			binary.BigEndian.PutUint64(b[:], seq)
			mu.Lock()
			sent[seq] = time.Now()
			mu.Unlock()
			if _, err := str.Write(b[:]); err == nil {
				continue
			}
		}
		break
	}
	// Close our side and wait for the echoes still in flight, briefly.
	str.Close()
	var err error
	select {
	case err = <-readErr:
	case <-time.After(2 * time.Second):
		str.CancelRead(0)
		<-readErr
	}
	mu.Lock()
	defer mu.Unlock()
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("pings: %w", err)
	}
	return out, nil
}

// progress reports once a second until ctx ends.
func (r *runner) progress(ctx context.Context) {
	if r.cfg.Progress == nil {
		return
	}
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st := r.conn.ConnectionStats()
			r.cfg.Progress(Progress{Elapsed: time.Since(start), Bytes: r.written.Load(), RTT: st.SmoothedRTT, Lost: st.PacketsLost})
		}
	}
}

// data runs the streams in parallel until each has sent Size bytes or the
// Duration is over.
func (r *runner) data(ctx context.Context, start time.Time) []StreamResult {
	res := make([]StreamResult, r.cfg.Streams)
	deadline := start.Add(r.cfg.Duration)
	var wg sync.WaitGroup
	for i := range res {
		wg.Go(func() {
			res[i] = r.stream(ctx, start, deadline)
			res[i].Stream = i
		})
	}
	wg.Wait()
	return res
}

// stream sends one stream's load and reads the server's byte count.
func (r *runner) stream(ctx context.Context, start, deadline time.Time) StreamResult {
	fail := func(err error) StreamResult { return StreamResult{Duration: time.Since(start), Err: err.Error()} }
	str, err := r.openKind(ctx, kindData)
	if err != nil {
		return fail(err)
	}
	buf := make([]byte, 32<<10)
	str.SetWriteDeadline(deadline)
	var sent int64
	for r.cfg.Size == 0 || sent < r.cfg.Size {
		chunk := buf
		if r.cfg.Size > 0 {
			chunk = buf[:min(int64(len(buf)), r.cfg.Size-sent)]
		}
		n, err := str.Write(chunk)
		sent += int64(n)
		r.written.Add(uint64(n))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			str.CancelRead(0)
			return fail(fmt.Errorf("write data: %w", err))
		}
	}
	if r.cfg.Size > 0 && sent >= r.cfg.Size {
		str.Close() // everything is sent: the server reads to the end
	} else {
		str.CancelWrite(0) // time is up: what is still buffered does not count
	}
	str.SetReadDeadline(time.Now().Add(r.cfg.DialTimeout + r.cfg.Duration))
	var b [8]byte
	if _, err := io.ReadFull(str, b[:]); err != nil {
		return fail(fmt.Errorf("read byte count: %w", err))
	}
	res := StreamResult{Bytes: binary.BigEndian.Uint64(b[:]), Duration: time.Since(start)}
	res.Goodput = float64(res.Bytes) * 8 / res.Duration.Seconds()
	return res
}

// remoteStats asks the server for its view of the connection.
func (r *runner) remoteStats(ctx context.Context) (PathStats, error) {
	str, err := r.openKind(ctx, kindStats)
	if err != nil {
		return PathStats{}, err
	}
	str.Close()
	str.SetReadDeadline(time.Now().Add(r.cfg.DialTimeout))
	b, err := io.ReadAll(io.LimitReader(str, maxStatsReply+1))
	if err != nil {
		return PathStats{}, fmt.Errorf("read server stats: %w", err)
	}
	if len(b) > maxStatsReply {
		return PathStats{}, fmt.Errorf("server stats longer than %d bytes", maxStatsReply)
	}
	var w wireStats
	if err := json.Unmarshal(b, &w); err != nil {
		return PathStats{}, fmt.Errorf("server stats: %w", err)
	}
	return PathStats(w), nil
}

// summarize computes min, average, p99 and max of round trips.
func summarize(ds []time.Duration) RTTStats {
	if len(ds) == 0 {
		return RTTStats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	p99 := s[(len(s)*99+99)/100-1]
	return RTTStats{Samples: len(s), Min: s[0], Avg: sum / time.Duration(len(s)), P99: p99, Max: s[len(s)-1]}
}
