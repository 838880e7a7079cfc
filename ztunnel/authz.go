package ztunnel

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
)

// Log messages of policy enforcement.
const (
	msgDenied         = "connection denied by policy"
	msgClosedByPolicy = "connection closed: no longer allowed by policy"
)

// authzOf is the current authorization data of the workload uid; nil (no
// policy data, which denies) when the config does not know it or has none.
func authzOf(idx *meshconfig.Index, uid string) *policy.Target {
	if w := idx.ByUID(uid); w != nil {
		return w.Authz
	}
	return nil
}

// mtlsSource attributes an mTLS peer: the workload owning addr, only if its
// identity is the verified id (else nil).
func mtlsSource(idx *meshconfig.Index, id spiffe.ID, addr netip.Addr) *meshconfig.Workload {
	w := idx.ByIP(addr)
	if w == nil || idx.Config.Identity(w) != id {
		return nil
	}
	return w
}

// workloadUID is w's uid, "" for nil.
func workloadUID(w *meshconfig.Workload) string {
	if w == nil {
		return ""
	}
	return w.UID
}

// admit decides whether ic may reach its pod with the pod's current Authz,
// counts and logs the decision, and on allow registers ic among the pod's
// live connections (the caller removes it when the connection ends).
// Deciding and registering happen under authzMu's read lock, so a config
// swapped in meanwhile is either seen here or re-evaluated by reevaluate.
func (n *Node) admit(ic *inboundConn) policy.Decision {
	n.authzMu.RLock()
	d := policy.Evaluate(authzOf(n.Index(), ic.pod.info.UID), ic.conn)
	if d.Allow {
		ic.pod.live.add(ic)
	}
	n.authzMu.RUnlock()
	n.metrics.decided(d)
	if !d.Allow {
		n.logPolicy(msgDenied, ic, d)
	}
	return d
}

// reevaluate checks every live inbound connection of the set-up pods
// against the config in force and closes those it no longer allows. It only
// closes sockets (no blocking I/O) under the lock and logs after it, so
// SetConfig returns promptly and admissions wait little. Pods being drained
// are not in n.pods: their connections run to their end.
func (n *Node) reevaluate() {
	type closed struct {
		ic *inboundConn
		d  policy.Decision
	}
	var out []closed
	n.authzMu.Lock()
	idx := n.Index()
	for _, p := range n.podList() {
		t := authzOf(idx, p.info.UID)
		for _, ic := range p.live.snapshot() {
			if d := policy.Evaluate(t, ic.conn); !d.Allow && ic.revoke(d) {
				out = append(out, closed{ic, d})
			}
		}
	}
	n.authzMu.Unlock()
	for _, c := range out {
		n.metrics.policyClosedConn(c.d)
		n.logPolicy(msgClosedByPolicy, c.ic, c.d)
	}
}

// podList is the handed-over pods.
func (n *Node) podList() []*pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*pod, 0, len(n.pods))
	for _, p := range n.pods {
		out = append(out, p)
	}
	return out
}

// logPolicy writes one Warn line about ic and decision d.
func (n *Node) logPolicy(msg string, ic *inboundConn, d policy.Decision) {
	n.log.LogAttrs(context.Background(), slog.LevelWarn, msg,
		slog.String("pod", ic.pod.name()),
		slog.String("src_identity", idString(ic.conn.Identity)),
		slog.String("src_addr", ic.src.String()),
		slog.String("src_workload", ic.srcW),
		slog.String("dst_addr", ic.dst.String()),
		slog.Int("port", int(ic.conn.Port)),
		slog.String("policy", d.Policy),
		slog.Int("rule", d.Rule),
		slog.String("reason", string(d.Reason)),
		slog.Bool("mtls", ic.conn.MTLS),
	)
}

// policyError is a connection refused by policy, or closed because a new
// config no longer allows it (closed). It wraps hbone.ErrDenied, so an
// HBONE stream refused with it is answered 401.
type policyError struct {
	d      policy.Decision
	closed bool
}

func (e *policyError) Error() string {
	if e.closed {
		return "closed by policy change: " + e.d.String()
	}
	return "denied by policy: " + e.d.String()
}

func (e *policyError) Unwrap() error { return hbone.ErrDenied }
