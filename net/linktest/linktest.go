// Package linktest measures the QUIC link between two indexwire hosts
// before replication runs over it: handshake time, round trip at rest and
// under load, goodput per stream and in total, and the loss quic-go saw.
//
// It uses the replication link's identity and pinning (net/link) with its
// own ALPN, so a test can only reach a linktest server, never a replica.
// Data flows from the runner to the server, as batches flow from primary to
// replica: run it on the primary against a server on the standby.
//
// Wire protocol, one connection per test: every stream the runner opens
// starts with one kind byte. 'P': 8-byte sequence numbers, each echoed.
// 'D': bulk data until FIN or reset; the server answers with the byte count
// it read (8 bytes). 'S': the server answers with its connection statistics
// as JSON.
package linktest

import (
	"crypto/tls"
	"time"

	"github.com/indexwire/indexwire/net/link"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// ALPN is the application protocol of linktest, in the link's family.
const ALPN = "indexwire-linktest/1"

// Defaults for the zero values of Config.
const (
	DefaultDuration     = 10 * time.Second
	DefaultStreams      = 4
	DefaultPingInterval = 20 * time.Millisecond
	DefaultIdlePings    = 10
	DefaultDialTimeout  = 10 * time.Second
)

// Stream kinds, the first byte of every stream.
const (
	kindPing  = 'P'
	kindData  = 'D'
	kindStats = 'S'
)

// maxStatsReply bounds the server's statistics answer.
const maxStatsReply = 4096

// Config configures a run against a linktest server.
type Config struct {
	Peer             string           // server address, IP literal and port
	LocalAddr        string           // UDP address to send from; default: any, or 127.0.0.1 for a loopback peer
	KeyDir           string           // directory with key.pem and cert.pem; ignored if Certificate is set
	Certificate      *tls.Certificate // our certificate and key
	PeerFingerprints []string         // pinned SHA-256 fingerprints of the server's certificate
	Duration         time.Duration    // length of the load phase; default DefaultDuration
	Streams          int              // parallel data streams; default DefaultStreams
	// Size, if not zero, is the number of bytes each stream sends; the load
	// phase then ends when every stream is done or Duration passes.
	Size         int64
	PingInterval time.Duration // between pings; default DefaultPingInterval
	IdlePings    int           // pings before the load starts; default DefaultIdlePings
	DialTimeout  time.Duration // default DefaultDialTimeout
	// Progress, if set, is called about once a second during the load phase.
	Progress func(Progress)
	Logger   *zap.Logger // default: no logging
}

// ServerConfig configures a linktest server.
type ServerConfig struct {
	Listen           string           // UDP address, IP literal and port (port 0 picks one)
	KeyDir           string           // directory with key.pem and cert.pem; ignored if Certificate is set
	Certificate      *tls.Certificate // our certificate and key
	PeerFingerprints []string         // pinned fingerprints of the runners' certificates
	Logger           *zap.Logger      // default: no logging
}

// Progress is a snapshot during the load phase.
type Progress struct {
	Elapsed time.Duration // since the load started
	Bytes   uint64        // bytes written by all streams so far (not yet confirmed)
	RTT     time.Duration // quic-go's smoothed round trip
	Lost    uint64        // packets quic-go declared lost so far
}

// quicConfig keeps the link's liveness settings: keep-alives every
// heartbeat interval, dead after three silent ones.
func quicConfig() *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:       link.DefaultHeartbeatInterval,
		MaxIdleTimeout:        3 * link.DefaultHeartbeatInterval,
		MaxIncomingStreams:    1000,
		MaxIncomingUniStreams: -1,
	}
}
