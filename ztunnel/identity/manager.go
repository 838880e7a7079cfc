package identity

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	Signer   Signer
	Bundle   *x509.CertPool // trust roots for peers; SetBundle replaces it
	Lifetime time.Duration  // asked of the Signer; pki.DefaultLifetime when zero
	Logger   *slog.Logger   // slog.Default when nil
	Now      func() time.Time
}

// Manager holds one certificate per workload identity and renews each at
// half life. Certificates of identities no longer needed are dropped with
// Forget. All methods are safe for concurrent use.
type Manager struct {
	signer   Signer
	lifetime time.Duration
	log      *slog.Logger
	now      func() time.Time
	bundle   atomic.Pointer[x509.CertPool]
	kick     chan struct{} // wakes Run when a renewal time changed; cap 1

	mu      sync.Mutex
	entries map[spiffe.ID]*entry // guarded by mu
}

// entry is one identity's certificate state.
type entry struct {
	id  spiffe.ID
	sem chan struct{} // cap 1: one Ensure fetch at a time

	// Guarded by Manager.mu.
	cert     *tls.Certificate // nil until the first fetch succeeds
	renewAt  time.Time
	failures int                // renewals failed in a row
	cancel   context.CancelFunc // of the renewal in flight, nil if none
}

// CertInfo describes one identity's certificate, for the admin endpoint.
type CertInfo struct {
	ID        spiffe.ID `json:"id"`
	Serial    string    `json:"serial,omitempty"` // hex
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// AuthorityKeyID (hex) names the root that signed it: its subject
	// key id (a root rotation shows which one).
	AuthorityKeyID string    `json:"authorityKeyId,omitempty"`
	NextRenewal    time.Time `json:"nextRenewal"`
	Failures       int       `json:"failures"` // renewals failed in a row
}

// NewManager returns a Manager; call Run to renew certificates.
func NewManager(o ManagerOptions) *Manager {
	m := &Manager{
		signer:   o.Signer,
		lifetime: cmp.Or(o.Lifetime, pki.DefaultLifetime),
		log:      o.Logger,
		now:      o.Now,
		kick:     make(chan struct{}, 1),
		entries:  map[spiffe.ID]*entry{},
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.bundle.Store(o.Bundle)
	return m
}

// SetBundle replaces the trust roots used for new handshakes.
func (m *Manager) SetBundle(b *x509.CertPool) { m.bundle.Store(b) }

// Bundle returns the current trust roots.
func (m *Manager) Bundle() *x509.CertPool { return m.bundle.Load() }

// Forget stops renewing id and drops its certificate.
func (m *Manager) Forget(id spiffe.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[id]; e != nil && e.cancel != nil {
		e.cancel()
	}
	delete(m.entries, id)
}

// Certificate returns id's current certificate, with its chain and Leaf set.
func (m *Manager) Certificate(id spiffe.ID) (*tls.Certificate, error) {
	m.mu.Lock()
	e := m.entries[id]
	var c *tls.Certificate
	if e != nil {
		c = e.cert
	}
	m.mu.Unlock()
	switch {
	case e == nil:
		return nil, fmt.Errorf("no certificate for %s: identity not ensured", id)
	case c == nil:
		return nil, fmt.Errorf("no certificate for %s yet", id)
	case m.now().After(c.Leaf.NotAfter):
		return nil, fmt.Errorf("certificate for %s expired at %s", id, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return c, nil
}

// Snapshot describes every identity's certificate, sorted by id.
func (m *Manager) Snapshot() []CertInfo {
	m.mu.Lock()
	out := make([]CertInfo, 0, len(m.entries))
	for _, e := range m.entries {
		ci := CertInfo{ID: e.id, NextRenewal: e.renewAt, Failures: e.failures}
		if e.cert != nil {
			ci.Serial = e.cert.Leaf.SerialNumber.Text(16)
			ci.NotBefore, ci.NotAfter = e.cert.Leaf.NotBefore, e.cert.Leaf.NotAfter
			ci.AuthorityKeyID = hex.EncodeToString(e.cert.Leaf.AuthorityKeyId)
		}
		out = append(out, ci)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b CertInfo) int { return cmp.Compare(a.ID.String(), b.ID.String()) })
	return out
}

// poke wakes Run to recompute its next renewal time.
func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}
