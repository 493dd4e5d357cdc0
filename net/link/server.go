package link

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/indexwire/indexwire/diff"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// Server is the replica's end of the link: it accepts pinned primaries and
// hands each batch, on its own stream and goroutine, to the Applier.
type Server struct {
	cfg ServerConfig
	log *zap.Logger
	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener
	c   serverCounters

	closeOnce sync.Once
	closeErr  error
}

// Listen validates cfg, loads the key and binds the UDP address; Serve then
// accepts connections.
func Listen(cfg ServerConfig) (*Server, error) {
	if cfg.Applier == nil {
		return nil, fmt.Errorf("server: no applier: %w", ErrConfig)
	}
	ap, err := validateAddr("listen", cfg.Listen, true)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if err := checkMaxFrame(&cfg.MaxFrame); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	for f, d := range map[string]time.Duration{"heartbeat interval": cfg.HeartbeatInterval, "stream timeout": cfg.StreamTimeout} {
		if err := checkPositive(f, d); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	if cfg.MaxStreams < 0 {
		return nil, fmt.Errorf("server: max streams %d is negative: %w", cfg.MaxStreams, ErrConfig)
	}
	orDefault(&cfg.HeartbeatInterval, DefaultHeartbeatInterval)
	orDefault(&cfg.StreamTimeout, DefaultStreamTimeout)
	orDefault(&cfg.MaxStreams, DefaultMaxStreams)
	orDefault(&cfg.Logger, zap.NewNop())
	p, err := parsePins(cfg.PeerFingerprints)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	cert, err := loadCert(cfg.KeyDir, cfg.Certificate)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger.Named("link")}
	s.udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, fmt.Errorf("server: listen %s: %w", cfg.Listen, err)
	}
	// A replica restarted after a crash knows nothing of the primary's old
	// connection; with a reset key derived from its own private key it
	// answers that connection's packets with a stateless reset the primary
	// can verify, so the primary reconnects at once instead of waiting for
	// the heartbeat timeout.
	resetKey, err := statelessResetKey(cert)
	if err != nil {
		s.udp.Close()
		return nil, fmt.Errorf("server: %w", err)
	}
	s.tr = &quic.Transport{Conn: s.udp, StatelessResetKey: resetKey}
	tlsConf := serverTLS(cert, p, s.log, func() { s.c.refusedPeers.Add(1) })
	s.ln, err = s.tr.Listen(tlsConf, quicConfig(cfg.HeartbeatInterval, cfg.MaxStreams))
	if err != nil {
		s.tr.Close()
		s.udp.Close()
		return nil, fmt.Errorf("server: listen %s: %w", cfg.Listen, err)
	}
	s.log.Info("listening", zap.Stringer("addr", s.udp.LocalAddr()), zap.String("fingerprint", CertFingerprint(&cert)))
	return s, nil
}

// Addr is the bound UDP address.
func (s *Server) Addr() net.Addr { return s.udp.LocalAddr() }

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() ServerStats { return s.c.snapshot() }

// Close stops accepting and releases the socket; a running Serve returns
// after its connections are closed. Close without Serve is fine.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.ln.Close()
		s.closeErr = s.tr.Close()
		if err := s.udp.Close(); err != nil && !errors.Is(err, net.ErrClosed) && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// Serve accepts connections until ctx ends or Close is called, then closes
// every connection, waits for its stream goroutines and releases the socket.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	var err error
	for {
		conn, aerr := s.ln.Accept(ctx)
		if aerr != nil {
			if ctx.Err() == nil && !errors.Is(aerr, quic.ErrServerClosed) {
				err = fmt.Errorf("server: accept: %w", aerr)
			}
			break
		}
		wg.Go(func() { s.handleConn(ctx, conn) })
	}
	cancel()
	wg.Wait()
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// handleConn accepts the streams of one connection, each in its own goroutine.
func (s *Server) handleConn(ctx context.Context, conn *quic.Conn) {
	peer := conn.RemoteAddr().String()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.CloseWithError(connShutdown, "replica shutting down") })
	defer stop()
	s.c.connections.Add(1)
	log := s.log.With(zap.String("peer", peer))
	if pc := conn.ConnectionState().TLS.PeerCertificates; len(pc) > 0 {
		log = log.With(zap.String("fingerprint", Fingerprint(pc[0].Raw)))
	}
	log.Info("peer connected")
	var wg sync.WaitGroup
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Info("peer disconnected", zap.Error(err))
			}
			break
		}
		wg.Go(func() { s.handleStream(ctx, conn, str, log) })
	}
	cancel()
	wg.Wait()
}

func (s *Server) handleStream(ctx context.Context, conn *quic.Conn, str *quic.Stream, log *zap.Logger) {
	f, err := readFrameBy(str, s.cfg.MaxFrame, time.Now().Add(s.cfg.StreamTimeout))
	if err != nil {
		s.resetStream(str, conn, err, log)
		return
	}
	switch f.Type {
	case FrameBatch:
		s.handleBatch(ctx, conn, str, f, log)
	case FrameHello:
		if err := s.handleControl(ctx, str, f, log); err != nil && ctx.Err() == nil {
			fe := &FrameError{Peer: conn.RemoteAddr().String(), Stream: int64(str.StreamID()), Err: err}
			log.Warn("control stream failed; closing connection", zap.Error(fe))
			conn.CloseWithError(connProtocol, fe.Error())
		}
	default:
		s.resetStream(str, conn, fmt.Errorf("%v frame opening a stream: %w", f.Type, ErrUnexpectedFrame), log)
	}
}

// resetStream resets one stream for a framing error; the connection stays.
func (s *Server) resetStream(str *quic.Stream, conn *quic.Conn, err error, log *zap.Logger) {
	_, remote := resetText(err)
	// A stream opened and closed without a frame, or reset by the peer
	// itself, is not a framing error of the peer's.
	if !errors.Is(err, io.EOF) && !remote {
		s.c.streamResets.Add(1)
		fe := &FrameError{Peer: conn.RemoteAddr().String(), Stream: int64(str.StreamID()), Err: err}
		log.Warn("stream reset", zap.Int64("stream", fe.Stream), zap.Error(fe))
	}
	code := streamCode(err)
	str.CancelRead(code)
	str.CancelWrite(code)
}

func (s *Server) handleBatch(ctx context.Context, conn *quic.Conn, str *quic.Stream, f Frame, log *zap.Logger) {
	if err := expectEOF(str); err != nil {
		s.resetStream(str, conn, err, log)
		return
	}
	s.c.batchesReceived.Add(1)
	s.c.payloadBytes.Add(uint64(len(f.Payload)))
	s.c.frameBytes.Add(uint64(FrameSize(len(f.Payload))))
	log = log.With(zap.Int64("stream", int64(str.StreamID())))
	var ack Ack
	b, err := diff.DecodeBatch(f.Payload)
	if err != nil {
		s.c.batchesRejected.Add(1)
		ack.Error = fmt.Sprintf("decode batch: %v", err)
		log.Warn("refused batch", zap.Error(err))
	} else {
		a, err := s.cfg.Applier.Apply(ctx, b)
		ack = a
		if err != nil {
			s.c.batchesFailed.Add(1)
			ack.Error = err.Error()
			log.Warn("apply failed", zap.String("mailbox", b.Mailbox), zap.Error(err))
		} else {
			s.c.batchesApplied.Add(1)
		}
	}
	if _, err := writeFrame(str, FrameAck, AppendAck(nil, &ack), time.Now().Add(s.cfg.StreamTimeout)); err != nil {
		if ctx.Err() == nil {
			log.Info("ack not delivered", zap.Error(err))
		}
		str.CancelWrite(codeCanceled)
		return
	}
	str.Close()
}

// handleControl answers the primary's Hello with the replica's states, then
// answers Pings until the stream or connection ends.
func (s *Server) handleControl(ctx context.Context, str *quic.Stream, f Frame, log *zap.Logger) error {
	defer str.CancelRead(codeShutdown)
	h, err := DecodeHello(f.Payload)
	if err != nil {
		return err
	}
	if len(h.States) > 0 || h.More {
		return fmt.Errorf("primary's hello carries states: %w", ErrUnexpectedFrame)
	}
	states, err := s.cfg.Applier.States(ctx)
	if err != nil {
		return fmt.Errorf("replica states: %w", err)
	}
	for _, p := range helloPayloads(states, s.cfg.MaxFrame, h.MaxFrame) {
		if _, err := writeFrame(str, FrameHello, p, time.Now().Add(s.cfg.StreamTimeout)); err != nil {
			return fmt.Errorf("write hello: %w", err)
		}
	}
	log.Info("hello sent", zap.Int("mailboxes", len(states)))
	for {
		f, err := readFrameBy(str, s.cfg.MaxFrame, time.Time{})
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		if f.Type != FramePing {
			return fmt.Errorf("%v frame on control stream: %w", f.Type, ErrUnexpectedFrame)
		}
		seq, err := DecodePing(f.Payload)
		if err != nil {
			return err
		}
		if _, err := writeFrame(str, FramePong, AppendPing(nil, seq), time.Now().Add(s.cfg.StreamTimeout)); err != nil {
			return fmt.Errorf("write pong: %w", err)
		}
	}
}

// helloOverhead bounds a Hello payload without its states.
const helloOverhead = 2 + 5 + 5

// helloPayloads splits states over Hello payloads of at most peerMax bytes.
func helloPayloads(states []diff.MailboxState, ourMax, peerMax int) [][]byte {
	var out [][]byte
	budget := peerMax - helloOverhead
	start, size := 0, 0
	for i := range states {
		n := stateSize(&states[i])
		if size+n > budget && i > start {
			out = append(out, AppendHello(nil, &Hello{MaxFrame: ourMax, More: true, States: states[start:i]}))
			start, size = i, 0
		}
		size += n
	}
	return append(out, AppendHello(nil, &Hello{MaxFrame: ourMax, States: states[start:]}))
}

// statelessResetKey derives the QUIC stateless reset key from the private
// key, so it is the same across restarts and secret like the key itself.
func statelessResetKey(cert tls.Certificate) (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("stateless reset key: %w", err)
	}
	k := quic.StatelessResetKey(sha256.Sum256(append([]byte("indexwire stateless reset key\x00"), der...)))
	return &k, nil
}
