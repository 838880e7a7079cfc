package podnet

import (
	"fmt"
	"net"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/netaddr"
)

// Kind says what a connection accepted in a pod is.
type Kind string

// Connection kinds.
const (
	Outbound  Kind = "outbound"          // the app's connections, redirected by connect4/6
	Plaintext Kind = "inbound-plaintext" // inbound from outside the mesh, steered by sk_lookup
	HBONE     Kind = "hbone"             // inbound mTLS HTTP/2 CONNECT
	// Mesh is the pod's one listener, which takes all three.
	Mesh Kind = "mesh"
)

// listenAddr is the pod's one TCP socket: dual-stack, on every address
// of the pod netns, at the outbound port. The connect hooks send the app's
// IPv4 connections to 127.0.0.1:15001 and IPv6 ones to [::1]:15001, which
// it takes as any socket bound there; sk_lookup hands it what arrives
// from outside the pod on any port (registered for 15006 and 15008). One
// socket instead of one per kind keeps a pod's fd cost at three (netns
// handle, this, the DNS proxy's), so a node's open-file limit carries
// 5000 pods and more.
var listenAddr = fmt.Sprintf(":%d", mesh.OutboundPort)

// Sockets is how many sockets Open opens.
func Sockets() int { return 1 }

// Registered are the ports the pod's listener is registered for in the
// SOCKHASH that sk_lookup steers by.
var Registered = []uint16{mesh.InboundPlaintextPort, mesh.HBONEPort}

// Listener is the listening socket in a pod netns.
type Listener struct {
	Kind Kind
	Ln   net.Listener
}

// Open opens the pod's listener in n.
func Open(n Net) ([]*Listener, error) {
	ln, err := n.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	return []*Listener{{Kind: Mesh, Ln: ln}}, nil
}

// KindOf says what a connection accepted on the pod's listener is, by the
// local address it came to (sk_lookup keeps a steered connection's
// original destination): the HBONE port is HBONE; the outbound port on a
// loopback address is the app's own, captured; anything else arrived from
// outside the pod, or from the pod to its own address, and is plaintext
// (which refuses a mesh port as its destination, authorize.Destination:
// the pod's own address at the outbound port is not delivered to the
// listener again).
func KindOf(local net.Addr) Kind {
	a := netaddr.AddrPort(local)
	switch {
	case a.Port() == mesh.HBONEPort:
		return HBONE
	case a.Port() == mesh.OutboundPort && a.Addr().IsLoopback():
		return Outbound
	}
	return Plaintext
}
