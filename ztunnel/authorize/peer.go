package authorize

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
)

// spoofedError is a peer whose certificate does not belong to its address.
type spoofedError struct{ msg string }

func (e *spoofedError) Error() string { return e.msg }

// Peer checks that an mTLS peer is the identity of the workload that owns
// its source address, so a workload cannot present another's certificate
// from its own address.
func Peer(idx *meshconfig.Index, peer spiffe.ID, src netip.Addr) error {
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

// PeerCheck is Peer as the TLS verification of a connection from src, with
// the config index gives when the handshake runs.
func PeerCheck(index func() *meshconfig.Index, src netip.AddrPort) func(spiffe.ID, tls.ConnectionState) error {
	return func(peer spiffe.ID, _ tls.ConnectionState) error {
		return Peer(index(), peer, src.Addr())
	}
}

// HandshakeReason classifies a failed inbound TLS handshake for logs and
// the handshake failure metric.
func HandshakeReason(err error) string {
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

// Destination refuses connections not addressed to one of the pod's
// addresses or addressed to a mesh port (which would loop back into
// ztunnel). The error wraps hbone.ErrDenied.
func Destination(p *flow.Pod, a netip.AddrPort) error {
	if !a.IsValid() || a.Port() == 0 {
		return fmt.Errorf("%w: invalid authority %q", hbone.ErrDenied, a.String())
	}
	if !p.Owns(a.Addr()) {
		return fmt.Errorf("%w: authority %s is not an address of pod %s", hbone.ErrDenied, a, p)
	}
	if isMeshPort(a.Port()) {
		return fmt.Errorf("%w: authority %s is a mesh port", hbone.ErrDenied, a)
	}
	return nil
}

func isMeshPort(port uint16) bool {
	switch port {
	case mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort, mesh.DNSPort:
		return true
	}
	return false
}
