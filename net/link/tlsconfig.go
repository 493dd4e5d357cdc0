package link

import (
	"crypto/tls"
	"fmt"

	"go.uber.org/zap"
)

// PinnedServerTLS is the replica-side TLS configuration of the link, for
// another application protocol on the same identity (such as linktest): it
// demands a client certificate whose fingerprint is in pins and negotiates
// alpn. refused, if not nil, is called for every refused certificate.
func PinnedServerTLS(cert tls.Certificate, pinned []string, alpn string, log *zap.Logger, refused func()) (*tls.Config, error) {
	p, err := parsePins(pinned)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	if refused == nil {
		refused = func() {}
	}
	c := serverTLS(cert, p, log, refused)
	inner := c.GetConfigForClient
	c.NextProtos = []string{alpn}
	c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		cc, err := inner(hi)
		if err != nil {
			return nil, err
		}
		cc.NextProtos = []string{alpn}
		return cc, nil
	}
	return c, nil
}

// PinnedClientTLS is the primary-side TLS configuration of the link for
// another application protocol: it presents cert, accepts only a server
// certificate in pins and negotiates alpn. peer names the server in logs.
func PinnedClientTLS(cert tls.Certificate, pinned []string, alpn, peer string, log *zap.Logger) (*tls.Config, error) {
	p, err := parsePins(pinned)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	c := clientTLS(cert, p, peer, log)
	c.NextProtos = []string{alpn}
	return c, nil
}

// LoadCertificate returns c if set, else the key and certificate in keyDir.
func LoadCertificate(keyDir string, c *tls.Certificate) (tls.Certificate, error) {
	cert, err := loadCert(keyDir, c)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate: %w", err)
	}
	return cert, nil
}
