package ztunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
	"github.com/agentmesh/agentmesh/ztunnel/podnet/podnettest"
)

// Test addresses: pods A (client) and B (server) share a veth; X is outside
// the mesh on a second veth from A. C is a workload elsewhere.
var (
	ipA   = netip.MustParseAddr("198.18.1.1")
	ipB   = netip.MustParseAddr("198.18.1.2")
	ip6A  = netip.MustParseAddr("fd00:18::1")
	ip6B  = netip.MustParseAddr("fd00:18::2")
	ipAX  = netip.MustParseAddr("198.18.2.1")
	ipX   = netip.MustParseAddr("198.18.2.2")
	ipC   = netip.MustParseAddr("198.18.9.9")
	appB  = netip.AddrPortFrom(ipB, 8080)
	app6B = netip.AddrPortFrom(ip6B, 8080)
	appX  = netip.AddrPortFrom(ipX, 8080)
)

const td = "cluster.local"

// env is a node with pods A and B handed over, an echo app on B:8080 and on
// X:8080, fake eBPF tables and a real identity manager and TLS.
type env struct {
	t          *testing.T
	node       *Node
	logs       *logBuf
	orig       *fakeOrigDst
	lst        *fakeListeners
	ca         *pki.LocalCA
	caPair     tls.Certificate
	certs      *identity.Manager
	a, b, x    *os.File
	appB, appX *echoApp
	// nodeAddrs are the node's own addresses as the node sees them (none
	// unless a test sets some).
	nodeAddrs *fakeNodeAddrs
	stop      func()
}

// workload is an enrolled workload in namespace agents on node n1 whose
// authorization data allows everything (as standalone mode fills in).
func workload(uid, name string, ips ...netip.Addr) meshconfig.Workload {
	return meshconfig.Workload{UID: uid, Name: name, Namespace: "agents", ServiceAccount: name, Node: "n1", IPs: ips, Enrolled: true,
		Authz: allowAll()}
}

func testConfig(withB bool) *meshconfig.Config {
	c := &meshconfig.Config{TrustDomain: td, Workloads: []meshconfig.Workload{
		workload("uid-a", "client", ipA, ip6A),
		workload("uid-c", "other", ipC),
	}}
	if withB {
		c.Workloads = append(c.Workloads, workload("uid-b", "server", ipB, ip6B))
	}
	return c
}

// newEnv starts the node; opts change its options before it starts.
func newEnv(t *testing.T, opts ...func(*NodeOptions)) *env {
	e := &env{t: t, logs: &logBuf{}, orig: &fakeOrigDst{}, lst: &fakeListeners{}, nodeAddrs: &fakeNodeAddrs{}}
	e.a, e.b, e.x = newNetns(t), newNetns(t), newNetns(t)
	linkNetns(t, e.a, e.b, "ab", []string{"198.18.1.1/24", "fd00:18::1/64"}, []string{"198.18.1.2/24", "fd00:18::2/64"})
	linkNetns(t, e.a, e.x, "ax", []string{"198.18.2.1/24"}, []string{"198.18.2.2/24"})
	e.appB = serveEcho(t, listenIn(t, e.b, ":8080"))
	e.appX = serveEcho(t, listenIn(t, e.x, ":8080"))
	e.ca, e.caPair = newCAPair(t, td)
	e.certs = newManager(t, e.ca, nil)
	o := NodeOptions{
		NodeName: "n1", Logger: e.logs.logger(), Certs: e.certs, OrigDst: e.orig, Listeners: e.lst, NodeAddrs: e.nodeAddrs,
		DialTimeout: 2 * time.Second, HandshakeTimeout: 2 * time.Second, PodNet: hboneBeside{podnet.Netns{}},
	}
	for _, f := range opts {
		f(&o)
	}
	e.node = NewNode(o)
	e.node.SetConfig(testConfig(true))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.node.Run(ctx) }()
	e.stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("node did not stop")
		}
	}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("ztunnel log:\n%s", e.logs)
		}
	})
	return e
}

// handOver gives the node a pod the way agentd does: a dup of the netns fd.
func (e *env) handOver(uid, name string, ns *os.File, ips ...netip.Addr) {
	e.t.Helper()
	fd, err := unix.Dup(int(ns.Fd()))
	if err != nil {
		e.t.Fatal(err)
	}
	cookie, err := netns.Cookie(fd)
	if err != nil {
		e.t.Fatal(err)
	}
	p := handoff.Pod{UID: uid, Name: name, Namespace: "agents", IPs: ips, NetnsCookie: cookie}
	if err := e.node.AddPod(p, os.NewFile(uintptr(fd), "netns-"+name)); err != nil {
		e.t.Fatalf("add pod %s: %v", name, err)
	}
}

func (e *env) handOverAB() {
	e.handOver("uid-a", "client", e.a, ipA, ip6A)
	e.handOver("uid-b", "server", e.b, ipB, ip6B)
	if err := e.node.SnapshotDone([]string{"uid-a", "uid-b"}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.node.Ready(); err != nil {
		e.t.Fatalf("node not ready after handing over A and B: %v", err)
	}
}

func (e *env) pod(uid string) *pod {
	e.node.mu.Lock()
	defer e.node.mu.Unlock()
	return e.node.pods[uid]
}

func spiffeOf(name string) string { return "spiffe://" + td + "/ns/agents/sa/" + name }

var discard = slog.New(slog.DiscardHandler)

// servePlaintext hands c to p's plaintext path as the accept loop does.
func (e *env) servePlaintext(p *pod, c net.Conn) {
	e.node.goConn(p, podnet.Plaintext, c, func(ctx context.Context) { e.node.pipe.Plaintext(ctx, &p.flow, &p.live, c) })
}

// hboneBeside opens the real pod Net, whose one listener also listens at
// the HBONE port: the env attaches no sk_lookup (its tests emulate the
// plaintext steering by hand, see plaintextTo), which would steer a peer's
// connections to that port to the listener. bpf's TestSkLookup and the
// e2e tests check the real steering.
type hboneBeside struct{ podnet.Opener }

func (h hboneBeside) Open(info handoff.Pod, ns *os.File) (podnet.Net, error) {
	n, err := h.Opener.Open(info, ns)
	if err != nil {
		return nil, err
	}
	return hboneNet{n}, nil
}

type hboneNet struct{ podnet.Net }

func (n hboneNet) Listen(network, addr string) (net.Listener, error) {
	ln, err := n.Net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	hb, err := n.Net.Listen(network, fmt.Sprintf(":%d", mesh.HBONEPort))
	if err != nil {
		ln.Close()
		return nil, err
	}
	return podnettest.Merge(ln, hb), nil
}

// ListenUDP and DialUDP are the real Net's (the DNS proxy's).
func (n hboneNet) ListenUDP(network, addr string) (*net.UDPConn, error) {
	return n.Net.(dnsproxy.Net).ListenUDP(network, addr)
}

func (n hboneNet) DialUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	return n.Net.(dnsproxy.Net).DialUDP(addr)
}
