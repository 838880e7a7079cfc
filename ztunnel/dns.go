package ztunnel

import (
	"fmt"

	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
)

// startDNSLocked starts the pod's DNS proxy (one socket at port 15053 in
// its netns, reached at 127.0.0.1 and [::1]), when the node runs one and the pod's Net can
// make UDP sockets (the fake podnettest cannot).
func (n *Node) startDNSLocked(p *pod) error {
	pn, ok := p.net.(dnsproxy.Net)
	if n.dns == nil || !ok {
		return nil
	}
	s, err := n.dns.Start(dnsproxy.Pod{Namespace: p.info.Namespace, Name: p.info.Name, NetnsCookie: p.flow.Cookie, IPs: p.flow.IPs}, pn)
	if err != nil {
		return fmt.Errorf("pod %s: %w", p.name(), err)
	}
	p.dns = s
	return nil
}

// stopDNSLocked closes the pod's DNS proxy, if it has one.
func (n *Node) stopDNSLocked(p *pod) error {
	if p.dns == nil {
		return nil
	}
	err := p.dns.Close()
	p.dns = nil
	if err != nil {
		n.log.Warn("dns proxy close", "pod", p.name(), "err", err)
	}
	return err
}
