package dnsproxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

// loopNet is a Net on the test's own loopback: the proxy's sockets take
// any free port.
type loopNet struct{}

func (loopNet) ListenUDP(network, addr string) (*net.UDPConn, error) {
	if network != "udp" || addr != fmt.Sprintf(":%d", mesh.DNSPort) {
		return nil, fmt.Errorf("listen %s %s: want the dual-stack socket at the DNS port", network, addr)
	}
	return net.ListenUDP(network, &net.UDPAddr{IP: net.IPv6unspecified})
}

func (loopNet) DialUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
}

// upstreams maps a netns cookie to its upstream.
type upstreams map[uint64]netip.AddrPort

func (u upstreams) LookupDNSUpstream(cookie uint64, _ netip.AddrPort) (netip.AddrPort, error) {
	if a, ok := u[cookie]; ok {
		return a, nil
	}
	return netip.AddrPort{}, fmt.Errorf("cookie %d: none", cookie)
}

// upstream runs a DNS server answering every A question with 192.0.2.1,
// after release is closed when release is not nil.
func upstream(t *testing.T, release <-chan struct{}) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		if release != nil {
			<-release
		}
		r := new(dns.Msg)
		r.SetReply(q)
		r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A: net.ParseIP("192.0.2.1")}}
		w.WriteMsg(r) //nolint:errcheck // the test's client times out
	})}
	wg.Go(func() { srv.ActivateAndServe() }) //nolint:errcheck // ends with Shutdown
	t.Cleanup(func() { srv.Shutdown(); wg.Wait() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func newProxy(t *testing.T, ups upstreams, maxForwards int) (*Proxy, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	p := New(Options{Index: testIndex, Upstreams: ups, Registry: reg, Timeout: time.Second, MaxForwards: maxForwards})
	return p, reg
}

func startServer(t *testing.T, p *Proxy, pod Pod) *Server {
	t.Helper()
	s, err := p.Start(pod, loopNet{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func exchange(t *testing.T, to netip.AddrPort, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, to.String())
	if err != nil {
		t.Fatalf("%s %s via %s: %v", name, dns.TypeToString[qtype], to, err)
	}
	return r
}

func count(reg *prometheus.Registry, outcome string) int {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "ztunnel_dns_queries_total" && m.GetLabel()[0].GetValue() == outcome {
				return int(m.GetCounter().GetValue())
			}
		}
	}
	return -1
}

func TestServer(t *testing.T) {
	up := upstream(t, nil)
	p, reg := newProxy(t, upstreams{1: up}, 0)
	s := startServer(t, p, Pod{Namespace: "agents", Name: "a", NetnsCookie: 1})
	addrs := s.Addrs()
	if len(addrs) == 0 {
		t.Fatal("no proxy sockets")
	}
	for _, to := range addrs {
		if r := exchange(t, to, "data-validator.", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.96.0.10" {
			t.Errorf("via %s: data-validator A = %v", to, r.Answer)
		}
		if r := exchange(t, to, "data-validator.agents.svc.cluster.local.", dns.TypeAAAA); len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "fd00:96::10" {
			t.Errorf("via %s: full name AAAA = %v", to, r.Answer)
		}
		if r := exchange(t, to, "example.com.", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
			t.Errorf("via %s: example.com A (forwarded) = %v", to, r.Answer)
		}
	}
	n := len(addrs)
	if a, f := count(reg, Answered), count(reg, Forwarded); a != 2*n || f != n {
		t.Errorf("answered %d, forwarded %d; want %d, %d", a, f, 2*n, n)
	}
	if got := promtest.CollectAndCount(reg, "ztunnel_dns_queries_total"); got != len(outcomes) {
		t.Errorf("%d series, want one per outcome (%d)", got, len(outcomes))
	}
}

func TestServerUpstreamFailure(t *testing.T) {
	// A port nothing listens on: the forward is refused (ICMP).
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	p, reg := newProxy(t, upstreams{1: dead}, 0)
	s1 := startServer(t, p, Pod{Namespace: "agents", Name: "a", NetnsCookie: 1})
	s2 := startServer(t, p, Pod{Namespace: "agents", Name: "b", NetnsCookie: 2}) // no upstream recorded
	for _, s := range []*Server{s1, s2} {
		if r := exchange(t, s.Addrs()[0], "example.com.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
		}
	}
	if got := count(reg, UpstreamError); got != 2 {
		t.Errorf("upstream_error = %d, want 2", got)
	}
}

func TestServerMalformed(t *testing.T) {
	p, reg := newProxy(t, upstreams{}, 0)
	s := startServer(t, p, Pod{Namespace: "agents", Name: "a", NetnsCookie: 1})
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.Addrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, junk := range [][]byte{{1}, {1, 2, 3, 4, 5}, {0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0}} { // too short; a "response"
		c.Write(junk) //nolint:errcheck
	}
	c.Write([]byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, 'x'}) //nolint:errcheck // a cut question
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf[:n]); err != nil || r.Id != 0x1234 || r.Rcode != dns.RcodeFormatError {
		t.Fatalf("reply %v (%v), want FORMERR to id 0x1234", r, err)
	}
	// The proxy still answers.
	exchange(t, s.Addrs()[0], "data-validator.", dns.TypeA)
	if d, f := count(reg, Dropped), count(reg, FormErr); d != 3 || f != 1 {
		t.Errorf("dropped %d, formerr %d; want 3, 1", d, f)
	}
}

// TestServerFloodIsolation: a pod whose forwards are all waiting loses
// the queries beyond its slots; another pod is answered meanwhile, and
// Close ends the waiting forwards.
func TestServerFloodIsolation(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	slow, fast := upstream(t, release), upstream(t, nil)
	p, reg := newProxy(t, upstreams{1: slow, 2: fast}, 4)
	flooded := startServer(t, p, Pod{Namespace: "agents", Name: "flooder", NetnsCookie: 1})
	calm := startServer(t, p, Pod{Namespace: "agents", Name: "calm", NetnsCookie: 2})
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(flooded.Addrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const flood = 200
	for i := range flood {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("q%d.example.com.", i), dns.TypeA)
		b, _ := m.Pack()
		c.Write(b) //nolint:errcheck
	}
	deadline := time.Now().Add(5 * time.Second)
	for count(reg, Dropped) < flood-4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := count(reg, Dropped); got != flood-4 {
		t.Errorf("dropped %d, want %d (all beyond the 4 slots)", got, flood-4)
	}
	if r := exchange(t, calm.Addrs()[0], "example.org.", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("calm pod's forward: %v", r)
	}
	if r := exchange(t, flooded.Addrs()[0], "data-validator.", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("flooded pod's Service answer: %v", r)
	}
	start := time.Now()
	if err := flooded.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %s with forwards waiting", d)
	}
	if err := flooded.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestServerAnswersOnlyThePod: the socket listens on every address of the
// pod netns, so anyone who reaches the pod reaches it; a query from an
// address that is neither loopback nor the pod's own gets no answer and
// counts as dropped, one from the pod's own address is answered. In a
// netns of its own with 198.18.5.1 on lo: a query to that address comes
// from it.
func TestServerAnswersOnlyThePod(t *testing.T) {
	testutil.RequireRoot(t, "a network namespace with an address that is not loopback")
	ns := testutil.NewNetns(t)
	own := netip.MustParseAddr("198.18.5.1")
	testutil.AddrOnLo(t, ns, own)
	query := func(to netip.AddrPort) (*dns.Msg, error) {
		var r *dns.Msg
		err := netns.Do(int(ns.Fd()), func() (err error) {
			m := new(dns.Msg)
			m.SetQuestion("data-validator.", dns.TypeA)
			r, _, err = (&dns.Client{Timeout: 300 * time.Millisecond}).Exchange(m, to.String())
			return err
		})
		return r, err
	}
	p, reg := newProxy(t, upstreams{}, 0)
	start := func(pod Pod) *Server {
		s, err := p.Start(pod, nsNet{ns})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	outside := start(Pod{Namespace: "agents", Name: "a", NetnsCookie: 1})
	if r, err := query(netip.AddrPortFrom(own, outside.Addrs()[0].Port())); err == nil {
		t.Fatalf("query from %s (not the pod's) answered: %v", own, r.Answer)
	}
	if got := count(reg, Dropped); got != 1 {
		t.Errorf("dropped = %d, want 1", got)
	}
	pod := start(Pod{Namespace: "agents", Name: "b", NetnsCookie: 2, IPs: []netip.Addr{own}})
	if r, err := query(netip.AddrPortFrom(own, pod.Addrs()[0].Port())); err != nil || len(r.Answer) != 1 {
		t.Errorf("query from the pod's own address %s: %v, %v", own, r, err)
	}
}

// nsNet is a Net in the netns ns: the proxy's socket on any free port.
type nsNet struct{ ns *os.File }

func (n nsNet) ListenUDP(network, _ string) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := netns.Do(int(n.ns.Fd()), func() (err error) {
		c, err = net.ListenUDP(network, &net.UDPAddr{IP: net.IPv6unspecified})
		return err
	})
	return c, err
}

func (n nsNet) DialUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	return nil, fmt.Errorf("no upstream in this test (%s)", addr)
}
