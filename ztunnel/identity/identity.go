// Package identity gives workloads their SPIFFE X.509 certificates: a
// Signer (the LocalCA in standalone mode, the controller's CA later) signs
// CSRs for keys made in this process, a Manager keeps one certificate per
// workload identity and renews it at half life, and the TLS configs it builds
// verify peers by SPIFFE id against the current trust bundle.
package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/url"
	"time"

	"github.com/agentmesh/agentmesh/internal/spiffe"
)

// Signer issues workload certificates.
type Signer interface {
	// Sign issues a certificate for id from the CSR (DER). It returns the
	// leaf first, then intermediates. It refuses a CSR that does not carry
	// exactly id as its only SAN or whose key is not ECDSA P-256.
	Sign(ctx context.Context, csrDER []byte, id spiffe.ID, lifetime time.Duration) ([]*x509.Certificate, error)
}

// DefaultLifetime is the workload certificate lifetime asked for when
// ManagerOptions.Lifetime is zero.
const DefaultLifetime = 24 * time.Hour

// newKey makes a fresh ECDSA P-256 key.
func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ecdsa p-256 key: %w", err)
	}
	return k, nil
}

// NewCSR returns a DER certificate request for key whose only SAN is id's URI.
func NewCSR(key *ecdsa.PrivateKey, id spiffe.ID) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("create csr for %s: %w", id, err)
	}
	return der, nil
}
