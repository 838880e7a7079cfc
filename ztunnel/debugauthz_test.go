package ztunnel

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
)

// checkConfig is testConfig(true) with B's policy, a workload outside the
// mesh (not enrolled) and one on another node.
func checkConfig(authz *policy.Target) *meshconfig.Config {
	c := withAuthz(authz)
	out := workload("uid-x", "outside", ipX)
	out.Enrolled, out.Authz = false, nil
	far := workload("uid-far", "far", netip.MustParseAddr("198.18.3.3"))
	far.Node = "n2"
	c.Workloads = append(c.Workloads, out, far)
	return c
}

func TestDebugAuthz(t *testing.T) {
	nodeIP := netip.MustParseAddr("198.19.1.1")
	addrs := &fakeNodeAddrs{}
	addrs.set(nodeIP)
	n := NewNode(NodeOptions{NodeName: "n1", Logger: discard, Certs: newManager(t, newCA(t, td), nil),
		OrigDst: &fakeOrigDst{}, Listeners: &fakeListeners{}, NodeAddrs: addrs})
	t.Cleanup(func() { n.shutdown() })
	noClient := agentPolicy("no-client", policy.ActionDeny, withPorts(fromIDs(idClient), 8080))
	lan := agentPolicy("lan", policy.ActionAllow, fromBlock("198.18.2.0/24"), fromIDs(idClient))
	n.SetConfig(checkConfig(&policy.Target{MTLSMode: policy.MTLSPermissive, Policies: []policy.Policy{noClient, lan}, ProbePorts: []uint16{8081}}))
	srv := httptest.NewServer(n.AdminHandler())
	defer srv.Close()
	to := debug.AuthzDest{Workload: "agents/server", UID: "uid-b", Addr: ipB}
	base := debug.Authz{Node: "n1", To: to, MTLSMode: "PERMISSIVE", Default: "Allow", Policies: []string{"agents/no-client", "agents/lan"},
		ProbePorts: []uint16{8081}}
	client := debug.AuthzPeer{Workload: "agents/client", Identity: spiffeOf("client"), Addr: ipA, MTLS: true}
	for _, tc := range []struct {
		name, from, port string
		peer             debug.AuthzPeer
		want             debug.AuthzDecision
	}{
		{"enrolled: mtls, deny rule", "agents/client", "8080", client,
			debug.AuthzDecision{Reason: policy.ReasonDenyRule, Policy: "agents/no-client", Rule: 0}},
		{"enrolled: other port allowed by identity", "agents/client", "9090", client,
			debug.AuthzDecision{Allow: true, Reason: policy.ReasonAllowRule, Policy: "agents/lan", Rule: 1}},
		{"workload outside the mesh: plaintext from its address", "agents/outside", "9090",
			debug.AuthzPeer{Workload: "agents/outside", Addr: ipX},
			debug.AuthzDecision{Allow: true, Reason: policy.ReasonAllowRule, Policy: "agents/lan", Rule: 0}},
		{"bare ip of a mesh pod: plaintext, no workload", "198.18.1.1", "9090",
			debug.AuthzPeer{Addr: ipA, Impostor: "agents/client"},
			debug.AuthzDecision{Reason: policy.ReasonNoAllowMatch, Policy: "agents/lan", Rule: -1}},
		{"bare mapped ip", "::ffff:198.18.2.7", "80",
			debug.AuthzPeer{Addr: netip.MustParseAddr("198.18.2.7")},
			debug.AuthzDecision{Allow: true, Reason: policy.ReasonAllowRule, Policy: "agents/lan", Rule: 0}},
		{"node address to a probe port", "198.19.1.1", "8081", debug.AuthzPeer{Addr: nodeIP, Node: true},
			debug.AuthzDecision{Allow: true, Reason: policy.ReasonKubeletProbe, Rule: -1}},
		{"node address to another port", "198.19.1.1", "8080", debug.AuthzPeer{Addr: nodeIP, Node: true},
			debug.AuthzDecision{Reason: policy.ReasonNoAllowMatch, Policy: "agents/lan", Rule: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got debug.Authz
			if code := get(t, checkURL(srv.URL, tc.from, "agents/server", tc.port), &got); code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			want := base
			want.From, want.Decision = tc.peer, tc.want
			want.Port = uint16(mustAtoi(t, tc.port))
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("/debug/authz (-want +got):\n%s", diff)
			}
		})
	}

	// v6 target first address: the source address follows its family.
	n.SetConfig(func() *meshconfig.Config {
		c := checkConfig(nil)
		c.Workloads[2].IPs = []netip.Addr{ip6B, ipB}
		return c
	}())
	var got debug.Authz
	get(t, checkURL(srv.URL, "agents/client", "agents/server", "80"), &got)
	if got.From.Addr != ip6A || got.To.Addr != ip6B {
		t.Errorf("v6 target: from %s to %s, want %s to %s", got.From.Addr, got.To.Addr, ip6A, ip6B)
	}
	if got.Decision != (debug.AuthzDecision{Reason: policy.ReasonNoPolicyData, Rule: -1}) || got.MTLSMode != "" || len(got.Policies) != 0 {
		t.Errorf("no policy data: %+v", got)
	}

	for _, tc := range []struct {
		name, from, to, port string
		code                 int
		msg                  string
	}{
		{"other node", "agents/client", "agents/far", "80", 400, "to agents/far runs on node n2, ask that node's ztunnel"},
		{"unknown to", "agents/client", "agents/nope", "80", 404, "no workload agents/nope"},
		{"unknown from", "agents/nope", "agents/server", "80", 404, "no workload agents/nope"},
		{"bad port", "agents/client", "agents/server", "http", 400, "bad port"},
		{"port 0", "agents/client", "agents/server", "0", 400, "bad port"},
		{"port too big", "agents/client", "agents/server", "65536", 400, "bad port"},
		{"missing from", "", "agents/server", "80", 400, "missing from"},
		{"bad to", "agents/client", "server", "80", 400, "want namespace/pod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := getBody(t, checkURL(srv.URL, tc.from, tc.to, tc.port))
			if code != tc.code || !strings.Contains(body, tc.msg) {
				t.Errorf("status %d %q, want %d with %q", code, body, tc.code, tc.msg)
			}
		})
	}
}

// withPorts is r restricted to ports.
func withPorts(r policy.Rule, ports ...uint16) policy.Rule {
	r.Ports = onPorts(ports...).Ports
	return r
}

func checkURL(base, from, to, port string) string {
	return base + "/debug/authz?" + url.Values{"from": {from}, "to": {to}, "port": {port}}.Encode()
}

func getBody(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
