// Package podnet is the socket layer under ztunnel's pipeline and the only
// place that makes sockets inside pods' network namespaces: Net listens
// and dials inside one pod's netns (the real one with setns and SO_MARK,
// or podnettest's fake), and Open makes the listeners ztunnel has in every
// enrolled pod (the accept loops are the node's: it owns their
// goroutines). It knows nothing of what the connections carry.
package podnet

import (
	"context"
	"net"
	"net/netip"
	"os"

	"github.com/agentmesh/agentmesh/internal/handoff"
)

// Net makes sockets inside one pod's network namespace. Methods are safe
// for concurrent use.
type Net interface {
	// Listen opens a TCP listener at addr inside the namespace.
	Listen(network, addr string) (net.Listener, error)
	// Dial connects to addr from inside the namespace, marked so the
	// capture lets it through: its source address is the pod's.
	Dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	// DialFrom connects to the app at addr in the namespace from the
	// caller's address from.Addr() where it can (the real Net set up for
	// deliveries from the caller, see Netns.Deliveries), else as Dial.
	// from.Port() is 0 for a mesh caller, whose own connections never
	// reach the app's address; a caller from outside the mesh gives the
	// port of its connection, which reached the pod directly (see
	// fromCaller for what that changes).
	DialFrom(ctx context.Context, from netip.AddrPort, addr netip.AddrPort) (net.Conn, error)
	// Cookie is the namespace's cookie (bpf_get_netns_cookie's value),
	// which keys the original destinations the capture records.
	Cookie() (uint64, error)
	// Close releases the namespace (Listen and Dial fail afterwards;
	// sockets made before live on).
	Close() error
}

// Opener gives the Net of a pod handed over by agentd with its netns
// file, which it owns from then on (closed on error too).
type Opener interface {
	Open(info handoff.Pod, ns *os.File) (Net, error)
}
