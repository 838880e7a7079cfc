package view

import (
	"cmp"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// Source is what a Model reads: the informer caches, or fixed Inputs.
type Source interface {
	// All is every input, for a full build.
	All() Inputs
	Pod(namespace, name string) *corev1.Pod
	Service(namespace, name string) *corev1.Service
	// ServiceSlices are the EndpointSlices of a Service.
	ServiceSlices(namespace, service string) []*EndpointSlice
	Policy(namespace, name string) *v1alpha1.AgentPolicy
	// Routes are every HTTPRoute, GRPCRoute and ReferenceGrant.
	Routes() RouteInputs
	// TrafficPolicies are every TrafficPolicy.
	TrafficPolicies() []*v1alpha1.TrafficPolicy
}

// Dirty names what changed since the last Update, by namespace/name.
type Dirty struct {
	All      bool            // rebuild everything (a Namespace changed)
	Pods     map[string]bool // Pods
	Services map[string]bool // Services, also for a change to one of their EndpointSlices
	Policies map[string]bool // AgentPolicies
	// Routes are HTTPRoutes, GRPCRoutes and ReferenceGrants, by
	// kind/namespace/name.
	Routes  map[string]bool
	Traffic map[string]bool // TrafficPolicies
}

// Empty reports whether d names nothing.
func (d *Dirty) Empty() bool {
	return !d.All && len(d.Pods)+len(d.Services)+len(d.Policies)+len(d.Routes)+len(d.Traffic) == 0
}

// Add adds o to d.
func (d *Dirty) Add(o Dirty) {
	d.All = d.All || o.All
	d.Pods = union(d.Pods, o.Pods)
	d.Services = union(d.Services, o.Services)
	d.Policies = union(d.Policies, o.Policies)
	d.Routes = union(d.Routes, o.Routes)
	d.Traffic = union(d.Traffic, o.Traffic)
}

func union(a, b map[string]bool) map[string]bool {
	if a == nil {
		a = map[string]bool{}
	}
	maps.Copy(a, b)
	return a
}

// Model is the view, kept up to date per changed object: an Update
// recomputes the workloads of the changed pods, the services of the
// changed Services and slices (and those whose slices name a changed pod),
// recompiles the changed policies (and those whose peers are chosen by
// podSelector, when the workloads changed), re-selects the policies of
// a namespace whose policies changed, and recomputes the routes when a
// route or ReferenceGrant changed or a Service they refer to came, went or
// changed its ports or cluster IP (and then the services whose routes
// changed), and resolves the TrafficPolicies again when one changed or a
// Service they target came or went (and then the services whose policy
// changed). Each derived object is computed once and shared by every
// node (the hub hands out the same pointers). A
// Namespace change, or a pod change while two pods claim one address,
// rebuilds everything, as Compute does; the result is the same either way
// (TestModelMatchesCompute).
//
// A Model is not safe for concurrent use; the objects it hands out are
// never modified.
type Model struct {
	src   Source
	built bool
	// Rebuilds and Patches count full and incremental updates.
	Rebuilds, Patches int
	td                string
	x                 *authzIndex
	// Of the last full build (a Namespace change rebuilds):
	namespaces []*corev1.Namespace
	enabled    map[string]bool

	podUID      map[string]string               // pod namespace/name -> UID
	pods        map[string]*corev1.Pod          // every pod by UID
	workloads   map[string]*meshconfig.Workload // by UID
	ipOwner     map[netip.Addr]string           // address -> workload UID
	conflicts   bool                            // a pod is left out: another holds its address
	services    map[string]*meshconfig.Service  // by namespace/name
	svcWarn     map[string][]Warning            // of the services, by namespace/name
	svcPods     map[string][]string             // service -> UIDs its slices name
	podSvcs     map[string]map[string]bool      // UID -> services whose slices name it
	policies    map[string]*compiled            // by namespace/name
	authzBodies map[string]*policy.Policy       // the compiled bodies of policies with a selector
	routes      *routeTable
	traffic     *trafficTable
}

// NewModel returns a model over src; the first Update builds it.
func NewModel(src Source) *Model { return &Model{src: src} }

// Update brings the model up to date with what d names and returns what
// changed (possibly entries equal to before).
func (m *Model) Update(d Dirty) *Delta {
	if d.All || !m.built || (m.conflicts && len(d.Pods) > 0) {
		return m.rebuild(nil)
	}
	u := &update{m: m, d: &Delta{TrustDomain: m.td, Workloads: map[string]*meshconfig.Workload{},
		Services: map[string]*meshconfig.Service{}, Policies: map[string]*policy.Policy{}},
		services: maps.Clone(d.Services), reselect: map[string]bool{}}
	if u.services == nil {
		u.services = map[string]bool{}
	}
	for _, key := range slices.Sorted(maps.Keys(d.Pods)) {
		if !u.pod(key) {
			return m.rebuild(u.d) // an address clash: the full rule decides
		}
	}
	for key := range d.Policies {
		u.recompile(key)
	}
	if u.workloadSet {
		for key, c := range m.policies {
			if c.usesWorkloads && !d.Policies[key] {
				u.recompile(key)
			}
		}
	}
	u.reselectPolicies()
	u.routes(d)
	u.traffic(d)
	for key := range u.services {
		u.service(key)
	}
	m.Patches++
	return u.d
}

// update is one incremental Update in progress.
type update struct {
	m           *Model
	d           *Delta
	services    map[string]bool // to recompute
	reselect    map[string]bool // namespaces whose workloads' policy refs to redo
	workloadSet bool            // a workload came, went, or changed labels or namespace
}

// pod recomputes the workload of the pod at key; false means an address
// clash (the caller rebuilds).
func (u *update) pod(key string) bool {
	m := u.m
	ns, name, _ := strings.Cut(key, "/")
	p := m.src.Pod(ns, name)
	if old := m.podUID[key]; old != "" && (p == nil || string(p.UID) != old) {
		u.removePod(old)
		delete(m.podUID, key)
	}
	if p == nil {
		return true
	}
	uid := string(p.UID)
	m.podUID[key], m.pods[uid] = uid, p
	u.servicesOf(uid)
	old := m.workloads[uid]
	w, ok := workload(p, m.enabled[ns])
	if !ok {
		if old != nil {
			u.dropWorkload(uid)
		}
		return true
	}
	for _, ip := range w.IPs {
		if o, taken := m.ipOwner[ip]; taken && o != uid {
			return false
		}
	}
	var ws []Warning
	w.Authz, ws = m.x.target(&w, p)
	setWarnings(m.x.podWarn, uid, ws)
	if old != nil && reflect.DeepEqual(old, &w) {
		return true
	}
	if old != nil {
		m.releaseIPs(old)
	}
	for _, ip := range w.IPs {
		m.ipOwner[ip] = uid
	}
	if old == nil || old.Namespace != w.Namespace || !maps.Equal(old.Labels, w.Labels) {
		u.workloadSet = true
	}
	m.workloads[uid] = &w
	u.d.Workloads[uid] = &w
	return true
}

func setWarnings(by map[string][]Warning, uid string, ws []Warning) {
	if len(ws) > 0 {
		by[uid] = ws
	} else {
		delete(by, uid)
	}
}

// servicesOf marks the services whose slices name uid for recomputing:
// whether an endpoint counts depends on its pod.
func (u *update) servicesOf(uid string) {
	for k := range u.m.podSvcs[uid] {
		u.services[k] = true
	}
}

func (u *update) removePod(uid string) {
	u.servicesOf(uid)
	delete(u.m.pods, uid)
	if u.m.workloads[uid] != nil {
		u.dropWorkload(uid)
	}
}

func (u *update) dropWorkload(uid string) {
	m := u.m
	m.releaseIPs(m.workloads[uid])
	delete(m.workloads, uid)
	delete(m.x.podWarn, uid)
	u.d.Workloads[uid] = nil
	u.workloadSet = true
}

func (m *Model) releaseIPs(w *meshconfig.Workload) {
	for _, ip := range w.IPs {
		if m.ipOwner[ip] == w.UID {
			delete(m.ipOwner, ip)
		}
	}
}

// recompile compiles the policy at key again and marks its namespace for
// re-selection.
func (u *update) recompile(key string) {
	m := u.m
	ns, name, _ := strings.Cut(key, "/")
	u.reselect[ns] = true
	p := m.src.Policy(ns, name)
	if p == nil {
		delete(m.policies, key)
	} else {
		c := compileOne(p, m.resolver())
		m.policies[key] = &c
	}
	var body *policy.Policy
	if c := m.policies[key]; c != nil && c.selector != nil {
		body = &c.policy
	}
	if old := m.authzBodies[key]; old != nil || body != nil {
		u.d.Policies[key] = body
	}
	if body != nil {
		m.authzBodies[key] = body
	} else {
		delete(m.authzBodies, key)
	}
}

// reselectPolicies redoes the policy refs of every workload in a namespace
// whose policies were recompiled.
func (u *update) reselectPolicies() {
	m := u.m
	if len(u.reselect) == 0 {
		return
	}
	for ns := range u.reselect {
		m.x.byNS[ns] = nil
	}
	for _, key := range slices.Sorted(maps.Keys(m.policies)) {
		if c := m.policies[key]; u.reselect[c.state.Namespace] {
			m.x.byNS[c.state.Namespace] = append(m.x.byNS[c.state.Namespace], c)
		}
	}
	for ns := range u.reselect {
		if len(m.x.byNS[ns]) == 0 {
			delete(m.x.byNS, ns)
		}
	}
	for uid, w := range m.workloads {
		if !u.reselect[w.Namespace] {
			continue
		}
		refs := m.x.refs(w)
		if slices.Equal(refs, w.Authz.PolicyRefs) {
			continue
		}
		nw := *w
		t := *w.Authz
		t.PolicyRefs = refs
		nw.Authz = &t
		m.workloads[uid] = &nw
		u.d.Workloads[uid] = &nw
	}
}

// routes recomputes the routes when d changed a route or ReferenceGrant,
// or what they read of a Service, and marks the services whose routes
// changed for recomputing.
func (u *update) routes(d Dirty) {
	m := u.m
	redo := len(d.Routes) > 0
	for key := range d.Services {
		if redo {
			break
		}
		if m.routes.dependsOn(key) {
			ns, name, _ := strings.Cut(key, "/")
			redo = serviceFacts(m.src.Service(ns, name)) != m.routes.facts[key]
		}
	}
	if !redo {
		return
	}
	t := computeRoutes(m.src.Routes(), m.src.Service)
	for _, key := range m.routes.changedServices(t) {
		u.services[key] = true
	}
	m.routes = t
}

// traffic resolves the TrafficPolicies again when d changed one, or
// whether a Service they target exists, and marks the services whose
// policy changed for recomputing.
func (u *update) traffic(d Dirty) {
	m := u.m
	redo := len(d.Traffic) > 0
	for key := range d.Services {
		if redo {
			break
		}
		ns, name, _ := strings.Cut(key, "/")
		redo = m.traffic.stale(key, m.src.Service(ns, name))
	}
	if !redo {
		return
	}
	t := computeTraffic(m.src.TrafficPolicies(), m.src.Service)
	for _, key := range m.traffic.changedServices(t) {
		u.services[key] = true
	}
	m.traffic = t
}

// service recomputes the service at key from its Service, slices,
// routes and TrafficPolicy.
func (u *update) service(key string) {
	m := u.m
	ns, name, _ := strings.Cut(key, "/")
	svc := m.src.Service(ns, name)
	eps := m.src.ServiceSlices(ns, name)
	m.indexSlices(key, eps)
	old := m.services[key]
	if svc == nil {
		delete(m.svcWarn, key)
		if old != nil {
			delete(m.services, key)
			u.d.Services[key] = nil
		}
		return
	}
	s, ws := serviceOf(svc, eps, m.pods)
	s.Routes = m.routes.bySvc[key]
	s.Traffic = m.traffic.bySvc[key]
	setWarnings(m.svcWarn, key, ws)
	if old != nil && reflect.DeepEqual(old, &s) {
		return
	}
	m.services[key] = &s
	u.d.Services[key] = &s
}

// indexSlices records which pods the slices of service key name.
func (m *Model) indexSlices(key string, eps []*EndpointSlice) {
	for _, uid := range m.svcPods[key] {
		if set := m.podSvcs[uid]; set != nil {
			delete(set, key)
			if len(set) == 0 {
				delete(m.podSvcs, uid)
			}
		}
	}
	uids := slicePods(eps)
	if len(uids) == 0 {
		delete(m.svcPods, key)
		return
	}
	m.svcPods[key] = uids
	for _, uid := range uids {
		if m.podSvcs[uid] == nil {
			m.podSvcs[uid] = map[string]bool{}
		}
		m.podSvcs[uid][key] = true
	}
}

// resolver answers compile's questions over the model's namespaces and
// workloads.
func (m *Model) resolver() *resolver {
	ws := make([]meshconfig.Workload, 0, len(m.workloads))
	for _, w := range m.workloads {
		ws = append(ws, *w)
	}
	return &resolver{trustDomain: m.td, namespaces: m.namespaces, workloads: ws}
}

// rebuild builds everything from the source, as Compute does, and returns
// every object, with nil for those that went: those the model held, and
// those an abandoned update (partial, may be nil) had already dropped.
func (m *Model) rebuild(partial *Delta) *Delta {
	m.Rebuilds++
	in := m.src.All()
	s, fx := computeFull(in)
	prev := Keys{Workloads: none, Services: none, Policies: none}
	if m.built {
		prev = Keys{Workloads: maps.Keys(m.workloads), Services: maps.Keys(m.services), Policies: maps.Keys(m.authzBodies)}
	}
	d := DeltaOf(s, prev)
	if partial != nil {
		gone(d.Workloads, partial.Workloads)
		gone(d.Services, partial.Services)
		gone(d.Policies, partial.Policies)
	}
	m.built, m.td, m.x, m.routes, m.traffic = true, in.TrustDomain, fx.authz, fx.routes, fx.traffic
	m.namespaces, m.enabled, m.pods, m.conflicts, m.svcWarn = in.Namespaces, fx.enabled, fx.pods, fx.conflicts, fx.svcWarn
	m.podUID = make(map[string]string, len(in.Pods))
	for _, p := range in.Pods {
		m.podUID[p.Namespace+"/"+p.Name] = string(p.UID)
	}
	m.workloads = make(map[string]*meshconfig.Workload, len(s.Workloads))
	m.ipOwner = make(map[netip.Addr]string, len(s.Workloads))
	for i := range s.Workloads {
		w := &s.Workloads[i]
		m.workloads[w.UID] = w
		for _, ip := range w.IPs {
			m.ipOwner[ip] = w.UID
		}
	}
	m.services = make(map[string]*meshconfig.Service, len(s.Services))
	for i := range s.Services {
		m.services[s.Services[i].Key()] = &s.Services[i]
	}
	m.svcPods, m.podSvcs = map[string][]string{}, map[string]map[string]bool{}
	for key, eps := range fx.slices {
		m.indexSlices(key, eps)
	}
	m.policies, m.authzBodies = map[string]*compiled{}, map[string]*policy.Policy{}
	for i := range m.x.compiled {
		c := &m.x.compiled[i]
		m.policies[c.state.Key()] = c
		if c.selector != nil {
			m.authzBodies[c.state.Key()] = &c.policy
		}
	}
	// The compiled bodies in d are the snapshot's copies; hand out the
	// model's, which later updates compare with.
	for k, p := range m.authzBodies {
		d.Policies[k] = p
	}
	return d
}

func none(func(string) bool) {}

// gone adds to d a nil for every key of partial that d lacks.
func gone[T any](d, partial map[string]*T) {
	for k := range partial {
		if _, ok := d[k]; !ok {
			d[k] = nil
		}
	}
}

// Status is what the controller reports about the view: each policy's
// state, the annotation warnings, each route's state and each
// TrafficPolicy's state, in Snapshot's order.
type Status struct {
	Policies []PolicyState
	Warnings []Warning
	Routes   []RouteState
	Traffic  []TrafficState
}

// Status returns the model's policy, route and TrafficPolicy states and
// warnings.
func (m *Model) Status() Status {
	var st Status
	for _, c := range m.sortedPolicies() {
		st.Policies = append(st.Policies, c.state)
	}
	st.Warnings = slices.Clone(m.x.nsWarnings)
	for _, uid := range slices.Sorted(maps.Keys(m.x.podWarn)) {
		st.Warnings = append(st.Warnings, m.x.podWarn[uid]...)
	}
	for _, key := range slices.Sorted(maps.Keys(m.svcWarn)) {
		st.Warnings = append(st.Warnings, m.svcWarn[key]...)
	}
	st.Routes = m.routes.states
	st.Traffic = m.traffic.states
	return st
}

// sortedPolicies are the compiled policies by namespace, then name.
func (m *Model) sortedPolicies() []*compiled {
	out := slices.Collect(maps.Values(m.policies))
	slices.SortFunc(out, func(a, b *compiled) int {
		return cmp.Or(cmp.Compare(a.state.Namespace, b.state.Namespace), cmp.Compare(a.state.Name, b.state.Name))
	})
	return out
}

// Snapshot materializes the whole view (for tests and debugging: it costs
// the size of the view).
func (m *Model) Snapshot() *Snapshot {
	s := &Snapshot{TrustDomain: m.td, Services: make([]meshconfig.Service, 0, len(m.services))}
	for _, uid := range slices.Sorted(maps.Keys(m.workloads)) {
		s.Workloads = append(s.Workloads, *m.workloads[uid])
	}
	for _, k := range slices.Sorted(maps.Keys(m.services)) {
		s.Services = append(s.Services, *m.services[k])
	}
	for _, k := range slices.Sorted(maps.Keys(m.authzBodies)) {
		s.AuthzPolicies = append(s.AuthzPolicies, *m.authzBodies[k])
	}
	st := m.Status()
	s.Policies, s.Warnings, s.Routes, s.Traffic = st.Policies, st.Warnings, st.Routes, st.Traffic
	return s
}
