package compile

import (
	"net/netip"
	"testing"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
)

const td = "cluster.local"

var (
	webID   = spiffe.New(td, "shop", "web")
	adminID = spiffe.New(td, "ops", "admin")

	noMatch = policy.Decision{Reason: policy.ReasonNoAllowMatch, Policy: "shop/p", Rule: -1}
)

func port(p uint16) policy.PortRange { return policy.PortRange{From: p, To: p} }

// conn is a connection to evaluate; see mtls and plain.
type conn struct{ policy.Conn }

// mtls is an mTLS connection from id at addr to port p.
func mtls(id spiffe.ID, addr string, p uint16) conn {
	return conn{policy.Conn{MTLS: true, Identity: id, Addr: netip.MustParseAddr(addr), Port: p}}
}

// plain is a plaintext connection from addr to port p.
func plain(addr string, p uint16) conn {
	return conn{policy.Conn{Addr: netip.MustParseAddr(addr), Port: p}}
}

func (c conn) fromWorkload(uid string) conn { c.Workload = uid; return c }

// tgt is a target with a STRICT mode and an Allow default.
type tgt struct{ *policy.Target }

func target(ps ...policy.Policy) tgt {
	return tgt{&policy.Target{Policies: ps, MTLSMode: policy.MTLSStrict, Default: policy.ActionAllow}}
}

func (t tgt) permissive() tgt { t.MTLSMode = policy.MTLSPermissive; return t }

// allowed is the decision of the Allow policy shop/p matching by rule i.
func allowed(i int) policy.Decision {
	return policy.Decision{Allow: true, Reason: policy.ReasonAllowRule, Policy: "shop/p", Rule: i}
}

func check(t *testing.T, tg tgt, c conn, want policy.Decision) {
	t.Helper()
	if got := policy.Evaluate(tg.Target, c.Conn); got != want {
		t.Errorf("Evaluate(%+v) = %v, want %v", c.Conn, got, want)
	}
}
