package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// Ensure fetches a certificate for id now if it has none, retrying with
// backoff until ctx is done, and lets Run renew it from then on.
func (m *Manager) Ensure(ctx context.Context, id spiffe.ID) error {
	e := m.entryFor(id)
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("ensure %s: %w", id, ctx.Err())
	}
	defer func() { <-e.sem }()
	if m.hasCert(e) {
		return nil
	}
	for attempt := 0; ; attempt++ {
		cert, err := m.issue(ctx, id)
		if err == nil {
			return m.store(e, cert)
		}
		m.log.Warn("fetch certificate failed", "id", id.String(), "attempt", attempt+1, "err", err)
		select {
		case <-time.After(backoff(attempt + 1)):
		case <-ctx.Done():
			return fmt.Errorf("ensure %s: %w", id, err)
		}
	}
}

func (m *Manager) entryFor(id spiffe.ID) *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil {
		e = &entry{id: id, sem: make(chan struct{}, 1)}
		m.entries[id] = e
	}
	return e
}

func (m *Manager) hasCert(e *entry) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return e.cert != nil
}

// store installs a freshly fetched certificate and schedules its renewal.
func (m *Manager) store(e *entry, cert *tls.Certificate) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries[e.id] != e {
		return fmt.Errorf("ensure %s: forgotten while fetching", e.id)
	}
	e.cert, e.failures = cert, 0
	e.renewAt = renewTime(cert, rand.Float64())
	m.poke()
	return nil
}

// issue makes a new key and has the Signer certify it for id.
func (m *Manager) issue(ctx context.Context, id spiffe.ID) (*tls.Certificate, error) {
	if m.signer == nil {
		return nil, errors.New("no signer")
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		return nil, err
	}
	chain, err := m.signer.Sign(ctx, csr, id, m.lifetime)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if err := m.checkIssued(chain, key, id); err != nil {
		return nil, err
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// checkIssued makes sure the signer returned a usable certificate for key.
func (m *Manager) checkIssued(chain []*x509.Certificate, key *ecdsa.PrivateKey, id spiffe.ID) error {
	if len(chain) == 0 {
		return errors.New("signer returned no certificate")
	}
	leaf := chain[0]
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("signer returned a certificate for another key")
	}
	got, err := spiffe.FromCertificate(leaf)
	if err != nil {
		return fmt.Errorf("issued certificate: %w", err)
	}
	if got != id {
		return fmt.Errorf("issued certificate is for %s, want %s", got, id)
	}
	if !m.now().Before(leaf.NotAfter) {
		return fmt.Errorf("issued certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// renewTime is half of cert's life, minus up to 5% of it as jitter (j in [0,1)).
func renewTime(cert *tls.Certificate, j float64) time.Time {
	nb, na := cert.Leaf.NotBefore, cert.Leaf.NotAfter
	life := na.Sub(nb)
	return nb.Add(life/2 - time.Duration(j*float64(life)/20))
}

// backoff is the wait before retry n (n >= 1): 200ms doubling, capped at 30s, with jitter.
func backoff(n int) time.Duration {
	d := 30 * time.Second
	if n < 8 {
		d = min(d, 200*time.Millisecond<<(n-1))
	}
	return d/2 + rand.N(d/2+1)
}
