package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

// errClosed is returned by AddPod after the node shut down.
var errClosed = errors.New("ztunnel node is shut down")

// errHandedOver is Ready's and AddPod's answer once the pods went to a
// successor ztunnel.
var errHandedOver = errors.New("pods handed over to a successor ztunnel")

// teardownWait bounds how long removing a pod waits for its goroutines.
const teardownWait = 5 * time.Second

// AddPod takes over a pod netns handed over by agentd. The node owns netns
// from now on. A pod the config does not know yet stays pending and is set up
// when the config catches up; setup failures are retried.
func (n *Node) AddPod(info handoff.Pod, ns *os.File) error {
	p, err := n.addPod(info, ns)
	if err != nil || p == nil || !info.Gate {
		return err
	}
	return n.awaitSettled(p)
}

// gatePendingWait bounds how long a gated add waits for the config to know
// its pod: below agentd's hand-off ack timeout (handoff.DefaultAckTimeout).
// agentd and ztunnel get the same config from the controller, so the wait
// is usually one push.
const gatePendingWait = 3 * time.Second

// awaitSettled waits, without the node's locks, until pending pod p is set
// up or failed, and returns why it is not ready.
func (n *Node) awaitSettled(p *pod) error {
	t := time.NewTimer(gatePendingWait)
	defer t.Stop()
	select {
	case <-p.settled:
	case <-t.C:
		return fmt.Errorf("pod %s (uid %s) is not in ztunnel's mesh config after %s; it is set up once it is", p.name(), p.info.UID, gatePendingWait)
	case <-n.ctx.Done():
		return errClosed
	}
	if st, err := p.getState(); st != stateReady {
		return fmt.Errorf("pod %s: %s: %w", p.name(), st, err)
	}
	return nil
}

// addPod is AddPod under the node's lock; it returns the pod it added.
func (n *Node) addPod(info handoff.Pod, ns *os.File) (*pod, error) {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.closed {
		ns.Close()
		return nil, errClosed
	}
	if n.handedOver.Load() {
		ns.Close()
		return nil, errHandedOver
	}
	n.mu.Lock()
	old := n.pods[info.UID]
	n.mu.Unlock()
	if old != nil {
		st, _ := old.getState()
		if st == stateReady && info.NetnsCookie != 0 && info.NetnsCookie == old.info.NetnsCookie {
			// A re-sent add after agentd reconnected, same netns: keep
			// what runs.
			ns.Close()
			return nil, nil
		}
		n.removeLocked(info.UID)
	}
	if err := n.limits.AdmitPod(1); err != nil {
		ns.Close()
		return nil, fmt.Errorf("pod %s/%s netns: %w", info.Namespace, info.Name, err)
	}
	pn, err := n.opts.PodNet.Open(info, ns)
	if err != nil {
		n.limits.ReleasePod(1)
		return nil, fmt.Errorf("pod %s/%s netns: %w", info.Namespace, info.Name, err)
	}
	p := &pod{info: info, net: pn, state: statePending, netFDs: 1, settled: make(chan struct{})}
	// Set before the pod is in n.pods: a config swap reads it
	// (authorize.Authorizer.Reevaluate) without the node's lock.
	p.live.UID = info.UID
	n.mu.Lock()
	n.pods[info.UID] = p
	n.mu.Unlock()
	n.log.Info("pod handed over", "pod", p.name(), "uid", info.UID, "ips", info.IPs, "gate", info.Gate)
	err = n.trySetupLocked(p)
	n.gauges.refreshPods()
	return p, err
}

// RemovePod tears down everything the node made for the pod.
func (n *Node) RemovePod(uid string) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	err := n.removeLocked(uid)
	n.gauges.refreshPods()
	return err
}

// SnapshotDone drops every pod agentd did not re-send after (re)connecting.
func (n *Node) SnapshotDone(uids []string) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	n.mu.Lock()
	var stale []string
	for uid := range n.pods {
		if !slices.Contains(uids, uid) {
			stale = append(stale, uid)
		}
	}
	n.snapshotDone = true
	n.mu.Unlock()
	var errs []error
	for _, uid := range stale {
		n.log.Info("dropping pod not in agentd snapshot", "uid", uid)
		errs = append(errs, n.removeLocked(uid))
	}
	n.gauges.refreshPods()
	// A pod not set up makes the acknowledgement an error: agentd does
	// not hand the pods of a current ztunnel (an upgrade's old one) to
	// this one then, which would leave that pod without listeners.
	if err := n.podsNotReady(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// reconcile retries the setup of every pod that is not ready.
func (n *Node) reconcile() {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.closed {
		return
	}
	n.mu.Lock()
	var todo []*pod
	for _, p := range n.pods {
		if st, _ := p.getState(); st != stateReady {
			todo = append(todo, p)
		}
	}
	n.mu.Unlock()
	for _, p := range todo {
		n.trySetupLocked(p) //nolint:errcheck // logged; retried next round
	}
	n.gauges.refreshPods()
}

func (n *Node) removeLocked(uid string) error {
	n.mu.Lock()
	p := n.pods[uid]
	delete(n.pods, uid)
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	return n.teardownLocked(p)
}

// teardownLocked undoes setup; see Node.Run for the order.
func (n *Node) teardownLocked(p *pod) error {
	st, _ := p.getState()
	var errs []error
	for _, l := range p.listeners {
		for _, k := range l.registered {
			if err := n.opts.Listeners.Delete(k.Addr(), k.Port()); err != nil {
				errs = append(errs, fmt.Errorf("delete listener %s: %w", k, err))
			}
		}
		l.Ln.Close()
	}
	p.listeners = nil
	if err := n.stopDNSLocked(p); err != nil {
		errs = append(errs, err)
	}
	n.releaseSocketsLocked(p)
	if p.cancel != nil {
		p.cancel()
	}
	// Pooled HBONE conns dialed inside the pod netns would keep it alive
	// until their idle timeout.
	for _, ip := range podIPs(p.flow.IPs, p.info.IPs) {
		n.transport.CloseSource(ip)
	}
	if !waitTimeout(&p.wg, teardownWait) {
		errs = append(errs, fmt.Errorf("pod %s: connections still running after %s", p.name(), teardownWait))
	}
	p.net.Close()
	n.limits.ReleasePod(p.netFDs)
	p.netFDs = 0
	if st == stateReady && !n.identityInUseLocked(p) {
		n.opts.Certs.Forget(p.flow.ID)
	}
	p.setState("removed", nil)
	err := errors.Join(errs...)
	n.log.Info("pod removed", "pod", p.name(), "uid", p.info.UID, "err", err)
	return err
}

// identityInUseLocked reports whether another ready pod shares p's identity.
func (n *Node) identityInUseLocked(p *pod) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, o := range n.pods {
		if st, _ := o.getState(); o != p && st == stateReady && o.flow.ID == p.flow.ID {
			return true
		}
	}
	return false
}

// trySetupLocked sets p up if the config knows it, else leaves it pending.
func (n *Node) trySetupLocked(p *pod) error {
	idx := n.Index()
	w := idx.ByUID(p.info.UID)
	if w == nil {
		if !p.pendingLogged {
			n.log.Info("pod not in mesh config yet, pending", "pod", p.name(), "uid", p.info.UID)
			p.pendingLogged = true
		}
		p.setState(statePending, nil)
		return nil
	}
	if !w.Enrolled {
		n.log.Warn("pod handed over but not enrolled in the mesh config; setting it up anyway", "pod", p.name())
	}
	p.flow = flow.Pod{
		UID: p.info.UID, Namespace: p.info.Namespace, Name: p.info.Name,
		Workload: *w, ID: idx.Config.Identity(w), IPs: podIPs(p.info.IPs, w.IPs), Net: p.net,
	}
	if err := n.setupLocked(p); err != nil {
		level := slog.LevelError
		if _, last := p.getState(); last != nil && last.Error() == err.Error() {
			level = slog.LevelDebug // the same failure again: said already
		}
		p.setState(stateFailed, err)
		n.log.Log(context.Background(), level, "pod setup failed, will retry", "pod", p.name(), "uid", p.info.UID, "err", err)
		return err
	}
	p.setState(stateReady, nil)
	n.log.Info("pod ready", "pod", p.name(), "identity", p.flow.ID.String(), "ips", p.flow.IPs)
	return nil
}

func (n *Node) setupLocked(p *pod) error {
	if p.info.NetnsCookie == 0 {
		c, err := p.net.Cookie()
		if err != nil {
			return fmt.Errorf("netns cookie: %w", err)
		}
		p.info.NetnsCookie = c
	}
	p.flow.Cookie = p.info.NetnsCookie
	ctx, cancel := context.WithTimeout(n.ctx, 15*time.Second)
	err := n.opts.Certs.Ensure(ctx, p.flow.ID)
	cancel()
	if err != nil {
		return fmt.Errorf("certificate for %s: %w", p.flow.ID, err)
	}
	if err := n.limits.AdmitPod(podnet.Sockets() + dnsproxy.Sockets()); err != nil {
		return fmt.Errorf("pod sockets: %w", err)
	}
	p.sockFDs = podnet.Sockets() + dnsproxy.Sockets()
	lns, err := podnet.Open(p.net)
	if err != nil {
		n.releaseSocketsLocked(p)
		return err
	}
	p.listeners = nil
	for _, l := range lns {
		p.listeners = append(p.listeners, &podListener{Listener: l})
	}
	if err := n.registerLocked(p); err != nil {
		n.unregisterLocked(p)
		return err
	}
	if err := n.startDNSLocked(p); err != nil {
		n.unregisterLocked(p)
		return err
	}
	p.ctx, p.cancel = context.WithCancel(n.ctx)
	n.startAcceptLoops(p)
	return nil
}
