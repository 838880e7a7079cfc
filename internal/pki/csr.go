package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// ErrBadCSR is wrapped by every CheckCSR refusal.
var ErrBadCSR = errors.New("bad csr")

// CheckCSR parses a DER certificate request and checks that it may be signed
// for id: its signature is valid, its key is ECDSA P-256 and its only SAN is
// exactly one URI equal to id. It returns the request's public key.
func CheckCSR(csrDER []byte, id spiffe.ID) (*ecdsa.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: parse: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: key is %s, want ecdsa p-256", ErrBadCSR, keyName(csr))
	}
	if err := checkSANs(csr, id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	return pub, nil
}

func checkSANs(csr *x509.CertificateRequest, id spiffe.ID) error {
	switch {
	case len(csr.DNSNames) > 0:
		return fmt.Errorf("has dns sans %q, want only the spiffe uri", csr.DNSNames)
	case len(csr.IPAddresses) > 0:
		return fmt.Errorf("has ip sans %v, want only the spiffe uri", csr.IPAddresses)
	case len(csr.EmailAddresses) > 0:
		return fmt.Errorf("has email sans %q, want only the spiffe uri", csr.EmailAddresses)
	case len(csr.URIs) != 1:
		return fmt.Errorf("has %d uri sans, want exactly 1 (%s)", len(csr.URIs), id)
	case csr.URIs[0].String() != id.String():
		return fmt.Errorf("uri san %s, want %s", csr.URIs[0], id)
	}
	return nil
}

func keyName(csr *x509.CertificateRequest) string {
	if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); ok {
		return "ecdsa " + pub.Curve.Params().Name
	}
	return csr.PublicKeyAlgorithm.String()
}
