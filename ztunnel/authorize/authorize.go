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
//
// When rules with L7 parts apply to c (policy.NeedsRequests) and c can
// carry requests (an HBONE stream, Requests set by the caller), c is
// admitted if some request could be allowed (policy.Admissible) and
// marked L7: the caller then decides each request (Request), or, if the
// bytes turn out not to be HTTP, the connection as a whole (Opaque).
func (a *Authorizer) Admit(c *Conn) policy.Decision {
	a.mu.RLock()
	t := authzOf(a.index(), c.Pod.UID)
	// Whether its requests are decided one by one is settled here, once:
	// the caller serves the connection accordingly from now on.
	c.l7.Store(c.Requests && policy.NeedsRequests(t, c.Policy))
	d := a.decide(t, c)
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
			if d := a.decide(t, c); !d.Allow && c.revoke(d) {
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

// decide is the decision on c under t: for a connection whose requests
// are decided one by one (admitted L7 and not found opaque), whether any
// request could still be allowed; for one carried as bytes, the rules at
// L4 (rules with L7 parts a new config brings apply to it as at L4: its
// requests are not seen). Called under a.mu.
func (a *Authorizer) decide(t *policy.Target, c *Conn) policy.Decision {
	if c.l7.Load() && !c.opaque.Load() {
		return policy.Admissible(t, c.Policy)
	}
	return policy.Evaluate(t, c.Policy)
}

// NeedsRequests reports whether rules with L7 parts of pod uid's policies
// apply to c (policy.NeedsRequests) with the config in force.
func (a *Authorizer) NeedsRequests(uid string, c policy.Conn) bool {
	return policy.NeedsRequests(authzOf(a.index(), uid), c)
}

// NeedsCalls reports whether rules with jsonrpc or mcp parts apply to c
// (policy.NeedsCalls) with the config in force: its requests' JSON-RPC
// calls must then be read, or the request refused.
func (a *Authorizer) NeedsCalls(c *Conn) bool {
	return policy.NeedsCalls(authzOf(a.index(), c.Pod.UID), c.Policy)
}

// Opaque decides c, admitted as L7, as a whole: its bytes are not HTTP,
// so rules with L7 parts are taken at L4 (policy.Evaluate), now and at
// every re-evaluation. A denial is counted and logged; the caller closes c.
func (a *Authorizer) Opaque(c *Conn) policy.Decision {
	c.opaque.Store(true)
	a.mu.RLock()
	d := a.decide(authzOf(a.index(), c.Pod.UID), c)
	a.mu.RUnlock()
	a.rec.Decided(d)
	if !d.Allow {
		a.logPolicy(MsgDenied, c, d)
	}
	return d
}

// Request decides one request q of c with the config in force
// (policy.EvaluateRequest) and counts the decision; the caller logs a
// denial with what it knows of the request (RequestDenied).
func (a *Authorizer) Request(c *Conn, q policy.Request) policy.Decision {
	a.mu.RLock()
	d := policy.EvaluateRequest(authzOf(a.index(), c.Pod.UID), c.Policy, q)
	a.mu.RUnlock()
	a.rec.Decided(d)
	return d
}

// MsgRequestDenied is the message of a request denial's line.
const MsgRequestDenied = "request denied by policy"

// RequestDenied logs q's denial by d on c.
func (a *Authorizer) RequestDenied(c *Conn, q policy.Request, d policy.Decision) {
	attrs := []slog.Attr{
		slog.String("pod", c.Pod.String()),
		slog.String("src_identity", record.IDString(c.Policy.Identity)),
		slog.String("src_addr", c.Src.String()),
		slog.String("src_workload", c.SrcWorkload),
		slog.String("dst_addr", c.Dst.String()),
		slog.String("method", q.Method),
		slog.String("path", q.Path),
	}
	if q.RPC != nil {
		attrs = append(attrs, slog.String("rpc_method", q.RPC.Method))
		if q.RPC.Tool != "" {
			attrs = append(attrs, slog.String("mcp_tool", q.RPC.Tool))
		}
	}
	attrs = append(attrs, slog.String("policy", d.Policy), slog.Int("rule", d.Rule), slog.String("reason", string(d.Reason)))
	a.log.LogAttrs(context.Background(), slog.LevelWarn, MsgRequestDenied, attrs...)
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
