package link

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/indexwire/indexwire/diff"
	"go.uber.org/zap"
)

// Defaults for the zero values of SenderConfig and ServerConfig.
const (
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultDialTimeout       = 10 * time.Second
	DefaultMinBackoff        = 50 * time.Millisecond
	DefaultMaxBackoff        = 5 * time.Second
	DefaultStreamTimeout     = 30 * time.Second
	DefaultMaxStreams        = 1000
)

// heartbeatMisses is how many heartbeat intervals without a Pong, or
// without any packet, declare the peer dead.
const heartbeatMisses = 3

// Applier is what the Server hands batches to; the replica's apply layer
// implements it. Apply is called concurrently, one call per batch stream.
type Applier interface {
	// Apply applies one batch and reports the outcome; an error is sent to
	// the primary as the Ack's error text. ctx ends when the connection or
	// the server does; Apply must be safe to cancel (it is idempotent).
	Apply(ctx context.Context, b *diff.Batch) (Ack, error)
	// States reports the replica's position per mailbox, sent in the Hello.
	States(ctx context.Context) ([]diff.MailboxState, error)
}

// SenderConfig configures a Sender (the primary's side).
type SenderConfig struct {
	Peer             string           // replica address, IP literal and port, e.g. 127.0.0.1:7443
	LocalAddr        string           // UDP address to send from; default: the loopback of Peer's family if Peer is loopback, else any
	KeyDir           string           // directory with key.pem and cert.pem; ignored if Certificate is set
	Certificate      *tls.Certificate // our certificate and key
	PeerFingerprints []string         // pinned SHA-256 fingerprints of the replica's certificate
	MaxFrame         int              // largest frame sent or accepted; default DefaultMaxFrame
	// HeartbeatInterval is the Ping period; three missed Pongs drop the
	// connection. Default DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	DialTimeout       time.Duration // default DefaultDialTimeout
	MinBackoff        time.Duration // first reconnect delay; default DefaultMinBackoff
	MaxBackoff        time.Duration // reconnect delay cap; default DefaultMaxBackoff
	Logger            *zap.Logger   // default: no logging
	// CatchUp is called in its own goroutine after every (re)connect with
	// the replica's states; ctx ends when that connection does.
	CatchUp func(ctx context.Context, states []diff.MailboxState)
}

// ServerConfig configures a Server (the replica's side).
type ServerConfig struct {
	Listen           string           // UDP address, IP literal and port (port 0 picks one)
	KeyDir           string           // directory with key.pem and cert.pem; ignored if Certificate is set
	Certificate      *tls.Certificate // our certificate and key
	PeerFingerprints []string         // pinned SHA-256 fingerprints of primaries' certificates
	MaxFrame         int              // largest frame accepted; default DefaultMaxFrame
	// HeartbeatInterval sets the QUIC keep-alive; a peer silent for three
	// intervals is dropped. Default DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	StreamTimeout     time.Duration // how long a peer may take to send a batch frame; default DefaultStreamTimeout
	MaxStreams        int           // concurrent batch streams per connection; default DefaultMaxStreams
	Logger            *zap.Logger   // default: no logging
	Applier           Applier       // required
}

// validateAddr checks an address is an IP literal with a port.
func validateAddr(field, addr string, allowZeroPort bool) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q: %w: %w", field, addr, err, ErrConfig)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q: host must be an IP literal: %w", field, addr, ErrConfig)
	}
	if ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%s %q: zoned addresses are not supported: %w", field, addr, ErrConfig)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (p == 0 && !allowZeroPort) {
		return netip.AddrPort{}, fmt.Errorf("%s %q: bad port: %w", field, addr, ErrConfig)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

func loadCert(keyDir string, c *tls.Certificate) (tls.Certificate, error) {
	if c != nil {
		if len(c.Certificate) == 0 || c.PrivateKey == nil {
			return tls.Certificate{}, fmt.Errorf("certificate without key or leaf: %w", ErrConfig)
		}
		return *c, nil
	}
	if keyDir == "" {
		return tls.Certificate{}, fmt.Errorf("no key dir or certificate: %w", ErrConfig)
	}
	return LoadKey(keyDir)
}

func checkMaxFrame(n *int) error {
	if *n == 0 {
		*n = DefaultMaxFrame
	}
	if *n < MinMaxFrame || *n > MaxMaxFrame {
		return fmt.Errorf("max frame %d outside %d..%d: %w", *n, MinMaxFrame, MaxMaxFrame, ErrConfig)
	}
	return nil
}

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func checkPositive(field string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s %v is negative: %w", field, d, ErrConfig)
	}
	return nil
}
