// Package pki is the certificate plumbing the controller's CA and the
// node's identity manager share: the mesh's root (GenerateCA, LocalCA),
// issuing SPIFFE workload certificates, and the workload key and CSR
// format (ECDSA P-256, exactly one spiffe:// URI SAN).
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/url"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// DefaultLifetime is the workload certificate lifetime when none is asked.
const DefaultLifetime = 24 * time.Hour

// NewKey makes a fresh ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
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
