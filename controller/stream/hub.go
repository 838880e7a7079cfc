// Package stream serves the per-node config streams: a Hub keeps the
// current view and a short log of what changed, and a Server sends each
// connected node component a full snapshot, then deltas, and tracks acks.
//
// Cost: each view change is diffed once against the previous one (the
// shared part, O(workloads+services)); each node then only looks at what
// changed (O(nodes x changes)), never at the whole view again.
package stream

import (
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/view"
)

// Visibility says whether node's view includes w. Services are in every
// node's view.
type Visibility func(node string, w *meshconfig.Workload) bool

// All is the Visibility of this issue: every workload with an address is in
// every node's view (a node's pods may talk to any of them, and the data
// plane needs the destination's identity).
func All(string, *meshconfig.Workload) bool { return true }

// defaultLogSize is how many changes a Hub keeps for streams catching up;
// a stream further behind gets a full snapshot.
const defaultLogSize = 256

// Hub holds the current view and hands out per-node versions and deltas.
// It is safe for concurrent use.
type Hub struct {
	visible Visibility
	logSize int

	mu     sync.Mutex
	rev    uint64              // guarded by mu; bumped by every change
	cur    *state              // guarded by mu; nil until the first Update
	log    []change            // guarded by mu; consecutive revs, oldest first
	nodes  map[string]*nodeVer // guarded by mu; nodes with subscribers
	wake   chan struct{}       // guarded by mu; closed and replaced on each change
	ready  chan struct{}       // closed by the first Update
	done   chan struct{}       // closed by Close
	closed bool                // guarded by mu
}

type nodeVer struct {
	version uint64 // the last rev that changed this node's view
	refs    int
}

// NewHub returns an empty hub whose nodes see what vis says (All: every
// workload). Versions start at the current Unix time in milliseconds so
// that they keep increasing across controller restarts.
func NewHub(vis Visibility) *Hub {
	return &Hub{
		visible: vis,
		logSize: defaultLogSize,
		rev:     uint64(time.Now().UnixMilli()),
		nodes:   map[string]*nodeVer{},
		wake:    make(chan struct{}),
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Ready is closed once the hub has a view.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Done is closed by Close.
func (h *Hub) Done() <-chan struct{} { return h.done }

// Update installs a new view; unchanged inputs make no new version.
func (h *Hub) Update(s *view.Snapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	next := newState(s, h.bundleLocked())
	if h.cur == nil || h.cur.empty {
		h.firstViewLocked(next)
		return
	}
	h.applyLocked(next)
}

// SetTrustBundle replaces the trust bundle sent to nodes.
func (h *Hub) SetTrustBundle(pem []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil {
		h.cur = &state{workloads: map[string]*meshconfig.Workload{}, services: map[string]*meshconfig.Service{}, bundle: pem, empty: true}
		return
	}
	next := *h.cur
	next.bundle = pem
	if next.empty {
		h.cur = &next
		return
	}
	h.applyLocked(&next)
}

func (h *Hub) bundleLocked() []byte {
	if h.cur == nil {
		return nil
	}
	return h.cur.bundle
}

// applyLocked diffs next against the current state once, logs the change
// and bumps the version of every node it touches.
func (h *Hub) applyLocked(next *state) {
	c := diff(h.cur, next)
	if c.empty() {
		return
	}
	h.rev++
	c.rev = h.rev
	h.cur = next
	h.log = append(h.log, c)
	if len(h.log) > h.logSize {
		h.log = slices.Delete(h.log, 0, len(h.log)-h.logSize)
	}
	for node, nv := range h.nodes {
		if h.touches(node, &c) {
			nv.version = h.rev
		}
	}
	h.broadcastLocked()
}

// firstViewLocked installs the first view: there is nothing to diff.
func (h *Hub) firstViewLocked(next *state) {
	h.cur = next
	h.rev++
	for _, nv := range h.nodes {
		nv.version = h.rev
	}
	close(h.ready)
	h.broadcastLocked()
}

func (h *Hub) broadcastLocked() {
	close(h.wake)
	h.wake = make(chan struct{})
}

// touches reports whether change c alters node's view.
func (h *Hub) touches(node string, c *change) bool {
	if c.trust || len(c.services) > 0 || c.policyNodes[node] {
		return true
	}
	for _, wc := range c.workloads {
		if (h.vis(node, wc.old) || h.vis(node, wc.new)) && changedFor(node, wc.old, wc.new) {
			return true
		}
	}
	return false
}

// forNode is w as node receives it: the authorization data only goes to the
// workload's own node, which enforces it.
func forNode(node string, w *meshconfig.Workload) meshconfig.Workload {
	out := *w
	if w.Node != node {
		out.Authz = nil
	}
	return out
}

// changedFor reports whether node sees a difference between old and new
// (either may be nil). A policy change that only alters a workload's Authz
// is thus sent to that workload's node alone.
func changedFor(node string, old, new *meshconfig.Workload) bool {
	if old == nil || new == nil {
		return old != new
	}
	a, b := forNode(node, old), forNode(node, new)
	return !reflect.DeepEqual(&a, &b)
}

func (h *Hub) vis(node string, w *meshconfig.Workload) bool { return w != nil && h.visible(node, w) }

// Close wakes every waiting stream for good.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.done)
		h.broadcastLocked()
	}
}

// Subscribe registers a stream of node so that the node's version is
// tracked; call the returned func when the stream ends.
func (h *Hub) Subscribe(node string) (unsubscribe func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	nv := h.nodes[node]
	if nv == nil {
		nv = &nodeVer{version: h.rev}
		h.nodes[node] = nv
	}
	nv.refs++
	return sync.OnceFunc(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if nv.refs--; nv.refs == 0 {
			delete(h.nodes, node)
		}
	})
}

// Versions returns each subscribed node's current version.
func (h *Hub) Versions() map[string]uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]uint64, len(h.nodes))
	for n, nv := range h.nodes {
		out[n] = nv.version
	}
	return out
}

// Cursor is where a stream is: the hub revision it has caught up with.
// The zero Cursor asks for a full snapshot.
type Cursor struct{ rev uint64 }

// Next returns what node's stream at cur must be sent (nil if nothing),
// the new cursor, and a channel closed on the next change. The node must
// be subscribed. closed is true once the hub is closed.
func (h *Hub) Next(node string, cur Cursor) (resp *configapi.ConfigResponse, next Cursor, wake <-chan struct{}, closed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, cur, h.wake, true
	}
	next, wake = Cursor{rev: h.rev}, h.wake
	if h.cur == nil || h.cur.empty || cur.rev == h.rev {
		return nil, cur, wake, false
	}
	if cur.rev == 0 || !h.coversLocked(cur.rev) {
		resp = h.fullLocked(node)
	} else {
		resp = h.deltaLocked(node, cur.rev)
	}
	if resp != nil {
		resp.Version = h.nodes[node].version
		resp.TrustDomain, resp.TrustBundlePEM = h.cur.td, h.cur.bundle
	}
	return resp, next, wake, false
}

// coversLocked reports whether the log holds every change after rev.
func (h *Hub) coversLocked(rev uint64) bool {
	return len(h.log) > 0 && h.log[0].rev <= rev+1 && rev < h.rev
}

func (h *Hub) fullLocked(node string) *configapi.ConfigResponse {
	r := &configapi.ConfigResponse{Full: true}
	for _, uid := range slices.Sorted(maps.Keys(h.cur.workloads)) {
		if w := h.cur.workloads[uid]; h.visible(node, w) {
			r.Workloads = append(r.Workloads, forNode(node, w))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(h.cur.services)) {
		r.Services = append(r.Services, *h.cur.services[k])
	}
	r.Policies = h.cur.policyBodies(slices.Sorted(maps.Keys(h.cur.refs[node])))
	return r
}

// deltaLocked merges the changes after rev and keeps what node sees.
func (h *Hub) deltaLocked(node string, rev uint64) *configapi.ConfigResponse {
	first := map[string]*meshconfig.Workload{} // uid -> state before the first change after rev
	svcs, pols, trust := map[string]bool{}, map[string]bool{}, false
	for _, c := range h.log {
		if c.rev <= rev {
			continue
		}
		for uid, wc := range c.workloads {
			if _, seen := first[uid]; !seen {
				first[uid] = wc.old
			}
		}
		for _, k := range c.services {
			svcs[k] = true
		}
		for _, k := range c.policies {
			pols[k] = true
		}
		trust = trust || c.trust
	}
	r := &configapi.ConfigResponse{}
	for _, uid := range slices.Sorted(maps.Keys(first)) {
		now, was := h.cur.workloads[uid], first[uid]
		switch {
		case h.vis(node, now) && h.vis(node, was) && !changedFor(node, was, now):
			// only another node's part of it changed
		case h.vis(node, now):
			r.Workloads = append(r.Workloads, forNode(node, now))
		case h.vis(node, was):
			r.RemovedWorkloads = append(r.RemovedWorkloads, uid)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(svcs)) {
		if s := h.cur.services[k]; s != nil {
			r.Services = append(r.Services, *s)
		} else {
			r.RemovedServices = append(r.RemovedServices, k)
		}
	}
	r.Policies = h.cur.policyBodies(h.deltaPolicies(node, pols, r.Workloads))
	if !trust && len(r.Workloads)+len(r.RemovedWorkloads)+len(r.Services)+len(r.RemovedServices)+len(r.Policies) == 0 {
		return nil
	}
	return r
}

// deltaPolicies are the policies a delta to node carries: those changed
// since the node's cursor that it refers to now, and every one an upserted
// workload of the node refers to (it may have been dropped by the client
// when nothing referred to it), sorted.
func (h *Hub) deltaPolicies(node string, changed map[string]bool, upserts []meshconfig.Workload) []string {
	send := map[string]bool{}
	for k := range changed {
		if h.cur.refs[node][k] {
			send[k] = true
		}
	}
	for i := range upserts {
		if a := upserts[i].Authz; a != nil {
			for _, k := range a.PolicyRefs {
				send[k] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(send))
}

// state is one view, indexed.
type state struct {
	td        string
	bundle    []byte
	workloads map[string]*meshconfig.Workload // by uid
	services  map[string]*meshconfig.Service  // by namespace/name
	policies  map[string]*policy.Policy       // by namespace/name
	refs      map[string]map[string]bool      // node -> policies its workloads refer to
	empty     bool                            // a bundle but no view yet
}

// policyBodies are the policies named keys that exist, in keys' order.
func (st *state) policyBodies(keys []string) []policy.Policy {
	var out []policy.Policy
	for _, k := range keys {
		if p := st.policies[k]; p != nil {
			out = append(out, *p)
		}
	}
	return out
}

func newState(s *view.Snapshot, bundle []byte) *state {
	st := &state{td: s.TrustDomain, bundle: bundle,
		workloads: make(map[string]*meshconfig.Workload, len(s.Workloads)),
		services:  make(map[string]*meshconfig.Service, len(s.Services))}
	for i := range s.Workloads {
		st.workloads[s.Workloads[i].UID] = &s.Workloads[i]
	}
	for i := range s.Services {
		st.services[s.Services[i].Key()] = &s.Services[i]
	}
	st.policies = make(map[string]*policy.Policy, len(s.AuthzPolicies))
	for i := range s.AuthzPolicies {
		st.policies[s.AuthzPolicies[i].Key()] = &s.AuthzPolicies[i]
	}
	st.refs = map[string]map[string]bool{}
	for _, w := range st.workloads {
		if w.Authz == nil || len(w.Authz.PolicyRefs) == 0 {
			continue
		}
		if st.refs[w.Node] == nil {
			st.refs[w.Node] = map[string]bool{}
		}
		for _, k := range w.Authz.PolicyRefs {
			st.refs[w.Node][k] = true
		}
	}
	return st
}

// change is what one revision changed.
type change struct {
	rev       uint64
	workloads map[string]wlChange // by uid
	services  []string            // keys upserted or removed
	policies  []string            // keys whose body changed, appeared or went
	// policyNodes are the nodes that referred to a policy in policies,
	// before or after.
	policyNodes map[string]bool
	trust       bool // trust domain or bundle
}

type wlChange struct{ old, new *meshconfig.Workload } // nil: absent

func (c *change) empty() bool {
	return !c.trust && len(c.workloads) == 0 && len(c.services) == 0 && len(c.policies) == 0
}

func diff(a, b *state) change {
	c := change{workloads: map[string]wlChange{}}
	c.trust = a.td != b.td || !slices.Equal(a.bundle, b.bundle)
	for uid, w := range b.workloads {
		if old := a.workloads[uid]; old == nil || !reflect.DeepEqual(old, w) {
			c.workloads[uid] = wlChange{old: old, new: w}
		}
	}
	for uid, w := range a.workloads {
		if b.workloads[uid] == nil {
			c.workloads[uid] = wlChange{old: w}
		}
	}
	for k, s := range b.services {
		if old := a.services[k]; old == nil || !reflect.DeepEqual(old, s) {
			c.services = append(c.services, k)
		}
	}
	for k := range a.services {
		if b.services[k] == nil {
			c.services = append(c.services, k)
		}
	}
	c.policies, c.policyNodes = diffPolicies(a, b)
	return c
}

// diffPolicies lists the policies whose body differs between a and b and
// the nodes that refer to one of them in a or b.
func diffPolicies(a, b *state) (keys []string, nodes map[string]bool) {
	for k, p := range b.policies {
		if old := a.policies[k]; old == nil || !reflect.DeepEqual(old, p) {
			keys = append(keys, k)
		}
	}
	for k := range a.policies {
		if b.policies[k] == nil {
			keys = append(keys, k)
		}
	}
	nodes = map[string]bool{}
	for _, st := range []*state{a, b} {
		for node, refs := range st.refs {
			if slices.ContainsFunc(keys, func(k string) bool { return refs[k] }) {
				nodes[node] = true
			}
		}
	}
	return keys, nodes
}
