package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"
)

// ServingLifetime of the controller's own gRPC serving certificate; it is
// renewed after two thirds of it.
const ServingLifetime = 24 * time.Hour

// Serving keeps the controller's serving certificate for names (DNS names
// or IP addresses), issued from the root and renewed before expiry.
type Serving struct {
	ca    *CA
	names []string
	now   func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate // guarded by mu
	renewAt time.Time        // guarded by mu
	by      *signer          // guarded by mu: the root cert was issued from
}

// NewServing issues the first serving certificate.
func (c *CA) NewServing(names []string) (*Serving, error) {
	s := &Serving{ca: c, names: names, now: time.Now}
	if _, err := s.GetCertificate(nil); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is for tls.Config.GetCertificate: it returns the current
// certificate, issuing a new one when the old one is due for renewal or
// another root signs now (a root rotation). When
// renewal fails the old certificate is used until it expires.
func (s *Serving) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	by := s.ca.roots.Load()
	if s.cert != nil && now.Before(s.renewAt) && s.by == by {
		return s.cert, nil
	}
	c, err := s.issue(now, by)
	if err != nil {
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
			s.ca.log.Warn("renew serving certificate failed, keeping the old one", "err", err)
			return s.cert, nil
		}
		return nil, err
	}
	s.cert, s.by = c, by
	s.renewAt = c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) * 2 / 3)
	return c, nil
}

// issue makes a serving certificate from root r.
func (s *Serving) issue(now time.Time, r *signer) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serving serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "agentmesh-controller"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(ServingLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(r.root.NotAfter) {
		tmpl.NotAfter = r.root.NotAfter
	}
	for _, n := range s.names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.root, &key.PublicKey, r.key)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse serving certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
