package ztunnel

import (
	"fmt"
	"net/netip"
	"slices"
	"syscall"

	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// registerLocked inserts the pod's listener into the SOCKHASH for every pod
// ip and inbound mesh port so sk_lookup can steer traffic to it.
func (n *Node) registerLocked(p *pod) error {
	for _, l := range p.listeners {
		sc, ok := l.Ln.(syscall.Conn)
		if !ok {
			return fmt.Errorf("register listener %s: not a socket", l.Ln.Addr())
		}
		for _, ip := range p.flow.IPs {
			for _, port := range podnet.Registered {
				if err := n.opts.Listeners.Put(ip, port, sc); err != nil {
					return fmt.Errorf("register listener %s for %s:%d: %w", l.Ln.Addr(), ip, port, err)
				}
				l.registered = append(l.registered, netip.AddrPortFrom(ip, port))
			}
		}
	}
	return nil
}

// unregisterLocked undoes a partial setup (and a drain's start): SOCKHASH
// entries, then sockets, then the DNS proxy.
func (n *Node) unregisterLocked(p *pod) {
	for _, l := range p.listeners {
		for _, k := range l.registered {
			n.opts.Listeners.Delete(k.Addr(), k.Port()) //nolint:errcheck // best effort on a failed setup
		}
	}
	n.closeSocketsLocked(p) //nolint:errcheck // logged; its goroutines are bounded by its timeout
}

// closeSocketsLocked closes p's listeners and DNS proxy and gives their
// fd budget back; SOCKHASH entries are the caller's business (a hand-over
// leaves them to the successor).
func (n *Node) closeSocketsLocked(p *pod) error {
	for _, l := range p.listeners {
		l.Ln.Close()
	}
	p.listeners = nil
	err := n.stopDNSLocked(p)
	n.releaseSocketsLocked(p)
	return err
}

// releaseSocketsLocked gives back the fd budget units of p's listeners
// and DNS sockets, once they are closed.
func (n *Node) releaseSocketsLocked(p *pod) {
	n.limits.ReleasePod(p.sockFDs)
	p.sockFDs = 0
}

// podIPs merges the addresses agentd saw with the config's, unmapped.
func podIPs(lists ...[]netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, l := range lists {
		for _, ip := range l {
			if ip = ip.Unmap(); ip.IsValid() && !slices.Contains(out, ip) {
				out = append(out, ip)
			}
		}
	}
	return out
}
