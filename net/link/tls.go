package link

import (
	"crypto/tls"
	"fmt"

	"go.uber.org/zap"
)

// pins is a set of normalised certificate fingerprints.
type pins map[string]bool

func parsePins(list []string) (pins, error) {
	if len(list) == 0 {
		return nil, fmt.Errorf("no peer fingerprints pinned: %w", ErrConfig)
	}
	p := pins{}
	for _, s := range list {
		f, err := ParseFingerprint(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		p[f] = true
	}
	return p, nil
}

// verify checks the peer's leaf certificate against the pins. Chains and
// validity dates are ignored on purpose: the pin is the whole identity.
func (p pins) verify(cs tls.ConnectionState) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", fmt.Errorf("peer presented no certificate: %w", ErrNotPinned)
	}
	fp := Fingerprint(cs.PeerCertificates[0].Raw)
	if !p[fp] {
		return fp, fmt.Errorf("fingerprint %s: %w", fp, ErrNotPinned)
	}
	return fp, nil
}

// serverTLS is the replica's TLS config: it demands a client certificate and
// accepts only pinned ones. Session tickets are off so every connection shows
// its certificate.
func serverTLS(cert tls.Certificate, p pins, log *zap.Logger, refused func()) *tls.Config {
	base := &tls.Config{
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.RequireAnyClientCert,
		NextProtos:             []string{ALPN},
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		// GetConfigForClient is where quic-go tells us the remote address,
		// so the refusal can be logged with it.
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			remote := "unknown"
			if hi.Conn != nil {
				remote = hi.Conn.RemoteAddr().String()
			}
			c := base.Clone()
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				fp, err := p.verify(cs)
				if err != nil {
					refused()
					log.Warn("refused peer certificate", zap.String("fingerprint", fp), zap.String("remote", remote), zap.Error(err))
				}
				return err
			}
			return c, nil
		},
	}
}

// clientTLS is the primary's TLS config: it presents its certificate and
// accepts only a pinned server certificate.
func clientTLS(cert tls.Certificate, p pins, peer string, log *zap.Logger) *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{cert},
		NextProtos:         []string{ALPN},
		MinVersion:         tls.VersionTLS13,
		ServerName:         "indexwire",
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			fp, err := p.verify(cs)
			if err != nil {
				log.Warn("refused server certificate", zap.String("fingerprint", fp), zap.String("remote", peer), zap.Error(err))
			}
			return err
		},
	}
}
