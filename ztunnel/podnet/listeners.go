package podnet

import (
	"fmt"
	"net"

	"github.com/agentmesh/agentmesh/api/mesh"
)

// Kind says what a pod listener takes.
type Kind string

// Listener kinds.
const (
	Outbound  Kind = "outbound"          // the app's connections, redirected by connect4/6
	Plaintext Kind = "inbound-plaintext" // inbound from outside the mesh, steered by sk_lookup
	HBONE     Kind = "hbone"             // inbound mTLS HTTP/2 CONNECT
)

// spec is one socket ztunnel opens in every pod netns.
type spec struct {
	kind     Kind
	network  string
	addr     string
	optional bool // tolerated to fail (no IPv6 in the pod)
}

// specs: the connect hooks send IPv4 to 127.0.0.1:15001 and IPv6 to
// [::1]:15001; sk_lookup steers inbound traffic to the dual-stack 15006 and
// 15008 sockets.
var specs = []spec{
	{Outbound, "tcp4", fmt.Sprintf("127.0.0.1:%d", mesh.OutboundPort), false},
	{Outbound, "tcp6", fmt.Sprintf("[::1]:%d", mesh.OutboundPort), true},
	{Plaintext, "tcp", fmt.Sprintf(":%d", mesh.InboundPlaintextPort), false},
	{HBONE, "tcp", fmt.Sprintf(":%d", mesh.HBONEPort), false},
}

// Sockets is how many listeners Open opens at most.
func Sockets() int { return len(specs) }

// Listener is one listening socket in a pod netns.
type Listener struct {
	Kind Kind
	Ln   net.Listener
}

// Port is the mesh port l listens on.
func (l *Listener) Port() uint16 {
	if a, ok := l.Ln.Addr().(*net.TCPAddr); ok {
		return uint16(a.Port)
	}
	return 0
}

// Open opens the pod's listeners in n; on error none stays open.
func Open(n Net) ([]*Listener, error) {
	var out []*Listener
	for _, s := range specs {
		ln, err := n.Listen(s.network, s.addr)
		if err != nil && s.optional {
			continue
		}
		if err != nil {
			for _, l := range out {
				l.Ln.Close()
			}
			return nil, err
		}
		out = append(out, &Listener{Kind: s.kind, Ln: ln})
	}
	return out, nil
}
