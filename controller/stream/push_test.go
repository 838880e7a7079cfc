package stream

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/view"
)

// decode decodes p's messages and assembles them as a client does: chunks
// in order, a later workload replacing an earlier one with its UID.
func decode(t *testing.T, p *Push) *configapi.ConfigResponse {
	t.Helper()
	c := encoding.GetCodec(configapi.CodecName)
	var out *configapi.ConfigResponse
	for i, m := range p.Msgs {
		b, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var r configapi.ConfigResponse
		if err := c.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if r.More != (i < len(p.Msgs)-1) {
			t.Fatalf("message %d of %d: More=%v", i, len(p.Msgs), r.More)
		}
		if out == nil {
			out = &r
			continue
		}
		if r.Full {
			t.Fatalf("message %d: Full set on a later chunk", i)
		}
		for _, w := range r.Workloads {
			out.Workloads = slices.DeleteFunc(out.Workloads, func(x meshconfig.Workload) bool { return x.UID == w.UID })
			out.Workloads = append(out.Workloads, w)
		}
		out.Services = append(out.Services, r.Services...)
		out.RemovedWorkloads = append(out.RemovedWorkloads, r.RemovedWorkloads...)
		out.RemovedServices = append(out.RemovedServices, r.RemovedServices...)
		out.Policies = append(out.Policies, r.Policies...)
		out.Version = r.Version
	}
	slices.SortFunc(out.Workloads, func(a, b meshconfig.Workload) int { return strings.Compare(a.UID, b.UID) })
	out.More = false
	return out
}

// bigSnap is n workloads on nodes n0..n(nodes-1), every third with Authz
// referring to a policy (none on n2), and services with endpoints.
func bigSnap(n, nodes, services int, port uint16) *view.Snapshot {
	var ws []meshconfig.Workload
	for i := range n {
		x := w(fmt.Sprintf("u%05d", i), fmt.Sprintf("n%d", i%nodes), netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String())
		if i%5 == 0 && i%nodes != 2 { // none on n2
			x = withAuthz(x, fmt.Sprintf("p%d", (i/5)%2))
		}
		ws = append(ws, x)
	}
	s := snapPol([]policy.Policy{pol("p0", port), pol("p1", 2)}, ws...)
	s.Services = nil
	for i := range services {
		svc := meshconfig.Service{Name: fmt.Sprintf("s%03d", i), Namespace: "ns", Ports: []meshconfig.ServicePort{{Port: 80}}}
		for j := range 3 {
			svc.Endpoints = append(svc.Endpoints, meshconfig.Endpoint{WorkloadUID: ws[(i*3+j)%n].UID, IPs: ws[(i*3+j)%n].IPs, Ready: true})
		}
		s.Services = append(s.Services, svc)
	}
	return s
}

// TestPushMatchesNext: what the server sends (NextPush: shared chunks plus
// the node's own chunk, or a delta) assembles into exactly the response
// Next describes, for every node, for a full view and for deltas; the
// shared chunks and a node-independent delta are encoded once for all
// nodes, the node's own chunk once per node.
func TestPushMatchesNext(t *testing.T) {
	h := NewHub(All)
	encodes := map[string]int{}
	h.SetEncodeStats(func(kind string, n int) { encodes[kind] += n })
	nodes := []string{"n0", "n1", "n2"}
	for _, n := range nodes {
		defer h.Subscribe(n)()
	}
	h.Update(bigSnap(2500, 3, 250, 1))
	curs := map[string]Cursor{}
	var shared *configapi.Encoded
	for _, n := range nodes {
		want, _, _, _ := h.Next(n, Cursor{})
		p, cur, _, _, err := h.NextPush(n, Cursor{})
		if err != nil {
			t.Fatal(err)
		}
		curs[n] = cur
		// 3 workload chunks, 3 service chunks, the node's own.
		if !p.Full || len(p.Msgs) != 7 || p.Version != want.Version {
			t.Fatalf("%s: push full=%v msgs=%d version=%d, want a full view in 7 messages, version %d", n, p.Full, len(p.Msgs), p.Version, want.Version)
		}
		if got := decode(t, p); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: assembled push differs from Next:\n got %d workloads %d services %v policies\nwant %d workloads %d services %v policies",
				n, len(got.Workloads), len(got.Services), policyKeys(got), len(want.Workloads), len(want.Services), policyKeys(want))
		}
		if shared != nil && p.Msgs[0] != shared {
			t.Errorf("%s: first shared chunk encoded again", n)
		}
		shared = p.Msgs[0]
	}
	if encodes["shared"] != 6 || encodes["node"] != 3 {
		t.Errorf("encodings %v, want 6 shared chunks once and one own chunk per node", encodes)
	}
	// A service change: one encoding for all three nodes.
	s := bigSnap(2500, 3, 250, 1)
	s.Services[7].Ports = append(s.Services[7].Ports, meshconfig.ServicePort{Port: 81})
	h.Update(s)
	var delta *configapi.Encoded
	for _, n := range nodes {
		want, _, _, _ := h.Next(n, curs[n])
		p, cur, _, _, err := h.NextPush(n, curs[n])
		if err != nil || p == nil || p.Full || len(p.Msgs) != 1 {
			t.Fatalf("%s: push %+v, %v; want one delta message", n, p, err)
		}
		if got := decode(t, p); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: delta %+v, want %+v", n, got, want)
		}
		if delta != nil && p.Msgs[0] != delta {
			t.Errorf("%s: node-independent delta encoded again", n)
		}
		delta, curs[n] = p.Msgs[0], cur
	}
	if encodes["delta"] != 1 {
		t.Errorf("delta encodings %d, want 1", encodes["delta"])
	}
	// A policy body change: only the nodes whose workloads refer to p0
	// get it, each in their own encoding.
	s = bigSnap(2500, 3, 250, 9)
	s.Services[7].Ports = append(s.Services[7].Ports, meshconfig.ServicePort{Port: 81})
	h.Update(s)
	if p, _, _, _, err := h.NextPush("n2", curs["n2"]); p != nil || err != nil {
		t.Fatalf("n2 (no workload refers to p0): push %+v, %v; want nothing", p, err)
	}
	for _, n := range nodes[:2] {
		want, _, _, _ := h.Next(n, curs[n])
		p, _, _, _, err := h.NextPush(n, curs[n])
		if err != nil || p == nil || len(p.Msgs) != 1 {
			t.Fatalf("%s: push %+v, %v; want one delta message", n, p, err)
		}
		if got := decode(t, p); !reflect.DeepEqual(got, want) || !slices.Equal(policyKeys(got), []string{"ns/p0"}) {
			t.Fatalf("%s: delta policies %v, want %v = [ns/p0]", n, policyKeys(got), policyKeys(want))
		}
	}
	if encodes["delta"] != 3 {
		t.Errorf("delta encodings %d, want one per node for a node-specific delta", encodes["delta"])
	}
}

// TestPushEmptyView: a view without workloads or services is still one
// full chunk and the node's own.
func TestPushEmptyView(t *testing.T) {
	h := NewHub(All)
	defer h.Subscribe("n1")()
	h.Update(&view.Snapshot{TrustDomain: "td"})
	p, _, _, _, err := h.NextPush("n1", Cursor{})
	if err != nil || p == nil || !p.Full || len(p.Msgs) != 2 {
		t.Fatalf("push %+v, %v; want a full view in 2 messages", p, err)
	}
	if r := decode(t, p); !r.Full || r.TrustDomain != "td" || len(r.Workloads) != 0 {
		t.Fatalf("assembled %+v", r)
	}
}

// TestHubWorkload: the debug lookup finds a workload by namespace/name
// with its labels and its policies resolved, and nothing before the first
// view or for an unknown name.
func TestHubWorkload(t *testing.T) {
	h := NewHub(All)
	if _, _, ok := h.Workload("ns", "a"); ok {
		t.Fatal("found a workload before the first view")
	}
	a := withAuthz(w("a", "n1", "10.0.0.1"), "p")
	a.Labels = map[string]string{"app": "a"}
	h.Update(snapPol([]policy.Policy{pol("p", 80)}, a, w("b", "n2", "10.0.0.2")))
	got, td, ok := h.Workload("ns", "a")
	if !ok || td != "td" || got.Labels["app"] != "a" || got.Authz == nil || len(got.Authz.PolicyRefs) != 0 ||
		len(got.Authz.Policies) != 1 || got.Authz.Policies[0].Rules[0].Ports[0].From != 80 {
		t.Fatalf("Workload(ns, a) = %+v %q %v, want a with its labels and policy p resolved", got, td, ok)
	}
	if _, _, ok := h.Workload("ns", "nope"); ok {
		t.Fatal("found ns/nope")
	}
}
