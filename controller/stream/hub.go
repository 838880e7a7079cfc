// Package stream serves the per-node config streams: a Hub keeps the
// current view and a short log of what changed, and a Server sends each
// connected node component a full snapshot, then deltas, and tracks acks.
//
// Cost: a change is applied to the view in place, per changed object
// (Apply; the view is never copied or diffed as a whole); each node then
// only looks at what changed (O(nodes x changes)). What is sent is encoded
// once and shared: a delta that carries nothing node-specific is encoded
// once for every node at the same place in the log, and a full view is the
// same chunks for every node (all workloads without their Authz, all
// services), encoded once per version, followed by one small chunk of the
// node's own (its workloads with Authz, and the policies they refer to).
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

// Chunk sizes of a full view: workloads per chunk, and services per chunk
// (a service carries its endpoints, so fewer).
const (
	workloadsPerChunk = 1000
	servicesPerChunk  = 100
)

// Hub holds the current view and hands out per-node versions and deltas.
// It is safe for concurrent use.
type Hub struct {
	visible Visibility
	// all is set when visible is All: every node sees the same workloads,
	// so encodings can be shared between nodes.
	all     bool
	logSize int

	mu     sync.Mutex
	rev    uint64              // guarded by mu; bumped by every change
	cur    *state              // guarded by mu; nil until the first Update; changed in place
	log    []change            // guarded by mu; consecutive revs, oldest first
	nodes  map[string]*nodeVer // guarded by mu; nodes with subscribers
	wake   chan struct{}       // guarded by mu; closed and replaced on each change
	ready  chan struct{}       // closed by the first Update
	done   chan struct{}       // closed by Close
	closed bool                // guarded by mu
	// The encodings of the current rev, shared by the streams: the full
	// view's shared chunks, and the node-independent deltas by where the
	// stream was. Dropped on every change.
	shared *lazy                    // guarded by mu
	deltas map[deltaKey]*lazy       // guarded by mu
	stats  func(kind string, n int) // encodings made, for metrics (nil: none)
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
		all:     reflect.ValueOf(vis).Pointer() == reflect.ValueOf(All).Pointer(),
		logSize: defaultLogSize,
		rev:     uint64(time.Now().UnixMilli()),
		nodes:   map[string]*nodeVer{},
		wake:    make(chan struct{}),
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		deltas:  map[deltaKey]*lazy{},
	}
}

// Ready is closed once the hub has a view.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Done is closed by Close.
func (h *Hub) Done() <-chan struct{} { return h.done }

// Update installs s as the whole view; unchanged inputs make no new
// version. It compares every object with the one held: prefer Apply with
// what changed.
func (h *Hub) Update(s *view.Snapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var held view.Keys
	if h.cur != nil {
		held = view.Keys{Workloads: maps.Keys(h.cur.workloads), Services: maps.Keys(h.cur.services), Policies: maps.Keys(h.cur.policies)}
	} else {
		held = view.Keys{Workloads: none, Services: none, Policies: none}
	}
	h.applyLocked(view.DeltaOf(s, held))
}

func none(func(string) bool) {}

// Apply installs what changed; entries equal to what the hub holds make no
// new version. The objects of d must not be modified afterwards.
func (h *Hub) Apply(d *view.Delta) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.applyLocked(d)
}

// SetTrustBundle replaces the trust bundle sent to nodes.
func (h *Hub) SetTrustBundle(pem []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stateLocked()
	if slices.Equal(st.bundle, pem) {
		return
	}
	st.bundle = pem
	if !st.empty {
		h.commitLocked(change{trust: true})
	}
}

func (h *Hub) stateLocked() *state {
	if h.cur == nil {
		h.cur = &state{workloads: map[string]*meshconfig.Workload{}, services: map[string]*meshconfig.Service{},
			policies: map[string]*policy.Policy{}, refs: map[string]map[string]int{}, authz: map[string]map[string]bool{}, empty: true}
	}
	return h.cur
}

// applyLocked applies d to the view in place, logs the change and bumps
// the version of every node it touches.
func (h *Hub) applyLocked(d *view.Delta) {
	st := h.stateLocked()
	c := change{workloads: map[string]wlChange{}, trust: st.td != d.TrustDomain}
	st.td = d.TrustDomain
	// Policies first, without applying them: the nodes that refer to a
	// changed one before the workload changes are counted too.
	var newPols []*policy.Policy
	for k, p := range d.Policies {
		if old := st.policies[k]; !sameOrBothNil(old, p) {
			c.policies = append(c.policies, k)
			newPols = append(newPols, p)
		}
	}
	c.policyNodes = map[string]bool{}
	st.nodesReferring(c.policies, c.policyNodes)
	for uid, w := range d.Workloads {
		if old := st.workloads[uid]; !sameOrBothNil(old, w) {
			c.workloads[uid] = wlChange{old: old, new: w}
			st.setWorkload(uid, old, w)
		}
	}
	st.nodesReferring(c.policies, c.policyNodes)
	for i, k := range c.policies {
		if p := newPols[i]; p != nil {
			st.policies[k] = p
		} else {
			delete(st.policies, k)
		}
	}
	for k, s := range d.Services {
		if old := st.services[k]; !sameOrBothNil(old, s) {
			c.services = append(c.services, k)
			if s != nil {
				st.services[k] = s
			} else {
				delete(st.services, k)
			}
		}
	}
	if st.empty {
		h.firstViewLocked()
		return
	}
	if !c.empty() {
		h.commitLocked(c)
	}
}

func sameOrBothNil[T any](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a == b || reflect.DeepEqual(a, b)
}

// commitLocked logs c as the next revision and bumps the version of every
// node it touches.
func (h *Hub) commitLocked(c change) {
	h.rev++
	c.rev = h.rev
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

// firstViewLocked marks the first view installed: there is nothing to diff.
func (h *Hub) firstViewLocked() {
	h.cur.empty = false
	h.rev++
	for _, nv := range h.nodes {
		nv.version = h.rev
	}
	close(h.ready)
	h.broadcastLocked()
}

func (h *Hub) broadcastLocked() {
	h.shared = nil
	clear(h.deltas)
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
// workload's own node, which enforces it, and the labels to no node (the
// controller resolves every selector; a node never reads a label).
func forNode(node string, w *meshconfig.Workload) meshconfig.Workload {
	out := *w
	out.Labels = nil
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

// step is what a stream at a cursor needs next.
type step int

const (
	stepNone step = iota
	stepFull
	stepDelta
)

// stepLocked says what node's stream at cur needs, and returns the new
// cursor and the channel closed on the next change.
func (h *Hub) stepLocked(cur Cursor) (s step, next Cursor, wake <-chan struct{}, closed bool) {
	if h.closed {
		return stepNone, cur, h.wake, true
	}
	next, wake = Cursor{rev: h.rev}, h.wake
	switch {
	case h.cur == nil || h.cur.empty || cur.rev == h.rev:
		return stepNone, cur, wake, false
	case cur.rev == 0 || !h.coversLocked(cur.rev):
		return stepFull, next, wake, false
	default:
		return stepDelta, next, wake, false
	}
}

// Next returns what node's stream at cur must be sent (nil if nothing) as
// one response, the new cursor, and a channel closed on the next change.
// The node must be subscribed. closed is true once the hub is closed.
// (The Server sends the same content encoded once and in chunks: NextPush.)
func (h *Hub) Next(node string, cur Cursor) (resp *configapi.ConfigResponse, next Cursor, wake <-chan struct{}, closed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, next, wake, closed := h.stepLocked(cur)
	switch s {
	case stepFull:
		resp = h.fullLocked(node)
	case stepDelta:
		resp = h.deltaLocked(node, cur.rev)
	}
	if resp != nil {
		h.stampLocked(node, resp)
	}
	return resp, next, wake, closed
}

func (h *Hub) stampLocked(node string, r *configapi.ConfigResponse) {
	r.Version = h.nodes[node].version
	r.TrustDomain, r.TrustBundlePEM = h.cur.td, h.cur.bundle
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
	r.Policies = h.cur.policyBodies(h.cur.refKeys(node))
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
		if h.cur.refs[node][k] > 0 {
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

// state is the view, indexed; the hub changes it in place.
type state struct {
	td        string
	bundle    []byte
	workloads map[string]*meshconfig.Workload // by uid
	services  map[string]*meshconfig.Service  // by namespace/name
	policies  map[string]*policy.Policy       // by namespace/name
	refs      map[string]map[string]int       // node -> policy -> its workloads referring to it
	authz     map[string]map[string]bool      // node -> UIDs of its workloads that carry Authz
	empty     bool                            // no view yet (maybe a bundle)
}

// setWorkload replaces old by w (either may be nil) and keeps refs and
// authz.
func (st *state) setWorkload(uid string, old, w *meshconfig.Workload) {
	st.countRefs(old, -1)
	st.countRefs(w, +1)
	if old != nil && old.Authz != nil {
		delete(st.authz[old.Node], uid)
		if len(st.authz[old.Node]) == 0 {
			delete(st.authz, old.Node)
		}
	}
	if w != nil && w.Authz != nil {
		if st.authz[w.Node] == nil {
			st.authz[w.Node] = map[string]bool{}
		}
		st.authz[w.Node][uid] = true
	}
	if w != nil {
		st.workloads[uid] = w
	} else {
		delete(st.workloads, uid)
	}
}

func (st *state) countRefs(w *meshconfig.Workload, d int) {
	if w == nil || w.Authz == nil {
		return
	}
	for _, k := range w.Authz.PolicyRefs {
		refs := st.refs[w.Node]
		if refs == nil {
			refs = map[string]int{}
			st.refs[w.Node] = refs
		}
		if refs[k] += d; refs[k] <= 0 {
			delete(refs, k)
		}
		if len(refs) == 0 {
			delete(st.refs, w.Node)
		}
	}
}

// nodesReferring adds to nodes every node referring to one of keys now.
func (st *state) nodesReferring(keys []string, nodes map[string]bool) {
	if len(keys) == 0 {
		return
	}
	for node, refs := range st.refs {
		if slices.ContainsFunc(keys, func(k string) bool { return refs[k] > 0 }) {
			nodes[node] = true
		}
	}
}

// refKeys are the policies node's workloads refer to, sorted.
func (st *state) refKeys(node string) []string { return slices.Sorted(maps.Keys(st.refs[node])) }

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

// Workload returns the workload namespace/name of the view (the first by
// UID if there were two), its Authz with the policies it refers to resolved
// into Policies (as its node resolves them), and the trust domain; ok is
// false when the view has no such workload. It looks at every workload:
// for debugging.
func (h *Hub) Workload(namespace, name string) (w meshconfig.Workload, trustDomain string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil || h.cur.empty {
		return w, "", false
	}
	var found *meshconfig.Workload
	for _, x := range h.cur.workloads {
		if x.Namespace == namespace && x.Name == name && (found == nil || x.UID < found.UID) {
			found = x
		}
	}
	if found == nil {
		return w, h.cur.td, false
	}
	w = *found
	if a := found.Authz; a != nil {
		t := *a
		t.Policies, t.PolicyRefs = slices.Clone(a.Policies), nil
		t.Policies = append(t.Policies, h.cur.policyBodies(a.PolicyRefs)...)
		w.Authz = &t
	}
	return w, h.cur.td, true
}

// Service returns the service namespace/name of the view, with its
// routes; ok is false when the view has none. For debugging.
func (h *Hub) Service(namespace, name string) (s meshconfig.Service, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil || h.cur.empty {
		return s, false
	}
	if p := h.cur.services[namespace+"/"+name]; p != nil {
		return *p, true
	}
	return s, false
}
