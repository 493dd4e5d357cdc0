package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// Sender is the primary's end of the link. Run keeps one connection to the
// replica up; Send ships one batch on its own stream and returns its Ack.
// Nothing is queued: a batch sent while the link is down waits for the next
// connection or for ctx, and catch-up covers whatever never arrived.
type Sender struct {
	cfg   SenderConfig
	log   *zap.Logger
	tls   *tls.Config
	qconf *quic.Config
	peer  *net.UDPAddr
	local *net.UDPAddr
	fp    string
	c     senderCounters

	running atomic.Bool
	mu      sync.Mutex
	sess    *session      // nil while disconnected
	wake    chan struct{} // closed and replaced whenever sess changes
	lastErr error         // why the last connection attempt or session ended
}

// session is one established connection.
type session struct {
	conn    *quic.Conn
	ctl     *quic.Stream
	peerMax int // the replica's MaxFrame from its Hello
	states  []diff.MailboxState
	probe   chan struct{} // asks the heartbeat for a Ping now
}

// ackProbeDelay is how long an Ack may take before the heartbeat sends a
// Ping at once instead of at its next tick. A replica restarted after a
// crash answers that Ping with a stateless reset, so the primary learns at
// once that the batch it waits for will never be acknowledged.
const ackProbeDelay = 250 * time.Millisecond

// probeNow asks the heartbeat for an early Ping; it never blocks.
func (sess *session) probeNow() {
	select {
	case sess.probe <- struct{}{}:
	default:
	}
}

// NewSender validates cfg and loads the key; Run then connects.
func NewSender(cfg SenderConfig) (*Sender, error) {
	ap, err := validateAddr("peer", cfg.Peer, false)
	if err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	if ap.Addr().IsUnspecified() {
		return nil, fmt.Errorf("sender: peer %q: unspecified address: %w", cfg.Peer, ErrConfig)
	}
	local := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	switch {
	case cfg.LocalAddr != "":
		if local, err = validateAddr("local address", cfg.LocalAddr, true); err != nil {
			return nil, fmt.Errorf("sender: %w", err)
		}
	case ap.Addr().Is4() && ap.Addr().IsLoopback():
		local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	case ap.Addr().IsLoopback():
		local = netip.AddrPortFrom(netip.IPv6Loopback(), 0)
	case ap.Addr().Is6():
		local = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	if err := checkMaxFrame(&cfg.MaxFrame); err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	for f, d := range map[string]time.Duration{"heartbeat interval": cfg.HeartbeatInterval, "dial timeout": cfg.DialTimeout,
		"min backoff": cfg.MinBackoff, "max backoff": cfg.MaxBackoff} {
		if err := checkPositive(f, d); err != nil {
			return nil, fmt.Errorf("sender: %w", err)
		}
	}
	orDefault(&cfg.HeartbeatInterval, DefaultHeartbeatInterval)
	orDefault(&cfg.DialTimeout, DefaultDialTimeout)
	orDefault(&cfg.MinBackoff, DefaultMinBackoff)
	orDefault(&cfg.MaxBackoff, DefaultMaxBackoff)
	orDefault(&cfg.Logger, zap.NewNop())
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("sender: max backoff %v below min backoff %v: %w", cfg.MaxBackoff, cfg.MinBackoff, ErrConfig)
	}
	p, err := parsePins(cfg.PeerFingerprints)
	if err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	cert, err := loadCert(cfg.KeyDir, cfg.Certificate)
	if err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	s := &Sender{
		cfg:   cfg,
		log:   cfg.Logger.Named("link").With(zap.String("peer", cfg.Peer)),
		qconf: quicConfig(cfg.HeartbeatInterval, -1),
		peer:  net.UDPAddrFromAddrPort(ap),
		local: net.UDPAddrFromAddrPort(local),
		fp:    CertFingerprint(&cert),
		wake:  make(chan struct{}),
	}
	s.tls = clientTLS(cert, p, cfg.Peer, s.log)
	return s, nil
}

// Fingerprint is the fingerprint of the sender's own certificate, which the
// replica must pin.
func (s *Sender) Fingerprint() string { return s.fp }

// Stats returns a snapshot of the sender's counters.
func (s *Sender) Stats() SenderStats { return s.c.snapshot() }

// Connected reports whether a session with the replica is up.
func (s *Sender) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess != nil
}

// Run connects to the replica and keeps reconnecting, with exponential
// backoff from MinBackoff to MaxBackoff, until ctx ends. It returns nil
// then, or an error if it could not start.
func (s *Sender) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("sender: already running")
	}
	defer s.running.Store(false)
	udp, err := net.ListenUDP("udp", s.local)
	if err != nil {
		return fmt.Errorf("sender: bind %v: %w", s.local, err)
	}
	tr := &quic.Transport{Conn: udp}
	defer udp.Close()
	defer tr.Close()
	backoff := s.cfg.MinBackoff
	for {
		sess, err := s.connect(ctx, tr)
		if ctx.Err() != nil {
			if sess != nil {
				sess.conn.CloseWithError(connShutdown, "primary shutting down")
			}
			return nil
		}
		if err != nil {
			s.c.dialErrors.Add(1)
			s.setSession(nil, err)
			s.log.Warn("connect failed", zap.Error(err), zap.Duration("retry_in", backoff))
		} else {
			if s.c.connects.Add(1) > 1 {
				s.c.reconnects.Add(1)
			}
			backoff = s.cfg.MinBackoff
			s.log.Info("connected", zap.Int("mailboxes", len(sess.states)))
			s.serve(ctx, sess)
			if ctx.Err() != nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// connect dials, checks pins (in TLS) and exchanges Hellos.
func (s *Sender) connect(ctx context.Context, tr *quic.Transport) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	conn, err := tr.Dial(ctx, s.peer, s.tls, s.qconf)
	if err != nil {
		return nil, s.dialError(err)
	}
	sess, err := s.hello(ctx, conn)
	if err != nil {
		conn.CloseWithError(connProtocol, err.Error())
		return nil, s.dialError(err)
	}
	return sess, nil
}

func (s *Sender) hello(ctx context.Context, conn *quic.Conn) (*session, error) {
	ctl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	if _, err := writeFrame(ctl, FrameHello, AppendHello(nil, &Hello{MaxFrame: s.cfg.MaxFrame}), deadline); err != nil {
		return nil, fmt.Errorf("write hello: %w", err)
	}
	sess := &session{conn: conn, ctl: ctl, probe: make(chan struct{}, 1)}
	for {
		f, err := readFrameBy(ctl, s.cfg.MaxFrame, deadline)
		if err != nil {
			return nil, &FrameError{Peer: s.cfg.Peer, Stream: int64(ctl.StreamID()), Err: fmt.Errorf("read hello: %w", err)}
		}
		if f.Type != FrameHello {
			return nil, &FrameError{Peer: s.cfg.Peer, Stream: int64(ctl.StreamID()), Err: fmt.Errorf("%v frame before hello: %w", f.Type, ErrUnexpectedFrame)}
		}
		h, err := DecodeHello(f.Payload)
		if err != nil {
			return nil, &FrameError{Peer: s.cfg.Peer, Stream: int64(ctl.StreamID()), Err: err}
		}
		sess.peerMax = h.MaxFrame
		sess.states = append(sess.states, h.States...)
		if !h.More {
			return sess, nil
		}
	}
}

// dialError marks a handshake the replica refused, which is almost always
// our fingerprint missing from its pins.
func (s *Sender) dialError(err error) error {
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && te.ErrorCode.IsCryptoError() {
		return fmt.Errorf("connect %s: %w (is %s pinned there?): %w", s.cfg.Peer, ErrRefusedByPeer, s.fp, err)
	}
	return fmt.Errorf("connect %s: %w", s.cfg.Peer, err)
}

func (s *Sender) setSession(sess *session, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sess = sess
	if cause != nil {
		s.lastErr = cause
	}
	close(s.wake)
	s.wake = make(chan struct{})
}

// serve runs one session: heartbeats and the CatchUp hook, until the
// connection ends or ctx does.
func (s *Sender) serve(ctx context.Context, sess *session) {
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	s.setSession(sess, nil)
	wg.Go(func() { s.heartbeat(sctx, sess) })
	if s.cfg.CatchUp != nil {
		wg.Go(func() { s.cfg.CatchUp(sctx, sess.states) })
	}
	select {
	case <-ctx.Done():
		sess.conn.CloseWithError(connShutdown, "primary shutting down")
	case <-sess.conn.Context().Done():
	}
	cause := context.Cause(sess.conn.Context())
	s.setSession(nil, fmt.Errorf("connection to %s lost: %w", s.cfg.Peer, cause))
	if ctx.Err() == nil {
		s.log.Warn("disconnected", zap.Error(cause))
	}
	cancel()
	wg.Wait()
}

// heartbeat sends a Ping every interval and drops the connection when no
// Pong came for three intervals.
func (s *Sender) heartbeat(ctx context.Context, sess *session) {
	hb := s.cfg.HeartbeatInterval
	var lastPong atomic.Int64
	var sentSeq, sentAt atomic.Int64
	lastPong.Store(time.Now().UnixNano())
	var reader sync.WaitGroup
	defer reader.Wait()
	reader.Go(func() { // ends when the connection closes, which every return below ensures
		for {
			f, err := readFrameBy(sess.ctl, s.cfg.MaxFrame, time.Time{})
			if err != nil {
				return
			}
			seq, derr := DecodePing(f.Payload)
			if f.Type != FramePong || derr != nil {
				fe := &FrameError{Peer: s.cfg.Peer, Stream: int64(sess.ctl.StreamID()), Err: fmt.Errorf("%v frame on control stream: %w", f.Type, ErrUnexpectedFrame)}
				s.log.Warn("closing connection", zap.Error(fe))
				sess.conn.CloseWithError(connProtocol, fe.Error())
				return
			}
			now := time.Now().UnixNano()
			lastPong.Store(now)
			s.c.pongs.Add(1)
			if int64(seq) == sentSeq.Load() {
				s.c.rtt.Store(now - sentAt.Load())
			}
		}
	})
	t := time.NewTicker(hb)
	defer t.Stop()
	for seq := int64(1); ; seq++ {
		select {
		case <-ctx.Done():
			sess.conn.CloseWithError(connShutdown, "session ended")
			return
		case <-t.C:
		case <-sess.probe:
		}
		if since := time.Since(time.Unix(0, lastPong.Load())); since > heartbeatMisses*hb {
			s.log.Warn("heartbeat timeout", zap.Duration("since_pong", since))
			sess.conn.CloseWithError(connHeartbeat, "heartbeat timeout")
			return
		}
		sentAt.Store(time.Now().UnixNano())
		sentSeq.Store(seq)
		if _, err := writeFrame(sess.ctl, FramePing, AppendPing(nil, uint64(seq)), time.Now().Add(hb)); err != nil {
			sess.conn.CloseWithError(connHeartbeat, "heartbeat write failed")
			return
		}
	}
}

// current waits for a session until ctx ends.
func (s *Sender) current(ctx context.Context) (*session, error) {
	for {
		s.mu.Lock()
		sess, wake, last := s.sess, s.wake, s.lastErr
		s.mu.Unlock()
		if sess != nil {
			return sess, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("not connected to %s: %w (last error: %w)", s.cfg.Peer, ctx.Err(), last)
			}
			return nil, fmt.Errorf("not connected to %s: %w", s.cfg.Peer, ctx.Err())
		}
	}
}

// Send ships one batch on a new stream and waits for its Ack. It waits for
// a connection while ctx allows. An Ack with error text returns the Ack and
// an error wrapping ErrBatchRefused.
func (s *Sender) Send(ctx context.Context, b *diff.Batch) (Ack, error) {
	payload, err := diff.EncodeBatch(b)
	if err != nil {
		return Ack{}, fmt.Errorf("send batch for mailbox %s: %w", b.Mailbox, err)
	}
	sess, err := s.current(ctx)
	if err != nil {
		return Ack{}, fmt.Errorf("send batch for mailbox %s: %w", b.Mailbox, err)
	}
	if max := min(s.cfg.MaxFrame, sess.peerMax); len(payload) > max {
		return Ack{}, fmt.Errorf("send batch for mailbox %s: %d-byte payload, max %d: %w", b.Mailbox, len(payload), max, ErrFrameTooLarge)
	}
	ack, err := s.sendPayload(ctx, sess, payload, len(b.Records))
	if err != nil {
		if !errors.Is(err, ErrBatchRefused) {
			s.c.batchesFailed.Add(1)
		}
		return ack, fmt.Errorf("send batch for mailbox %s: %w", b.Mailbox, err)
	}
	return ack, nil
}

// sendPayload writes one Batch frame and reads its Ack.
func (s *Sender) sendPayload(ctx context.Context, sess *session, payload []byte, records int) (Ack, error) {
	str, err := sess.conn.OpenStreamSync(ctx)
	if err != nil {
		return Ack{}, fmt.Errorf("open stream to %s: %w", s.cfg.Peer, err)
	}
	stop := context.AfterFunc(ctx, func() {
		str.CancelWrite(codeCanceled)
		str.CancelRead(codeCanceled)
	})
	defer stop()
	sid := int64(str.StreamID())
	streamErr := func(op string, err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("%s on stream %d: %w", op, sid, ctx.Err())
		}
		if text, ok := resetText(err); ok {
			return fmt.Errorf("peer %s reset stream %d: %s: %w", s.cfg.Peer, sid, text, ErrStreamReset)
		}
		return &FrameError{Peer: s.cfg.Peer, Stream: sid, Err: fmt.Errorf("%s: %w", op, err)}
	}
	n, err := writeFrame(str, FrameBatch, payload, time.Time{})
	if err != nil {
		str.CancelRead(codeCanceled)
		return Ack{}, streamErr("write batch", err)
	}
	str.Close()
	probe := time.AfterFunc(ackProbeDelay, sess.probeNow)
	defer probe.Stop()
	s.c.batchesSent.Add(1)
	s.c.recordsSent.Add(uint64(records))
	s.c.payloadBytes.Add(uint64(len(payload)))
	s.c.frameBytes.Add(uint64(n))
	f, err := readFrameBy(str, s.cfg.MaxFrame, time.Time{})
	if err != nil {
		str.CancelRead(streamCode(err))
		return Ack{}, streamErr("read ack", err)
	}
	if f.Type != FrameAck {
		str.CancelRead(codeBadFrame)
		return Ack{}, streamErr("read ack", fmt.Errorf("%v frame: %w", f.Type, ErrUnexpectedFrame))
	}
	ack, err := DecodeAck(f.Payload)
	if err != nil {
		str.CancelRead(codeBadFrame)
		return Ack{}, streamErr("read ack", err)
	}
	if err := expectEOF(str); err != nil {
		str.CancelRead(codeBadFrame)
	}
	if ack.Error != "" {
		s.c.batchesRefused.Add(1)
		return *ack, fmt.Errorf("%s: %w", ack.Error, ErrBatchRefused)
	}
	s.c.batchesAcked.Add(1)
	s.c.recordsApplied.Add(ack.Applied)
	s.c.recordsStale.Add(ack.Stale)
	s.c.recordsMissing.Add(ack.Missing)
	s.c.recordsGUI.Add(ack.GUIDMismatch)
	if ack.Diverged {
		s.c.diverged.Add(1)
	}
	return *ack, nil
}
