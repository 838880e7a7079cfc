package ztunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

// spoofedError is a peer whose certificate does not belong to its address.
type spoofedError struct{ msg string }

func (e *spoofedError) Error() string { return e.msg }

// authorizePeer checks that peer is the identity of the workload owning src.
func authorizePeer(idx *meshconfig.Index, peer spiffe.ID, src netip.Addr) error {
	w := idx.ByIP(src)
	if w == nil {
		return &spoofedError{fmt.Sprintf("peer %s does not own source address %s (no workload has it)", peer, src)}
	}
	if owner := idx.Config.Identity(w); owner != peer {
		return &spoofedError{fmt.Sprintf("peer %s does not own source address %s (it belongs to %s/%s, %s)",
			peer, src, w.Namespace, w.Name, owner)}
	}
	return nil
}

// handshakeReason classifies a failed inbound TLS handshake for logs and
// the handshake failure metric.
func handshakeReason(err error) string {
	var rh tls.RecordHeaderError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var se *spoofedError
	switch {
	case errors.As(err, &se):
		return "spoofed_identity"
	case errors.As(err, &rh):
		return "not_tls"
	case errors.As(err, &ua):
		return "unknown_authority"
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "expired"
	case errors.As(err, &ci):
		return "invalid_certificate"
	case errors.Is(err, spiffe.ErrNoID):
		return "no_spiffe_id"
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "timeout"):
		return "timeout"
	case strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset"):
		return "closed"
	case strings.Contains(msg, "didn't provide a certificate") || strings.Contains(msg, "sent no certificate"):
		return "no_certificate"
	case strings.Contains(msg, "expired"):
		return "expired"
	case strings.Contains(msg, "unknown authority"):
		return "unknown_authority"
	}
	return "other"
}
