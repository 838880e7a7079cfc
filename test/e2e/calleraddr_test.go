package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// TestCallerAddress: the app in pod b logs pod a's address for a mesh
// call, over IPv4 and IPv6, cross-node (HBONE) and same-node (the fast
// path): the destination tunnel delivers from the caller's address. So it
// does for a plaintext connection from a pod outside the mesh (e, on
// node 1), to a pod on another node and on its own, from a port below the
// ephemeral range (see podnet's fromCaller).
func TestCallerAddress(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 2})
	a := addPod(t, l, "a", 1, true)
	b, bLog := addLoggingPod(t, l, "b", 2)
	c, cLog := addLoggingPod(t, l, "c", 1)
	e := addPod(t, l, "e", 1, false)

	for _, fam := range []struct {
		name string
		ip   func(*lab.Pod) netip.Addr
	}{{"ipv4", (*lab.Pod).IPv4}, {"ipv6", (*lab.Pod).IPv6}} {
		for _, tc := range []struct {
			name     string
			from, to *lab.Pod
			log      *lab.Process
			proto    string // the destination's access log
			seen     *lab.Pod
		}{
			{"cross-node", a, b, bLog, "hbone", a},
			{"same-node", a, c, cLog, "local", a},
			{"plaintext from outside the mesh", e, b, bLog, "plaintext", e},
			{"plaintext from outside the mesh, same node", e, c, cLog, "plaintext", e},
		} {
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				caller, dst := fam.ip(tc.from), netip.AddrPortFrom(fam.ip(tc.to), echoPort)
				seen := fam.ip(tc.seen)
				before := peerLines(t, tc.log, seen)
				send(t, l, tc.from, dst, fmt.Sprintf("caller-address-%s-%s", fam.name, tc.name))
				waitPeerLines(t, tc.log, seen, before+1)
				in := waitAccess(t, l, tc.to.Node, "inbound "+tc.name, func(x lab.AccessLog) bool {
					return x.Direction == "inbound" && x.Src().Addr().Unmap() == caller && x.Dst() == dst
				})
				if in.Protocol != tc.proto || in.Result != "ok" {
					t.Errorf("inbound access log: %+v; want protocol %s, ok", in, tc.proto)
				}
				// A caller from outside the mesh reaches the pod itself:
				// its delivery takes a port its kernel does not pick.
				if port := lastPeerPort(t, tc.log, seen); tc.proto == "plaintext" && (port < 1024 || port >= 32768 || port == in.Src().Port()) {
					t.Errorf("the app saw the plaintext caller at port %d (its own %d); want 1024-32767, not its own", port, in.Src().Port())
				}
			})
		}
	}
}

// addLoggingPod adds an enrolled pod whose echo server prints the peer of
// every connection it accepts.
func addLoggingPod(t *testing.T, l *lab.Lab, name string, node int) (*lab.Pod, *lab.Process) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := l.AddPod(ctx, lab.PodSpec{Name: name, Namespace: "agents", ServiceAccount: name, Node: node, Enrolled: true})
	if err != nil {
		t.Fatalf("add pod %s: %v", name, err)
	}
	proc, err := p.Start(ctx, "echo", l.Bin("meshlab"), "app", "echo", "--log-peers", "--listen", fmt.Sprintf(":%d", echoPort))
	if err != nil {
		t.Fatalf("start echo in %s: %v", name, err)
	}
	return p, proc
}

// peerLog is the echo server's log and the marker that starts the port of
// each connection it logged from ip.
func peerLog(t *testing.T, p *lab.Process, ip netip.Addr) (out, marker []byte) {
	t.Helper()
	out, err := p.Output()
	if err != nil {
		t.Fatal(err)
	}
	host := ip.String()
	if ip.Is6() {
		host = "[" + host + "]"
	}
	return out, []byte(" from " + host + ":")
}

// peerLines counts the connections the echo server logged from ip.
func peerLines(t *testing.T, p *lab.Process, ip netip.Addr) int {
	t.Helper()
	out, marker := peerLog(t, p, ip)
	return bytes.Count(out, marker)
}

// lastPeerPort is the port of the last connection the echo server
// logged from ip.
func lastPeerPort(t *testing.T, p *lab.Process, ip netip.Addr) uint16 {
	t.Helper()
	out, marker := peerLog(t, p, ip)
	i := bytes.LastIndex(out, marker)
	if i < 0 {
		t.Fatalf("the app logged no connection from %s", ip)
	}
	rest := out[i+len(marker):]
	end := bytes.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	port, err := strconv.ParseUint(string(rest[:end]), 10, 16)
	if err != nil {
		t.Fatalf("the app's line from %s: port %q: %v", ip, rest[:end], err)
	}
	return uint16(port)
}

// waitPeerLines waits until the echo server logged n connections from ip.
func waitPeerLines(t *testing.T, p *lab.Process, ip netip.Addr, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for peerLines(t, p, ip) < n {
		if time.Now().After(deadline) {
			out, _ := p.Output()
			t.Fatalf("the app logged %d connections from %s, want %d; its log:\n%s", peerLines(t, p, ip), ip, n, tail(string(out), 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
