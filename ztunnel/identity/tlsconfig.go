package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// ALPN is the only application protocol HBONE speaks.
const ALPN = "h2"

// ServerTLSConfig returns a TLS 1.3 server config presenting local's current
// certificate. It requires a client certificate, verifies it against the
// current bundle and passes the client's SPIFFE id to authorize (nil allows
// every verified peer).
func (m *Manager) ServerTLSConfig(local spiffe.ID, authorize func(peer spiffe.ID, cs tls.ConnectionState) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		ClientAuth: tls.RequireAnyClientCert, // verified below, by SPIFFE rules
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return m.Certificate(local)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			peer, err := m.VerifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			if err != nil {
				return err
			}
			if authorize == nil {
				return nil
			}
			if err := authorize(peer, cs); err != nil {
				return fmt.Errorf("peer %s not authorized: %w", peer, err)
			}
			return nil
		},
	}
}

// ClientTLSConfig returns a TLS 1.3 client config presenting local's current
// certificate and accepting only a server that proves expectedPeer.
func (m *Manager) ClientTLSConfig(local, expectedPeer spiffe.ID) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		// The standard name checks do not apply to SPIFFE ids; the chain and
		// the id are verified in VerifyConnection instead.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return m.Certificate(local)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			peer, err := m.VerifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if peer != expectedPeer {
				return fmt.Errorf("peer id %s, want %s", peer, expectedPeer)
			}
			return nil
		},
	}
}

// VerifyPeer verifies a peer's chain (leaf first) against the current bundle
// at the current time for usage and returns the leaf's SPIFFE id.
func (m *Manager) VerifyPeer(certs []*x509.Certificate, usage x509.ExtKeyUsage) (spiffe.ID, error) {
	if len(certs) == 0 {
		return spiffe.ID{}, errors.New("peer sent no certificate")
	}
	leaf, now := certs[0], m.now()
	if now.After(leaf.NotAfter) {
		return spiffe.ID{}, fmt.Errorf("peer certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return spiffe.ID{}, fmt.Errorf("peer certificate not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	roots := m.bundle.Load()
	if roots == nil {
		return spiffe.ID{}, errors.New("verify peer certificate: no trust bundle")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}
	if _, err := leaf.Verify(opts); err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return spiffe.ID{}, fmt.Errorf("peer certificate signed by unknown authority (issuer %q)", leaf.Issuer.String())
		}
		return spiffe.ID{}, fmt.Errorf("verify peer certificate: %w", err)
	}
	id, err := spiffe.FromCertificate(leaf)
	if err != nil {
		return spiffe.ID{}, fmt.Errorf("peer certificate: %w", err)
	}
	return id, nil
}

// PeerID returns the SPIFFE id of a connection's verified peer certificate.
func PeerID(cs tls.ConnectionState) (spiffe.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffe.ID{}, errors.New("peer sent no certificate")
	}
	return spiffe.FromCertificate(cs.PeerCertificates[0])
}
