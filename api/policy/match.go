package policy

import (
	"net/netip"
	"slices"
	"strings"
)

// mode is how a rule's L7 part is taken.
type mode int

const (
	// atL4: the connection's requests are not seen (opaque bytes): an L7
	// rule matches nothing under Allow and is checked without its L7
	// part under Deny, so the result is never more permissive.
	atL4 mode = iota
	// admissible: could some request of the connection be allowed? An L7
	// Allow rule matches on its L4 part, an L7 Deny rule matches nothing.
	admissible
	// perRequest: the L7 part must match the request.
	perRequest
)

// matches reports whether r matches c (and q, per request) under a
// policy with action a.
func (r *Rule) matches(a Action, c Conn, m mode, q *Request) bool {
	l7 := r.L7 || r.HasL7()
	if l7 {
		switch {
		case m == atL4 && a != ActionDeny, m == admissible && a == ActionDeny:
			return false
		case m == perRequest && (q == nil || !r.matchesRequest(a, q)):
			return false
		}
	}
	return r.matchesPort(c.Port) && r.matchesPeer(c)
}

// matchesRequest reports whether every L7 part of r matches q. A rule
// marked L7 without compiled parts (from a controller that did not
// enforce them) matches no request.
func (r *Rule) matchesRequest(a Action, q *Request) bool {
	if !r.HasL7() {
		return !r.L7
	}
	if h := r.HTTP; h != nil {
		if len(h.Methods) > 0 && !slices.Contains(h.Methods, q.Method) {
			return false
		}
		if len(h.Paths) > 0 && !slices.ContainsFunc(h.Paths, func(p string) bool { return matchPath(p, q.Path) }) {
			return false
		}
	}
	if j := r.JSONRPC; j != nil {
		if q.RPC == nil || (len(j.Methods) > 0 && !slices.Contains(j.Methods, q.RPC.Method)) {
			return false
		}
	}
	if m := r.MCP; m != nil {
		if q.RPC == nil || q.RPC.Method != MCPToolsCall {
			// No tool called: under Allow, the session's plumbing
			// (another JSON-RPC message, the event stream, the
			// session's end) matches; a request that is not MCP at
			// all does not.
			return a == ActionAllow && (q.RPC != nil || q.MCPStream)
		}
		if len(m.Tools) > 0 && !slices.Contains(m.Tools, q.RPC.Tool) {
			return false
		}
	}
	return true
}

// MCPToolsCall is the MCP method that calls a tool.
const MCPToolsCall = "tools/call"

// matchPath matches a request path against a rule's entry: exact, or a
// prefix when the entry ends in "*".
func matchPath(entry, p string) bool {
	if prefix, ok := strings.CutSuffix(entry, "*"); ok {
		return strings.HasPrefix(p, prefix)
	}
	return entry == p
}

func (r *Rule) matchesPort(port uint16) bool {
	if len(r.Ports) == 0 {
		return true
	}
	for _, pr := range r.Ports {
		if pr.From <= port && port <= pr.To {
			return true
		}
	}
	return false
}

func (r *Rule) matchesPeer(c Conn) bool {
	if len(r.From) == 0 {
		return true
	}
	for i := range r.From {
		if r.From[i].matches(c) {
			return true
		}
	}
	return false
}

func (p *Peer) matches(c Conn) bool {
	return p.Identities.Has(c.Identity) &&
		p.Namespaces.Has(c.Identity.Namespace) &&
		p.Workloads.Has(c.Workload) &&
		matchesBlocks(p.IPBlocks, c.Addr)
}

func matchesBlocks(bs []IPBlock, a netip.Addr) bool {
	if len(bs) == 0 {
		return true
	}
	for _, b := range bs {
		if b.Contains(a) {
			return true
		}
	}
	return false
}

// Contains reports whether a is in b.Prefix and in none of b.Except.
func (b IPBlock) Contains(a netip.Addr) bool {
	if !b.Prefix.Contains(a) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}
