package linktest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/indexwire/indexwire/net/link"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// Server answers linktest runs from pinned peers.
type Server struct {
	log *zap.Logger
	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener

	refused   atomic.Uint64
	closeOnce sync.Once
}

// Listen validates cfg, loads the key and binds the UDP address.
func Listen(cfg ServerConfig) (*Server, error) {
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("linktest server: listen %q: want an IP literal and port: %w", cfg.Listen, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cert, err := link.LoadCertificate(cfg.KeyDir, cfg.Certificate)
	if err != nil {
		return nil, fmt.Errorf("linktest server: %w", err)
	}
	s := &Server{log: cfg.Logger.Named("linktest")}
	tlsConf, err := link.PinnedServerTLS(cert, cfg.PeerFingerprints, ALPN, s.log, func() { s.refused.Add(1) })
	if err != nil {
		return nil, fmt.Errorf("linktest server: %w", err)
	}
	s.udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())))
	if err != nil {
		return nil, fmt.Errorf("linktest server: listen %s: %w", cfg.Listen, err)
	}
	s.tr = &quic.Transport{Conn: s.udp}
	if s.ln, err = s.tr.Listen(tlsConf, quicConfig()); err != nil {
		s.tr.Close()
		s.udp.Close()
		return nil, fmt.Errorf("linktest server: listen %s: %w", cfg.Listen, err)
	}
	s.log.Info("listening", zap.Stringer("addr", s.udp.LocalAddr()), zap.String("fingerprint", link.CertFingerprint(&cert)))
	return s, nil
}

// Addr is the bound UDP address.
func (s *Server) Addr() net.Addr { return s.udp.LocalAddr() }

// Refused is how many handshakes were refused for an unpinned certificate.
func (s *Server) Refused() uint64 { return s.refused.Load() }

// Close releases the socket; a running Serve returns.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.ln.Close()
		err = s.tr.Close()
		s.udp.Close()
	})
	return err
}

// Serve answers runs until ctx ends or Close is called, then closes every
// connection, waits for its goroutines and releases the socket.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	var err error
	for {
		conn, aerr := s.ln.Accept(ctx)
		if aerr != nil {
			if ctx.Err() == nil && !errors.Is(aerr, quic.ErrServerClosed) {
				err = fmt.Errorf("linktest server: accept: %w", aerr)
			}
			break
		}
		wg.Go(func() { s.handleConn(ctx, conn) })
	}
	cancel()
	wg.Wait()
	return err
}

func (s *Server) handleConn(ctx context.Context, conn *quic.Conn) {
	log := s.log.With(zap.Stringer("peer", conn.RemoteAddr()))
	log.Info("run started")
	start := time.Now()
	stop := context.AfterFunc(ctx, func() { conn.CloseWithError(0, "server shutting down") })
	defer stop()
	var wg sync.WaitGroup
	var bytes atomic.Uint64
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			break
		}
		wg.Go(func() { s.handleStream(conn, str, &bytes, log) })
	}
	wg.Wait()
	st := conn.ConnectionStats()
	log.Info("run finished", zap.Duration("elapsed", time.Since(start)), zap.Uint64("bytes", bytes.Load()),
		zap.Uint64("packets_received", st.PacketsReceived), zap.Uint64("packets_lost", st.PacketsLost),
		zap.Duration("min_rtt", st.MinRTT))
}

func (s *Server) handleStream(conn *quic.Conn, str *quic.Stream, total *atomic.Uint64, log *zap.Logger) {
	defer str.CancelRead(0)
	var kind [1]byte
	str.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(str, kind[:]); err != nil {
		str.CancelWrite(1)
		return
	}
	str.SetReadDeadline(time.Time{})
	var err error
	switch kind[0] {
	case kindPing:
		err = echo(str)
	case kindData:
		err = sink(str, total)
	case kindStats:
		err = sendStats(str, conn.ConnectionStats())
	default:
		err = fmt.Errorf("unknown stream kind %#x", kind[0])
	}
	if err != nil && conn.Context().Err() == nil {
		log.Info("stream ended", zap.Int64("stream", int64(str.StreamID())), zap.Error(err))
		str.CancelWrite(1)
		return
	}
	str.Close()
}

// echo sends every 8-byte ping back until the peer ends the stream.
func echo(str *quic.Stream) error {
	var b [8]byte
	for {
		if _, err := io.ReadFull(str, b[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read ping: %w", err)
		}
		if _, err := str.Write(b[:]); err != nil {
			return fmt.Errorf("write pong: %w", err)
		}
	}
}

// sink counts bytes until FIN or a reset, then answers with the count.
func sink(str *quic.Stream, total *atomic.Uint64) error {
	buf := make([]byte, 64<<10)
	var n uint64
	for {
		m, err := str.Read(buf)
		n += uint64(m)
		total.Add(uint64(m))
		if err == nil {
			continue
		}
		var se *quic.StreamError
		if !errors.Is(err, io.EOF) && !(errors.As(err, &se) && se.Remote) {
			return fmt.Errorf("read data: %w", err)
		}
		break
	}
	_, err := str.Write(binary.BigEndian.AppendUint64(nil, n))
	return err
}

// wireStats is quic-go's view of a connection as sent on a stats stream.
type wireStats struct {
	MinRTT          time.Duration `json:"min_rtt_ns"`
	SmoothedRTT     time.Duration `json:"smoothed_rtt_ns"`
	MeanDeviation   time.Duration `json:"rtt_mean_deviation_ns"`
	PacketsSent     uint64        `json:"packets_sent"`
	PacketsReceived uint64        `json:"packets_received"`
	PacketsLost     uint64        `json:"packets_lost"`
	BytesSent       uint64        `json:"bytes_sent"`
	BytesReceived   uint64        `json:"bytes_received"`
	BytesLost       uint64        `json:"bytes_lost"`
}

func pathStats(st quic.ConnectionStats) PathStats {
	return PathStats{MinRTT: st.MinRTT, SmoothedRTT: st.SmoothedRTT, MeanDeviation: st.MeanDeviation,
		PacketsSent: st.PacketsSent, PacketsReceived: st.PacketsReceived, PacketsLost: st.PacketsLost,
		BytesSent: st.BytesSent, BytesReceived: st.BytesReceived, BytesLost: st.BytesLost}
}

func sendStats(str *quic.Stream, st quic.ConnectionStats) error {
	p := pathStats(st)
	b, err := json.Marshal(wireStats(p))
	if err != nil {
		return err
	}
	_, err = str.Write(b)
	return err
}
