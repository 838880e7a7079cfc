package ztunnel

import (
	"errors"
	"slices"
	"sync"
	"time"
)

// optOutWait bounds how long a del from agentd waits for the mesh config to
// say whether the pod left (gone from the config) or opted out (still
// listed on this node, not enrolled). agentd acts on the same controller
// version as ztunnel, and later (it releases the capture first), so the
// config is normally there already.
const optOutWait = time.Second

// maxDrain bounds how long a drained pod's connections may outlive its
// opt-out; the ones still open then are closed.
const maxDrain = time.Hour

// drainingNode is the handoff.Handler ztunnel serves agentd with: the Node,
// except that a pod taken away while the config lists it as opted out
// (it keeps running outside the mesh) is drained instead of removed.
//
// Why: agentd has already released the pod's capture, so its new
// connections go direct. The connections ztunnel proxies for it cannot
// follow: the app's socket is connected to ztunnel's (127.0.0.1:15001
// outbound, ztunnel's dial inbound), so closing them breaks the app for
// nothing. Draining closes the pod's listeners and SOCKHASH entries at once
// (nothing new is accepted for it) and lets live connections run until
// they end; the pod's netns, pooled HBONE connections and certificate are
// released after the last one, or when the node shuts down (which closes
// them). A pod that left the config is removed as before: its app is gone.
type drainingNode struct {
	*Node
	wait     time.Duration
	maxDrain time.Duration
	wg       sync.WaitGroup // drain finishers; Wait after the node stopped
}

func newDrainingNode(n *Node) *drainingNode {
	return &drainingNode{Node: n, wait: optOutWait, maxDrain: maxDrain}
}

// RemovePod drains the pod if the config says it opted out, else removes it.
func (d *drainingNode) RemovePod(uid string) error {
	if d.optedOut(uid) {
		return d.drainPod(uid)
	}
	return d.Node.RemovePod(uid)
}

// optedOut waits up to d.wait for the config to list uid as not enrolled
// (true) or not at all (false); a config that still has it enrolled after
// the wait means remove.
func (d *drainingNode) optedOut(uid string) bool {
	deadline := time.Now().Add(d.wait)
	for {
		w := d.Index().ByUID(uid)
		switch {
		case w == nil:
			return false
		case !w.Enrolled:
			return true
		case time.Now().After(deadline):
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drainPod stops accepting for the pod and releases it after its last
// connection.
func (d *drainingNode) drainPod(uid string) error {
	n := d.Node
	n.opMu.Lock()
	defer n.opMu.Unlock()
	n.mu.Lock()
	p := n.pods[uid]
	n.mu.Unlock()
	if st, _ := p.getStateOrNil(); st != stateReady {
		err := n.removeLocked(uid) // nothing proxied: plain removal
		n.gauges.refreshPods()
		return err
	}
	n.mu.Lock()
	delete(n.pods, uid)
	n.mu.Unlock()
	n.unregisterLocked(p) // SOCKHASH entries, then listeners (accept loops end)
	n.gauges.refreshPods()
	n.log.Info("pod opted out of the mesh, draining its connections", "pod", p.name(), "uid", uid,
		"active_conns", p.active.Load())
	d.wg.Go(func() { d.finish(p) })
	return nil
}

// HandOver is agentd giving every pod to a successor ztunnel, which has
// set them up beside this one (its listeners joined this one's
// SO_REUSEPORT groups, its sockets replaced this one's in the SOCKHASH):
// this node closes its listeners (what their queues hold migrates to the
// successor's, podnet.MigrateRequests) and DNS sockets, leaves the SOCKHASH
// entries alone (they are the successor's now), and lets the connections
// it proxies run until they end; each pod is released after its last one.
// From here on the node is not ready and takes no pods.
func (d *drainingNode) HandOver() error {
	n := d.Node
	n.opMu.Lock()
	defer n.opMu.Unlock()
	n.handedOver.Store(true)
	n.mu.Lock()
	pods := n.pods
	n.pods = map[string]*pod{}
	n.mu.Unlock()
	var errs []error
	active := int64(0)
	for _, p := range pods {
		if st, _ := p.getState(); st != stateReady {
			errs = append(errs, n.teardownLocked(p)) // nothing proxied, no entries of its own
			continue
		}
		if err := n.closeSocketsLocked(p); err != nil {
			errs = append(errs, err)
		}
		active += p.active.Load()
		n.mu.Lock()
		n.handed = append(n.handed, p)
		n.mu.Unlock()
		d.wg.Go(func() { d.finish(p) })
	}
	// Inbound HBONE connections are pooled by their clients: GOAWAY sends
	// their next streams to a new connection, the successor's.
	n.server.Drain()
	n.gauges.refreshPods()
	n.log.Info("pods handed over to a successor ztunnel; draining their connections", "pods", len(pods), "active_conns", active)
	return errors.Join(errs...)
}

// HandedOver reports whether the pods went to a successor (HandOver).
func (d *drainingNode) HandedOver() bool { return d.handedOver.Load() }

// finish releases a drained pod once its connections ended (closing those
// still open after maxDrain).
func (d *drainingNode) finish(p *pod) {
	n := d.Node
	if !waitTimeout(&p.wg, d.maxDrain) {
		n.log.Info("closing connections of a drained pod", "pod", p.name(), "after", d.maxDrain,
			"active_conns", p.active.Load())
		p.cancel()
		p.wg.Wait() // conn goroutines end once their conns are closed
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	p.cancel()
	if !n.ipsInUseLocked(p) { // the pod may have been enrolled again meanwhile
		for _, ip := range podIPs(p.flow.IPs, p.info.IPs) {
			n.transport.CloseSource(ip)
		}
	}
	p.net.Close()
	if !n.identityInUseLocked(p) {
		n.opts.Certs.Forget(p.flow.ID)
	}
	p.setState("removed", nil)
	n.mu.Lock()
	n.handed = slices.DeleteFunc(n.handed, func(o *pod) bool { return o == p })
	n.mu.Unlock()
	n.log.Info("drained pod released", "pod", p.name(), "uid", p.info.UID)
}

// waitDrained waits up to d for the drained pods' connections to end, and
// reports whether they did.
func (d *drainingNode) waitDrained(timeout time.Duration) bool {
	return waitTimeout(&d.wg, timeout)
}

// ipsInUseLocked reports whether a current pod has one of p's addresses.
func (n *Node) ipsInUseLocked(p *pod) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, o := range n.pods {
		for _, ip := range p.flow.IPs {
			if slices.Contains(o.flow.IPs, ip) || slices.Contains(podIPs(o.info.IPs), ip) {
				return true
			}
		}
	}
	return false
}

// getStateOrNil is getState for a pod that may be nil ("" then).
func (p *pod) getStateOrNil() (string, error) {
	if p == nil {
		return "", nil
	}
	return p.getState()
}

// waitUntil waits for the drain finishers (they end once the node stopped,
// which closes every connection) until deadline.
func (d *drainingNode) waitUntil(deadline time.Time) error {
	if !waitTimeout(&d.wg, time.Until(deadline)) {
		return errors.New("drained pods not released in time")
	}
	return nil
}
