// Package identity gives workloads their SPIFFE X.509 certificates: a
// Signer (pki.LocalCA in standalone mode, the controller's CA) signs
// CSRs for keys made in this process, a Manager keeps one certificate per
// workload identity and renews it at half life, and the TLS configs it builds
// verify peers by SPIFFE id against the current trust bundle.
package identity

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Signer issues workload certificates.
type Signer interface {
	// Sign issues a certificate for id from the CSR (DER). It returns the
	// leaf first, then intermediates. It refuses a CSR that does not carry
	// exactly id as its only SAN or whose key is not ECDSA P-256.
	Sign(ctx context.Context, csrDER []byte, id spiffe.ID, lifetime time.Duration) ([]*x509.Certificate, error)
}
