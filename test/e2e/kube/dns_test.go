package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// dnsEnv is a one-node lab with Service agents/data-validator, enrolled
// pods client and flooder in agents, and, outside the mesh, a pod
// "outside" and a pod running a resolver on :53 that answers every A with
// 192.0.2.53 and says who asked (meshlab app dns-upstream). The pods ask
// that resolver by its address: the lab has no resolv.conf of its own.
type dnsEnv struct {
	l                *lab.Lab
	client, flooder  *lab.Pod
	outside          *lab.Pod
	up4, up6         netip.AddrPort // the resolver
	vip              string         // data-validator's ClusterIP
	upstreamA        string
	fullName, svcDot string
}

func newDNSEnv(ctx context.Context, t *testing.T) *dnsEnv {
	t.Helper()
	l := newLab(t, 1)
	namespace(ctx, t, l, "agents", true, "validator", "client")
	namespace(ctx, t, l, "plain", false)
	startPod(ctx, t, l, echoPod("agents", "data-validator", "validator", "n1", map[string]string{"app": "data-validator"}), true)
	e := &dnsEnv{l: l, upstreamA: "192.0.2.53", fullName: "data-validator.agents.svc.cluster.local", svcDot: "data-validator.agents"}
	e.client = startPod(ctx, t, l, echoPod("agents", "client", "client", "n1", nil), true)
	e.flooder = startPod(ctx, t, l, echoPod("agents", "flooder", "client", "n1", nil), true)
	e.outside = startPod(ctx, t, l, echoPod("plain", "outside", "", "n1", nil), false)
	resolver := startPod(ctx, t, l, echoPod("plain", "resolver", "", "n1", nil), false)
	if _, err := resolver.Start(ctx, "dns-upstream", l.Bin("meshlab"), "app", "dns-upstream", "--listen", ":53"); err != nil {
		t.Fatal(err)
	}
	e.up4, e.up6 = netip.AddrPortFrom(resolver.IPv4(), 53), netip.AddrPortFrom(resolver.IPv6(), 53)
	svc, err := l.CreateService(ctx, "agents", "data-validator", map[string]string{"app": "data-validator"},
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(echoPort)})
	if err != nil {
		t.Fatal(err)
	}
	e.vip = svc.Spec.ClusterIP
	// The resolver is up and ztunnel has the Service once the client's
	// query for it is answered with the VIP.
	e.waitFor(ctx, t, e.client, "data-validator", func(r meshlab.DNSResult) bool {
		return r.Rcode == "NOERROR" && slices.Equal(r.Answers, []string{e.vip})
	})
	return e
}

// query runs meshlab app dns-query in p; a query that got no reply is
// returned with its Error set.
func (e *dnsEnv) query(ctx context.Context, p *lab.Pod, server netip.AddrPort, name, qtype string, sendto bool) meshlab.DNSResult {
	args := []string{e.l.Bin("meshlab"), "app", "dns-query", "--server", server.String(), "--name", name, "--type", qtype}
	if sendto {
		args = append(args, "--sendto")
	}
	out, err := p.Run(ctx, args...)
	var r meshlab.DNSResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		r.Error = fmt.Sprintf("%v (output %q: %v)", err, out, jerr)
	}
	return r
}

// waitFor asks name (A, at the resolver's IPv4) from p until ok accepts
// the result.
func (e *dnsEnv) waitFor(ctx context.Context, t *testing.T, p *lab.Pod, name string, ok func(meshlab.DNSResult) bool) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last meshlab.DNSResult
	for wctx.Err() == nil {
		if last = e.query(wctx, p, e.up4, name, "A", false); ok(last) {
			return
		}
		select {
		case <-wctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	dumpLog(t, e.l.DaemonLog(1, "ztunnel"))
	t.Fatalf("%s: %s A never as wanted; last %+v", p.Name, name, last)
}

// counters reads ztunnel_dns_queries_total by outcome.
func (e *dnsEnv) counters(ctx context.Context, t *testing.T) map[string]float64 {
	t.Helper()
	s, err := e.l.ZtunnelSeries(ctx, 1, "ztunnel_dns_queries_total")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for labels, v := range s {
		out[strings.Trim(strings.TrimPrefix(labels, "outcome="), `"`)] = v
	}
	return out
}

func total(c map[string]float64) (n float64) {
	for _, v := range c {
		n += v
	}
	return n
}

// TestDNS: an enrolled pod's queries for Service names (short, svc.ns and
// full; connected and unconnected sockets; to an IPv4 and an IPv6
// resolver) are answered with the Service's VIP by ztunnel's proxy, with
// the resolver's address as the reply's source; AAAA is NODATA (the lab's
// Service CIDR is IPv4 only); other names go to the resolver the pod
// asked, from the pod's address; a pod outside the mesh reaches the
// resolver itself and the proxy does not count its queries.
func TestDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newDNSEnv(ctx, t)

	for _, up := range []netip.AddrPort{e.up4, e.up6} {
		for _, name := range []string{"data-validator", e.svcDot, e.fullName, strings.ToUpper(e.fullName) + "."} {
			for _, sendto := range []bool{false, true} {
				r := e.query(ctx, e.client, up, name, "A", sendto)
				if r.Error != "" || r.Rcode != "NOERROR" || !slices.Equal(r.Answers, []string{e.vip}) || r.From != up.String() {
					t.Errorf("client A %s via %s (sendto %v): %+v; want %s from %s", name, up, sendto, r, e.vip, up)
				}
				r = e.query(ctx, e.client, up, name, "AAAA", sendto)
				if r.Error != "" || r.Rcode != "NOERROR" || len(r.Answers) != 0 || r.From != up.String() {
					t.Errorf("client AAAA %s via %s (sendto %v): %+v; want NODATA from %s", name, up, sendto, r, up)
				}
			}
		}
	}

	before := e.counters(ctx, t)
	for _, up := range []netip.AddrPort{e.up4, e.up6} {
		r := e.query(ctx, e.client, up, "www.example.com", "A", false)
		want := "from=" + e.client.IPv4().String()
		if up.Addr().Is6() {
			want = "from=" + e.client.IPv6().String()
		}
		if r.Rcode != "NOERROR" || !slices.Equal(r.Answers, []string{e.upstreamA}) || !slices.Equal(r.TXT, []string{want}) || r.From != up.String() {
			t.Errorf("client www.example.com via %s: %+v; want the resolver's %s, %s", up, r, e.upstreamA, want)
		}
	}
	after := e.counters(ctx, t)
	if d := after["forwarded"] - before["forwarded"]; d != 2 {
		t.Errorf("forwarded counter moved by %v, want 2", d)
	}

	before = after
	for _, name := range []string{"data-validator", e.fullName} {
		r := e.query(ctx, e.outside, e.up4, name, "A", false)
		if r.Rcode != "NOERROR" || !slices.Equal(r.Answers, []string{e.upstreamA}) ||
			!slices.Equal(r.TXT, []string{"from=" + e.outside.IPv4().String()}) {
			t.Errorf("outside %s: %+v; want the resolver's own answer to the pod's address", name, r)
		}
	}
	if after := e.counters(ctx, t); total(after) != total(before) {
		t.Errorf("proxy counters moved for a pod outside the mesh: %v -> %v", before, after)
	}
}

// TestDNSFlood: one pod floods its proxy with garbage, cut queries and
// queries to forward; another pod's lookups (answered and forwarded) all
// succeed meanwhile, the garbage is counted, and ztunnel is not
// restarted.
func TestDNSFlood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newDNSEnv(ctx, t)
	before := e.counters(ctx, t)
	restarts := e.l.Restarts(lab.ZtunnelName(1))
	flood, err := e.flooder.Start(ctx, "dns-flood", e.l.Bin("meshlab"), "app", "dns-flood", "--server", e.up4.String(), "--duration", "20s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flood.Stop() })
	// Wait until the flood is under way.
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	for wctx.Err() == nil && e.counters(ctx, t)["formerr"] < before["formerr"]+1000 {
		time.Sleep(100 * time.Millisecond)
	}
	if c := e.counters(ctx, t); c["formerr"] < before["formerr"]+1000 {
		t.Fatalf("flood not under way: %v", c)
	}
	start := time.Now()
	var worst time.Duration
	for i := range 20 {
		name, want := "data-validator", e.vip
		if i%2 == 1 {
			name, want = fmt.Sprintf("calm-%d.example.com", i), e.upstreamA
		}
		t0 := time.Now()
		r := e.query(ctx, e.client, e.up4, name, "A", i%4 < 2)
		worst = max(worst, time.Since(t0))
		if r.Error != "" || !slices.Equal(r.Answers, []string{want}) {
			t.Errorf("client %s during the flood: %+v; want %s", name, r, want)
		}
	}
	t.Logf("20 lookups during the flood in %s, slowest %s", time.Since(start).Round(time.Millisecond), worst.Round(time.Millisecond))
	select {
	case <-flood.Done():
		t.Errorf("the flood ended (%s) before the other pod's lookups did", flood.ExitStatus())
	default:
	}
	after := e.counters(ctx, t)
	t.Logf("proxy counters during the test: %v -> %v", before, after)
	for _, o := range []string{"formerr", "dropped"} {
		if after[o] <= before[o] {
			t.Errorf("%s counter did not move: %v -> %v", o, before[o], after[o])
		}
	}
	if n := e.l.Restarts(lab.ZtunnelName(1)); n != restarts {
		t.Errorf("ztunnel restarted %d times during the flood", n-restarts)
	}
}
