package link

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside a key directory.
const (
	KeyFile  = "key.pem"  // Ed25519 private key, PKCS#8, mode 0600
	CertFile = "cert.pem" // self-signed certificate for the key
)

// GenerateKey writes a new Ed25519 key and a self-signed certificate for it
// into dir (created 0700 if missing) and returns the certificate fingerprint.
// It refuses to overwrite an existing key.
func GenerateKey(dir string) (fingerprint string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	keyPath, certPath := filepath.Join(dir, KeyFile), filepath.Join(dir, CertFile)
	for _, p := range []string{keyPath, certPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", fmt.Errorf("generate key: %s: %w", p, os.ErrExist)
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", fmt.Errorf("generate key: serial: %w", err)
	}
	// Validity does not matter to pinning, which ignores it; make it long so
	// a link never stops because a date passed.
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "indexwire"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"indexwire"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return "", fmt.Errorf("generate key: certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
		return "", err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyPath)
		return "", err
	}
	return Fingerprint(der), nil
}

// writeNew creates path exclusively with mode perm and syncs it.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("generate key: write %s: %w", path, err)
	}
	return nil
}

// LoadKey loads the key and certificate GenerateKey wrote into dir. The
// returned certificate has Leaf set. A key file readable by others is refused.
func LoadKey(dir string) (tls.Certificate, error) {
	keyPath, certPath := filepath.Join(dir, KeyFile), filepath.Join(dir, CertFile)
	st, err := os.Stat(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, fmt.Errorf("load key: %s has mode %v, want 0600", keyPath, st.Mode().Perm())
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key from %s: %w", dir, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("load key: parse %s: %w", certPath, err)
		}
	}
	return cert, nil
}

// Fingerprint is the SHA-256 of a certificate's DER bytes as lowercase hex:
// the form peers pin.
func Fingerprint(certDER []byte) string {
	sum := sha256.Sum256(certDER)
	return hex.EncodeToString(sum[:])
}

// CertFingerprint is the fingerprint of the leaf of a tls.Certificate.
func CertFingerprint(c *tls.Certificate) string {
	if len(c.Certificate) == 0 {
		return ""
	}
	return Fingerprint(c.Certificate[0])
}

// ParseFingerprint normalises a pinned fingerprint: 64 hex digits, in any
// case, optionally separated by colons.
func ParseFingerprint(s string) (string, error) {
	f := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if len(f) != 2*sha256.Size {
		return "", fmt.Errorf("fingerprint %q: want %d hex digits, got %d", s, 2*sha256.Size, len(f))
	}
	if _, err := hex.DecodeString(f); err != nil {
		return "", fmt.Errorf("fingerprint %q: %v", s, err)
	}
	return f, nil
}
