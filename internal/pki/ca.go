package pki

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// LocalCA is the standalone-mode certificate authority: a root certificate
// and key read from files. It implements Signer.
type LocalCA struct {
	cert        *x509.Certificate
	key         crypto.Signer
	trustDomain string // from the root's spiffe://td URI SAN; "" accepts any
	now         func() time.Time
}

// GenerateCA makes a self-signed ECDSA P-256 root for trustDomain valid for
// lifetime, PEM encoded (certificate, PKCS#8 key).
func GenerateCA(trustDomain string, lifetime time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{trustDomain}, CommonName: "agentmesh root ca"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create ca certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal ca key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// LoadLocalCA reads a CA certificate and key from PEM files.
func LoadLocalCA(certPEMPath, keyPEMPath string) (*LocalCA, error) {
	certPEM, err := os.ReadFile(certPEMPath)
	if err != nil {
		return nil, fmt.Errorf("read ca certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPEMPath)
	if err != nil {
		return nil, fmt.Errorf("read ca key: %w", err)
	}
	return NewLocalCA(certPEM, keyPEM)
}

// NewLocalCA builds a CA from a PEM certificate and its PEM private key.
func NewLocalCA(certPEM, keyPEM []byte) (*LocalCA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca key pair: %w", err)
	}
	cert := pair.Leaf
	if cert == nil {
		if cert, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse ca certificate: %w", err)
		}
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("load ca: certificate is not a ca")
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("load ca: key cannot sign")
	}
	ca := &LocalCA{cert: cert, key: key, now: time.Now}
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			ca.trustDomain = u.Host
		}
	}
	return ca, nil
}

// Certificate returns the CA's root certificate.
func (ca *LocalCA) Certificate() *x509.Certificate { return ca.cert }

// Bundle returns a pool holding the CA's root, for peer verification.
func (ca *LocalCA) Bundle() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Sign implements Signer. The lifetime is capped by the CA's own expiry.
func (ca *LocalCA) Sign(ctx context.Context, csrDER []byte, id spiffe.ID, lifetime time.Duration) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ca.trustDomain != "" && id.TrustDomain != ca.trustDomain {
		return nil, fmt.Errorf("sign %s: trust domain %q, ca serves %q", id, id.TrustDomain, ca.trustDomain)
	}
	pub, err := CheckCSR(csrDER, id)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", id, err)
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("sign %s: lifetime %s must be positive", id, lifetime)
	}
	now := ca.now()
	// Backdate a little for clock skew, but keep most of the lifetime ahead.
	notBefore := now.Add(-min(time.Minute, lifetime/10))
	leaf, err := IssueCertificate(ca.cert, ca.key, id, pub, notBefore, now.Add(lifetime))
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", id, err)
	}
	return []*x509.Certificate{leaf}, nil
}

// IssueCertificate signs a workload certificate for id and pub with the
// given validity (notAfter capped at the CA's). It does no CSR checks; tests
// use it directly to make expired or foreign certificates.
func IssueCertificate(caCert *x509.Certificate, caKey crypto.Signer, id spiffe.ID, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	return cert, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("make serial: %w", err)
	}
	return s, nil
}
