// Package podnettest is a fake pod network for ztunnel's tests that needs
// no root: pods are loopback addresses (127.77.0.N) of the test's own
// network namespace, and the Network plays the kernel's part: the capture
// (an enrolled pod's app connects to its ztunnel outbound listener, the
// original destination recorded for ztunnel's lookup), the steering (a
// connection to an enrolled pod's port reaches the plaintext listener
// registered for it, with the original destination as its local address,
// or is refused when none is: the mesh fails closed), and the sockets
// ztunnel makes inside pods (listening on and dialing from the pod's
// address). It is IPv4 only.
//
// A Network implements podnet.Opener, classify.OrigDst and ztunnel's
// ListenerTable, so a ztunnel.Node runs on it unchanged.
package podnettest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netaddr"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// lookupWait bounds how long a lookup of what the fake recorded for a
// connection waits for the record: the dialer writes it a moment after
// the connection is up (the kernel's hooks write it before).
const lookupWait = 2 * time.Second

// Network is the fake. Safe for concurrent use.
type Network struct {
	mu         sync.Mutex
	changed    *sync.Cond
	pods       map[netip.Addr]*Pod
	byUID      map[string]*Pod
	next       byte
	base       [2]byte                           // 127.base.N: the network's loopback addresses
	orig       map[origKey]netip.AddrPort        // captured: what Lookup answers
	steered    map[netip.AddrPort]netip.AddrPort // client address -> original destination
	registered map[netip.AddrPort]bool           // SOCKHASH: pod ip and mesh port
}

type origKey struct {
	cookie   uint64
	src, dst netip.AddrPort
}

// New returns an empty network.
func New() *Network {
	n := &Network{
		pods: map[netip.Addr]*Pod{}, byUID: map[string]*Pod{},
		orig: map[origKey]netip.AddrPort{}, steered: map[netip.AddrPort]netip.AddrPort{},
		registered: map[netip.AddrPort]bool{},
		// A random 127.X.Y/24 per network, so that two test processes on
		// one machine (a CI run beside a developer's) do not bind the
		// same addresses.
		base: [2]byte{byte(64 + rand.IntN(190)), byte(rand.IntN(256))},
	}
	n.changed = sync.NewCond(&n.mu)
	return n
}

// Pod is one pod: its address and netns cookie, and whether the capture
// takes its apps' connections (enrolled).
type Pod struct {
	UID      string
	IP       netip.Addr
	Cookie   uint64
	Enrolled bool
	net      *Network
}

// AddPod adds a pod with the next free address.
func (n *Network) AddPod(uid string, enrolled bool) *Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	p := &Pod{UID: uid, IP: netip.AddrFrom4([4]byte{127, n.base[0], n.base[1], n.next}), Cookie: 1000 + uint64(n.next), Enrolled: enrolled, net: n}
	n.pods[p.IP] = p
	n.byUID[uid] = p
	return p
}

// Open is podnet.Opener: the Net of the pod added with info's uid. The netns
// file is closed: the fake needs none.
func (n *Network) Open(info handoff.Pod, ns *os.File) (podnet.Net, error) {
	ns.Close()
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.byUID[info.UID]
	if p == nil {
		return nil, fmt.Errorf("fake network has no pod %s", info.UID)
	}
	return podNet{p}, nil
}

// Lookup is classify.OrigDst: it consumes what the capture recorded.
func (n *Network) Lookup(cookie uint64, src, dst netip.AddrPort) (netip.AddrPort, error) {
	k := origKey{cookie, src, dst}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.waitLocked(func() bool { _, ok := n.orig[k]; return ok }) {
		return netip.AddrPort{}, fmt.Errorf("no original destination for %s -> %s", src, dst)
	}
	v := n.orig[k]
	delete(n.orig, k)
	return v, nil
}

// Put and Delete are ztunnel's ListenerTable: a registered mesh port is
// where the fake steers connections to the pod.
func (n *Network) Put(ip netip.Addr, port uint16, _ syscall.Conn) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.registered[netip.AddrPortFrom(ip, port)] = true
	return nil
}

func (n *Network) Delete(ip netip.Addr, port uint16) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.registered, netip.AddrPortFrom(ip, port))
	return nil
}

// waitLocked waits (bounded) until cond holds; n.mu is held.
func (n *Network) waitLocked(cond func() bool) bool {
	if cond() {
		return true
	}
	deadline := time.Now().Add(lookupWait)
	wake := time.AfterFunc(lookupWait, func() { n.mu.Lock(); n.changed.Broadcast(); n.mu.Unlock() })
	defer wake.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		n.changed.Wait()
	}
	return true
}

// AppDial connects from an app of p to dst as the kernel would route it:
// an enrolled pod's connection is captured to its ztunnel's outbound
// listener; a connection to an enrolled pod's port other than HBONE is
// steered to that pod's plaintext listener, or refused when ztunnel has
// none registered.
func (p *Pod) AppDial(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	n := p.net
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(p.IP, 0))}
	if p.Enrolled {
		out := netip.AddrPortFrom(p.IP, mesh.OutboundPort)
		c, err := d.DialContext(ctx, "tcp4", out.String())
		if err != nil {
			return nil, fmt.Errorf("dial %s (captured to %s): %w", dst, out, err)
		}
		n.record(func() { n.orig[origKey{p.Cookie, netaddr.AddrPort(c.LocalAddr()), out}] = dst })
		return c, nil
	}
	target := dst
	n.mu.Lock()
	dp := n.pods[dst.Addr()]
	steer := dp != nil && dp.Enrolled && dst.Port() != mesh.HBONEPort
	plain := netip.AddrPortFrom(dst.Addr(), mesh.InboundPlaintextPort)
	registered := n.registered[plain]
	n.mu.Unlock()
	if steer {
		if !registered {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: syscall.ECONNREFUSED}
		}
		target = plain
	}
	c, err := d.DialContext(ctx, "tcp4", target.String())
	if err != nil {
		return nil, err
	}
	if steer {
		n.record(func() { n.steered[netaddr.AddrPort(c.LocalAddr())] = dst })
	}
	return c, nil
}

// AppListen listens for an app of p on port.
func (p *Pod) AppListen(port uint16) (net.Listener, error) {
	return net.Listen("tcp4", netip.AddrPortFrom(p.IP, port).String())
}

func (n *Network) record(f func()) {
	n.mu.Lock()
	f()
	n.changed.Broadcast()
	n.mu.Unlock()
}

// steeredTo is the original destination of a steered connection from src.
func (n *Network) steeredTo(src netip.AddrPort) (netip.AddrPort, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.waitLocked(func() bool { _, ok := n.steered[src]; return ok }) {
		return netip.AddrPort{}, false
	}
	dst := n.steered[src]
	delete(n.steered, src)
	return dst, true
}

// podNet is a Pod as podnet.Net: ztunnel's sockets in the pod.
type podNet struct{ p *Pod }

// Listen maps the pod's one listener (on every address at the outbound
// port) to three on its loopback address, merged (meshListener): the
// kernel hands the real one the outbound port's connections, and sk_lookup
// the plaintext and HBONE ones, which the fake cannot. IPv6 fails (IPv4
// only), as in a pod without IPv6.
func (pn podNet) Listen(network, addr string) (net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if network == "tcp6" {
		return nil, errors.New("fake pod network: no IPv6")
	}
	if port != fmt.Sprint(mesh.OutboundPort) {
		return nil, fmt.Errorf("fake pod network: listen %s: only the mesh listener (port %d)", addr, mesh.OutboundPort)
	}
	var lns []net.Listener
	for _, port := range []uint16{mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort} {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(pn.p.IP, port).String())
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		if port == mesh.InboundPlaintextPort {
			ln = &steeringListener{Listener: ln, n: pn.p.net}
		}
		lns = append(lns, ln)
	}
	return Merge(lns...), nil
}

// Merge is one listener that accepts what any of lns accepts (each on an
// accept goroutine, ended by Close, which closes them all), for a test
// that stands in for sk_lookup's steering to the pod's one listener by
// listening on the ports it steers. Its address and SyscallConn are the
// first's.
func Merge(lns ...net.Listener) net.Listener {
	m := &meshListener{lns: lns, conns: make(chan net.Conn), done: make(chan struct{})}
	for _, ln := range m.lns {
		m.wg.Go(func() { m.serve(ln) })
	}
	return m
}

// meshListener is Merge's.
type meshListener struct {
	lns   []net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func (m *meshListener) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Close
		}
		select {
		case m.conns <- c:
		case <-m.done:
			c.Close()
			return
		}
	}
}

func (m *meshListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: m.Addr(), Err: net.ErrClosed}
	}
}

func (m *meshListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		for _, ln := range m.lns {
			ln.Close()
		}
		m.wg.Wait()
	})
	return nil
}

func (m *meshListener) Addr() net.Addr {
	if len(m.lns) == 0 {
		return &net.TCPAddr{}
	}
	return m.lns[0].Addr()
}

// SyscallConn is the first listener's, for the SOCKHASH registration.
func (m *meshListener) SyscallConn() (syscall.RawConn, error) {
	sc, ok := m.lns[0].(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("listener %s: not a socket", m.lns[0].Addr())
	}
	return sc.SyscallConn()
}

// Dial connects from the pod's address; marked sockets are neither
// captured nor steered.
func (pn podNet) Dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(pn.p.IP, 0))}
	return d.DialContext(ctx, "tcp4", addr.String())
}

// DialFrom dials from the pod's address: the fake network cannot take on
// the caller's.
func (pn podNet) DialFrom(ctx context.Context, _ netip.AddrPort, addr netip.AddrPort) (net.Conn, error) {
	return pn.Dial(ctx, addr)
}

func (pn podNet) Cookie() (uint64, error) { return pn.p.Cookie, nil }
func (pn podNet) Close() error            { return nil }

// steeringListener gives a steered connection its original destination as
// local address, as sk_lookup does.
type steeringListener struct {
	net.Listener
	n *Network
}

func (l *steeringListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	dst, ok := l.n.steeredTo(netaddr.AddrPort(c.RemoteAddr()))
	if !ok {
		return c, nil // dialed straight to the port: it keeps its own address
	}
	return &steeredConn{TCPConn: c.(*net.TCPConn), local: net.TCPAddrFromAddrPort(dst)}, nil
}

// steeredConn is a TCP socket whose local address is the original
// destination.
type steeredConn struct {
	*net.TCPConn
	local net.Addr
}

func (c *steeredConn) LocalAddr() net.Addr { return c.local }

// BareTCP lets the relay splice the socket (relay.BareTCP).
func (c *steeredConn) BareTCP() *net.TCPConn { return c.TCPConn }
