package policy

import (
	"net/netip"
)

// matches reports whether r matches c under a policy with action a. An L7
// rule matches nothing under Allow and is checked without its L7 part
// under Deny.
func (r *Rule) matches(a Action, c Conn) bool {
	if r.L7 && a != ActionDeny {
		return false
	}
	return r.matchesPort(c.Port) && r.matchesPeer(c)
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
