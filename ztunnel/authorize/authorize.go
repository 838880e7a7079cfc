// Package authorize is the destination side's authorization stage: who may
// reach a pod. It checks that an mTLS peer's identity owns its source
// address (Peer), decides every inbound connection with the pod's current
// AgentPolicy data (Admit; api/policy evaluates), keeps the admitted ones
// per pod (Live) and closes those a new config no longer allows
// (Reevaluate). Decisions are counted and denials logged through record.
package authorize

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// Log messages of policy enforcement.
const (
	MsgDenied         = "connection denied by policy"
	MsgClosedByPolicy = "connection closed: no longer allowed by policy"
)

// NodeAddrs says which addresses are the node's own (a *nodeaddr.Set):
// plaintext from one of them to a workload's probe port is the kubelet
// probing it.
type NodeAddrs interface {
	Contains(a netip.Addr) bool
}

// Authorizer decides inbound connections. Safe for concurrent use.
type Authorizer struct {
	index func() *meshconfig.Index // the config in force
	node  NodeAddrs                // nil: no address is the node's
	rec   *record.Recorder
	log   *slog.Logger

	// mu orders admissions (read lock: evaluate and register) against
	// Reevaluate (write lock), so no connection escapes a policy change.
	mu sync.RWMutex
}

// New returns an Authorizer deciding with the config index gives.
func New(index func() *meshconfig.Index, node NodeAddrs, rec *record.Recorder, log *slog.Logger) *Authorizer {
	return &Authorizer{index: index, node: node, rec: rec, log: log}
}

// FromNode reports whether a is one of the node's own addresses.
func (a *Authorizer) FromNode(addr netip.Addr) bool {
	return a.node != nil && a.node.Contains(addr)
}

// authzOf is the current authorization data of the workload uid; nil (no
// policy data, which denies) when the config does not know it or has none.
func authzOf(idx *meshconfig.Index, uid string) *policy.Target {
	if w := idx.ByUID(uid); w != nil {
		return w.Authz
	}
	return nil
}

// Admit decides whether c may reach its pod with the pod's current Authz,
// counts and logs the decision, and on allow registers c among the pod's
// live connections (the caller removes it when the connection ends).
// Deciding and registering happen under the read lock, so a config swapped
// in meanwhile is either seen here or re-evaluated by Reevaluate.
func (a *Authorizer) Admit(c *Conn) policy.Decision {
	a.mu.RLock()
	d := policy.Evaluate(authzOf(a.index(), c.Pod.UID), c.Policy)
	if d.Allow {
		c.Live.add(c)
	}
	a.mu.RUnlock()
	a.rec.Decided(d)
	if !d.Allow {
		a.logPolicy(MsgDenied, c, d)
	}
	return d
}

// Reevaluate checks the live connections of the given pods against the
// config in force and closes those it no longer allows. It only closes
// sockets (no blocking I/O) under the lock and logs after it, so a config
// swap returns promptly and admissions wait little.
func (a *Authorizer) Reevaluate(pods []*Live) {
	type closed struct {
		c *Conn
		d policy.Decision
	}
	var out []closed
	a.mu.Lock()
	idx := a.index()
	for _, live := range pods {
		t := authzOf(idx, live.UID)
		for _, c := range live.snapshot() {
			if d := policy.Evaluate(t, c.Policy); !d.Allow && c.revoke(d) {
				out = append(out, closed{c, d})
			}
		}
	}
	a.mu.Unlock()
	for _, c := range out {
		a.rec.PolicyClosed(c.d)
		a.logPolicy(MsgClosedByPolicy, c.c, c.d)
	}
}

// logPolicy writes one Warn line about c and decision d.
func (a *Authorizer) logPolicy(msg string, c *Conn, d policy.Decision) {
	a.log.LogAttrs(context.Background(), slog.LevelWarn, msg,
		slog.String("pod", c.Pod.String()),
		slog.String("src_identity", record.IDString(c.Policy.Identity)),
		slog.String("src_addr", c.Src.String()),
		slog.String("src_workload", c.SrcWorkload),
		slog.String("dst_addr", c.Dst.String()),
		slog.Int("port", int(c.Policy.Port)),
		slog.String("policy", d.Policy),
		slog.Int("rule", d.Rule),
		slog.String("reason", string(d.Reason)),
		slog.Bool("mtls", c.Policy.MTLS),
	)
}
