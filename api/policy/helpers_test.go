package policy

import (
	"net/netip"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

const td = "cluster.local"

var (
	allow = ActionAllow
	deny  = ActionDeny

	webID   = spiffe.New(td, "shop", "web")
	adminID = spiffe.New(td, "ops", "admin")
	otherID = spiffe.New(td, "other", "bot")
)

func pol(name string, a Action, rules ...Rule) Policy {
	for i := range rules {
		rules[i].Index = i
	}
	return Policy{Namespace: "shop", Name: name, Action: a, Rules: rules}
}

func from(peers ...Peer) Rule { return Rule{From: peers} }

func (r Rule) on(ports ...PortRange) Rule { r.Ports = ports; return r }

func (r Rule) l7() Rule { r.L7 = true; return r }

func port(p uint16) PortRange { return PortRange{From: p, To: p} }

func block(cidr string, except ...string) IPBlock {
	b := IPBlock{Prefix: netip.MustParsePrefix(cidr)}
	for _, e := range except {
		b.Except = append(b.Except, netip.MustParsePrefix(e))
	}
	return b
}

// mtls is an mTLS connection from id at addr to port.
func mtls(id spiffe.ID, addr string, p uint16) Conn {
	return Conn{MTLS: true, Identity: id, Addr: netip.MustParseAddr(addr), Port: p}
}

// plain is a plaintext connection from addr to port.
func plain(addr string, p uint16) Conn {
	return Conn{Addr: netip.MustParseAddr(addr), Port: p}
}

func (c Conn) fromWorkload(uid string) Conn { c.Workload = uid; return c }

func target(policies ...Policy) *Target {
	return &Target{Policies: policies, MTLSMode: MTLSStrict, Default: allow}
}

func (t *Target) permissive() *Target { t.MTLSMode = MTLSPermissive; return t }

func (t *Target) defaultDeny() *Target { t.Default = deny; return t }

func (t *Target) probes(ports ...uint16) *Target { t.ProbePorts = ports; return t }

func (c Conn) fromNode() Conn { c.FromNode = true; return c }
