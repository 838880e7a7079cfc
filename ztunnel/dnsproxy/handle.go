package dnsproxy

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// ttl is the TTL of the answers from the mesh config (CoreDNS's default
// for Services).
const ttl = 5

// headerLen is the size of a DNS header.
const headerLen = 12

// verdict is what to do with one datagram from a pod.
type verdict struct {
	outcome string // Answered, FormErr, Dropped; "" = forward it
	reply   []byte // the answer to send (nil with Dropped or forward)
}

// decide handles one datagram from a pod in namespace podNS with the
// config in idx: a question for a Service with VIPs is answered,
// anything else that is a query is to be forwarded, a malformed query
// whose header reads gets FORMERR, the rest is dropped. It never panics on
// any input.
func decide(pkt []byte, idx *meshconfig.Index, podNS, domain string) verdict {
	if len(pkt) < headerLen {
		return verdict{outcome: Dropped}
	}
	q := new(dns.Msg)
	if err := q.Unpack(pkt); err != nil {
		// Unpack read the header before it failed.
		if q.Response {
			return verdict{outcome: Dropped}
		}
		return pack(formErr(q), FormErr)
	}
	if q.Response {
		return verdict{outcome: Dropped} // never answer an answer
	}
	if svc := service(q, idx, podNS, domain); svc != nil {
		return pack(answer(q, svc, domain), Answered)
	}
	if absent(q, idx, domain) {
		return pack(nxdomain(q, domain), NXDomain)
	}
	return verdict{}
}

// absent reports whether q asks about a name the cluster DNS would not
// have, by the mesh config, which holds every Service of the cluster
// (ExternalName ones too): a name of the cluster domain outside its svc
// and pod trees, or one of the svc tree whose Service does not exist
// (svc.ns.svc.<domain>), or that is not a pod record of a headless Service
// (host.svc.ns.svc.<domain>), or a record under a Service that does not
// exist. Such names are what the search path tries first
// (web.web.web.svc.cluster.local for "web.web" with ndots:5): answering
// them here spares a round trip to the cluster DNS, as CoreDNS would
// answer. Anything else of the svc and pod trees is the cluster DNS's.
func absent(q *dns.Msg, idx *meshconfig.Index, domain string) bool {
	if q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 || q.Question[0].Qclass != dns.ClassINET {
		return false
	}
	name := strings.ToLower(dns.Fqdn(q.Question[0].Name))
	rest, in := strings.CutSuffix(name, "."+domain+".")
	if !in {
		return false
	}
	l := dns.SplitDomainName(rest)
	if len(l) == 0 {
		return false
	}
	switch last := l[len(l)-1]; {
	case last == "pod" || (len(l) == 1 && last == "dns-version"):
		return false
	case last != "svc":
		return true
	case len(l) < 3:
		return false // ns.svc.<domain>: a namespace, the cluster DNS's
	}
	ns, svcName := l[len(l)-2], l[len(l)-3]
	svc := idx.Service(ns, svcName)
	switch {
	case svc == nil:
		return true
	case len(l) == 4 && !strings.HasPrefix(l[0], "_"):
		// host.svc.ns.svc: only a headless Service's pods have these.
		return len(svc.VIPs) > 0 && svc.ExternalName == ""
	}
	return false
}

// nxdomain is the authoritative "no such name" answer to q, with the
// cluster domain's SOA.
func nxdomain(q *dns.Msg, domain string) *dns.Msg {
	r := new(dns.Msg)
	r.SetRcode(q, dns.RcodeNameError)
	r.Authoritative = true
	r.RecursionAvailable = true
	r.Ns = []dns.RR{soa(domain)}
	if o := q.IsEdns0(); o != nil {
		r.SetEdns0(max(o.UDPSize(), dns.MinMsgSize), false)
	}
	return r
}

// service is the Service with VIPs that q asks A or AAAA records of, or
// nil. Headless Services (no VIPs) are left to the upstream (the cluster
// DNS answers them with the pods' addresses), and so are names of the
// cluster domain the config does not know.
func service(q *dns.Msg, idx *meshconfig.Index, podNS, domain string) *meshconfig.Service {
	if q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		return nil
	}
	qq := q.Question[0]
	if qq.Qclass != dns.ClassINET || (qq.Qtype != dns.TypeA && qq.Qtype != dns.TypeAAAA) {
		return nil
	}
	ns, name, ok := serviceName(qq.Name, podNS, domain)
	if !ok {
		return nil
	}
	svc := idx.Service(ns, name)
	if svc == nil || len(svc.VIPs) == 0 || svc.ExternalName != "" {
		return nil
	}
	return svc
}

// answer answers q's A or AAAA question with svc's VIPs of that family;
// none is NODATA (NOERROR with the domain's SOA, no answers).
func answer(q *dns.Msg, svc *meshconfig.Service, domain string) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	r.Authoritative = true
	r.RecursionAvailable = true
	qq := q.Question[0]
	hdr := dns.RR_Header{Name: qq.Name, Rrtype: qq.Qtype, Class: dns.ClassINET, Ttl: ttl}
	for _, vip := range svc.VIPs {
		vip = vip.Unmap()
		switch {
		case qq.Qtype == dns.TypeA && vip.Is4():
			r.Answer = append(r.Answer, &dns.A{Hdr: hdr, A: vip.AsSlice()})
		case qq.Qtype == dns.TypeAAAA && vip.Is6():
			r.Answer = append(r.Answer, &dns.AAAA{Hdr: hdr, AAAA: vip.AsSlice()})
		}
	}
	if len(r.Answer) == 0 {
		r.Ns = []dns.RR{soa(domain)}
	}
	size := dns.MinMsgSize
	if o := q.IsEdns0(); o != nil {
		size = max(int(o.UDPSize()), dns.MinMsgSize)
		r.SetEdns0(uint16(size), false)
	}
	r.Truncate(size)
	return r
}

// soa is the cluster domain's SOA, as negative answers carry it (its
// minimum is the negative TTL).
func soa(domain string) dns.RR {
	zone := dns.Fqdn(domain)
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:  "ns.dns." + zone, Mbox: "hostmaster." + zone,
		Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl,
	}
}

// formErr is the FORMERR answer to a query whose header q holds.
func formErr(q *dns.Msg) *dns.Msg {
	r := new(dns.Msg)
	r.Id, r.Opcode, r.Response, r.Rcode = q.Id, q.Opcode, true, dns.RcodeFormatError
	return r
}

// servFail is the SERVFAIL answer to the query pkt (which decide
// accepted).
func servFail(pkt []byte) []byte {
	q := new(dns.Msg)
	if q.Unpack(pkt) != nil {
		return nil
	}
	r := new(dns.Msg)
	r.SetRcode(q, dns.RcodeServerFailure)
	r.RecursionAvailable = true
	b, _ := r.Pack()
	return b
}

func pack(m *dns.Msg, outcome string) verdict {
	b, err := m.Pack()
	if err != nil {
		return verdict{outcome: Dropped}
	}
	return verdict{outcome: outcome, reply: b}
}

// replyMatches reports whether reply, from the upstream, answers query:
// a response with the query's id. Only the headers are compared (Unpack
// reads the header before the body); the upstream's reply is relayed as
// it came.
func replyMatches(query, reply []byte) bool {
	if len(query) < headerLen || len(reply) < headerLen {
		return false
	}
	var q, r dns.Msg
	q.Unpack(query) //nolint:errcheck // only the header is used
	r.Unpack(reply) //nolint:errcheck // likewise
	return r.Response && r.Id == q.Id
}

// clientAddr unmaps a v4-mapped client address.
func clientAddr(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
