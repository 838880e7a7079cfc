package ztunnel

import (
	"context"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
)

// withAuthz is testConfig(true) with B's authorization data set to t.
func withAuthz(t *policy.Target) *meshconfig.Config {
	c := testConfig(true)
	for i := range c.Workloads {
		if c.Workloads[i].UID == "uid-b" {
			c.Workloads[i].Authz = t
		}
	}
	return c
}

// target is authorization data with policies, mTLS mode and default Allow.
func target(mode policy.MTLSMode, ps ...policy.Policy) *policy.Target {
	return &policy.Target{MTLSMode: mode, Default: policy.ActionAllow, Policies: ps}
}

// agentPolicy is a compiled policy agents/name whose rules have indexes.
func agentPolicy(name string, a policy.Action, rules ...policy.Rule) policy.Policy {
	for i := range rules {
		rules[i].Index = i
	}
	return policy.Policy{Namespace: "agents", Name: name, Action: a, Rules: rules}
}

func fromIDs(ids ...spiffe.ID) policy.Rule {
	return policy.Rule{From: []policy.Peer{{Identities: policy.SetOf(ids...)}}}
}

func fromBlock(cidr string) policy.Rule {
	return policy.Rule{From: []policy.Peer{{IPBlocks: []policy.IPBlock{{Prefix: netip.MustParsePrefix(cidr)}}}}}
}

func onPorts(ports ...uint16) policy.Rule {
	var r policy.Rule
	for _, p := range ports {
		r.Ports = append(r.Ports, policy.PortRange{From: p, To: p})
	}
	return r
}

// hboneClient is an HBONE client dialing from A's netns as A's identity.
type hboneClient struct {
	e *env
	c *hbone.Client
}

func newHBONEClient(t *testing.T, e *env) *hboneClient {
	t.Helper()
	if err := e.certs.Ensure(context.Background(), idClient); err != nil {
		t.Fatal(err)
	}
	c := hbone.NewClient(hbone.ClientOptions{Logger: discard})
	t.Cleanup(func() { c.Close() })
	return &hboneClient{e: e, c: c}
}

// dial opens a stream to authority on B; the returned conn is closed when
// the test ends.
func (h *hboneClient) dial(t *testing.T, authority netip.AddrPort) (net.Conn, error) {
	t.Helper()
	pa := h.e.pod("uid-a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.c.Dial(ctx, hbone.Target{
		SrcID: idClient, DstID: idServer, SrcIP: ipA,
		HBONEAddr: netip.AddrPortFrom(ipB, 15008), Authority: authority,
		TLS: h.e.certs.ClientTLSConfig(idClient, idServer),
		Dial: func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
			return pa.net.Dial(ctx, addr)
		},
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// plaintextTo opens a connection from A and hands its server side to B's
// plaintext path as if sk_lookup had steered a connection for dst there.
func plaintextTo(t *testing.T, e *env, ln net.Listener, dst netip.AddrPort) net.Conn {
	t.Helper()
	c := dialIn(t, e.a, netip.AddrPortFrom(ipB, uint16(ln.Addr().(*net.TCPAddr).Port)).String())
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	e.servePlaintext(e.pod("uid-b"), redirected{sc, net.TCPAddrFromAddrPort(dst)})
	return c
}

// peerCount is how many connections app accepted.
func (a *echoApp) peerCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.peers)
}

// readEnds reads c until it ends and fails the test unless it ends (EOF or
// an error) within 3s, well before the echo app's own 10s deadline. HBONE
// streams have no deadlines: the read runs on a goroutine, ended by
// closing c on failure.
func readEnds(t *testing.T, what string, c net.Conn) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); io.Copy(io.Discard, c) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		c.Close()
		<-done
		t.Fatalf("%s still open 3s after the policy change", what)
	}
}

// fakeNodeAddrs is a settable NodeAddrs.
type fakeNodeAddrs struct {
	mu    sync.Mutex
	addrs []netip.Addr
}

func (f *fakeNodeAddrs) Contains(a netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.addrs, a.Unmap())
}

func (f *fakeNodeAddrs) set(addrs ...netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = addrs
}

// withProbes is t with probe ports.
func withProbes(t *policy.Target, ports ...uint16) *policy.Target {
	t.ProbePorts = ports
	return t
}
