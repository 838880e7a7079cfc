package dnsproxy

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

func testIndex() *meshconfig.Index {
	return meshconfig.NewIndex(&meshconfig.Config{Services: []meshconfig.Service{
		{Name: "data-validator", Namespace: "agents", VIPs: []netip.Addr{
			netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::10")}},
		{Name: "v4only", Namespace: "agents", VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.11")}},
		{Name: "headless", Namespace: "agents"},
		{Name: "db", Namespace: "agents", ExternalName: "db.example.com"},
	}})
}

func query(name string, qtype uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

func TestDecide(t *testing.T) {
	idx := testIndex()
	tests := []struct {
		name    string
		pkt     []byte
		outcome string // "" = forward
		rcode   int
		answers []string // the addresses answered
		soa     bool
	}{
		{"A by short name", query("data-validator.", dns.TypeA), Answered, dns.RcodeSuccess, []string{"10.96.0.10"}, false},
		{"AAAA by short name", query("data-validator.", dns.TypeAAAA), Answered, dns.RcodeSuccess, []string{"fd00:96::10"}, false},
		{"A by svc.ns", query("data-validator.agents.", dns.TypeA), Answered, dns.RcodeSuccess, []string{"10.96.0.10"}, false},
		{"AAAA by full name", query("data-validator.agents.svc.cluster.local.", dns.TypeAAAA), Answered, dns.RcodeSuccess, []string{"fd00:96::10"}, false},
		{"mixed case", query("Data-Validator.AGENTS.svc.", dns.TypeA), Answered, dns.RcodeSuccess, []string{"10.96.0.10"}, false},
		{"AAAA of a v4-only Service: NODATA", query("v4only.agents.", dns.TypeAAAA), Answered, dns.RcodeSuccess, nil, true},
		{"headless: forwarded", query("headless.agents.svc.cluster.local.", dns.TypeA), "", 0, nil, false},
		{"no such Service: NXDOMAIN", query("nope.agents.svc.cluster.local.", dns.TypeA), NXDomain, dns.RcodeNameError, nil, true},
		{"search path try (web.web with ndots:5): NXDOMAIN", query("data-validator.agents.agents.svc.cluster.local.", dns.TypeAAAA), NXDomain, dns.RcodeNameError, nil, true},
		{"record under a Service that does not exist: NXDOMAIN", query("_http._tcp.nope.agents.svc.cluster.local.", dns.TypeSRV), NXDomain, dns.RcodeNameError, nil, true},
		{"outside the svc and pod trees: NXDOMAIN", query("example.com.cluster.local.", dns.TypeA), NXDomain, dns.RcodeNameError, nil, true},
		{"pod of a headless Service: forwarded", query("pod-0.headless.agents.svc.cluster.local.", dns.TypeA), "", 0, nil, false},
		{"SRV of a Service: forwarded", query("_http._tcp.data-validator.agents.svc.cluster.local.", dns.TypeSRV), "", 0, nil, false},
		{"ExternalName Service: forwarded", query("db.agents.svc.cluster.local.", dns.TypeA), "", 0, nil, false},
		{"a namespace: forwarded", query("agents.svc.cluster.local.", dns.TypeA), "", 0, nil, false},
		{"pod record: forwarded", query("10-0-1-5.agents.pod.cluster.local.", dns.TypeA), "", 0, nil, false},
		{"dns-version: forwarded", query("dns-version.cluster.local.", dns.TypeTXT), "", 0, nil, false},
		{"other name: forwarded", query("example.com.", dns.TypeA), "", 0, nil, false},
		{"other type of a Service: forwarded", query("data-validator.agents.svc.cluster.local.", dns.TypeSRV), "", 0, nil, false},
		{"short name of another Service", query("v4only.", dns.TypeA), Answered, dns.RcodeSuccess, []string{"10.96.0.11"}, false},
		{"too short: dropped", []byte{1, 2, 3}, Dropped, 0, nil, false},
		{"header only, a response: dropped", []byte{0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0}, Dropped, 0, nil, false},
		{"truncated question: FORMERR", append([]byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, 3, 'a', 'b'), FormErr, dns.RcodeFormatError, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := decide(tt.pkt, idx, "agents", "cluster.local")
			if v.outcome != tt.outcome {
				t.Fatalf("outcome = %q, want %q", v.outcome, tt.outcome)
			}
			if tt.outcome == "" || tt.outcome == Dropped {
				if v.reply != nil {
					t.Errorf("reply %x, want none", v.reply)
				}
				return
			}
			r := new(dns.Msg)
			if err := r.Unpack(v.reply); err != nil {
				t.Fatalf("reply: %v", err)
			}
			var q dns.Msg
			q.Unpack(tt.pkt) //nolint:errcheck // the header is enough
			if !r.Response || r.Id != q.Id || r.Rcode != tt.rcode {
				t.Errorf("reply id %d response %v rcode %d, want id %d rcode %d", r.Id, r.Response, r.Rcode, q.Id, tt.rcode)
			}
			var got []string
			for _, rr := range r.Answer {
				if rr.Header().Name != q.Question[0].Name || rr.Header().Ttl != ttl {
					t.Errorf("answer %v: want owner %q, ttl %d", rr, q.Question[0].Name, ttl)
				}
				switch a := rr.(type) {
				case *dns.A:
					got = append(got, a.A.String())
				case *dns.AAAA:
					got = append(got, a.AAAA.String())
				}
			}
			if !slices.Equal(got, tt.answers) {
				t.Errorf("answers %v, want %v", got, tt.answers)
			}
			if hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA; hasSOA != tt.soa {
				t.Errorf("authority %v, want SOA: %v", r.Ns, tt.soa)
			}
		})
	}
}

// TestDecideSearchPath: a short name is the pod namespace's.
func TestDecideSearchPath(t *testing.T) {
	if v := decide(query("data-validator.", dns.TypeA), testIndex(), "shop", "cluster.local"); v.outcome != "" {
		t.Errorf("data-validator from a pod in shop: outcome %q, want forwarded (agents/data-validator is not shop's)", v.outcome)
	}
	if v := decide(query("data-validator.agents.", dns.TypeA), testIndex(), "shop", "cluster.local"); v.outcome != Answered {
		t.Errorf("data-validator.agents from a pod in shop: outcome %q, want answered", v.outcome)
	}
}

func TestDecideKeepsEDNS(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("data-validator.agents.", dns.TypeA)
	m.SetEdns0(1232, false)
	b, _ := m.Pack()
	v := decide(b, testIndex(), "agents", "cluster.local")
	r := new(dns.Msg)
	if err := r.Unpack(v.reply); err != nil {
		t.Fatal(err)
	}
	if o := r.IsEdns0(); o == nil || o.UDPSize() != 1232 {
		t.Errorf("reply EDNS = %v, want UDP size 1232", o)
	}
}

func TestReplyMatches(t *testing.T) {
	q := query("example.com.", dns.TypeA)
	m := new(dns.Msg)
	m.Unpack(q) //nolint:errcheck
	r := new(dns.Msg)
	r.SetReply(m)
	good, _ := r.Pack()
	r.Id++
	other, _ := r.Pack()
	for _, tt := range []struct {
		reply []byte
		want  bool
	}{{good, true}, {other, false}, {q, false}, {good[:5], false}} {
		if got := replyMatches(q, tt.reply); got != tt.want {
			t.Errorf("replyMatches(%x) = %v, want %v", tt.reply, got, tt.want)
		}
	}
}
