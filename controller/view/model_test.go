package view

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// fixedSource is a Source over Inputs that a test changes in place.
type fixedSource struct{ in *Inputs }

func (f fixedSource) All() Inputs {
	in := *f.in
	in.Namespaces, in.Pods, in.Services = slices.Clone(in.Namespaces), slices.Clone(in.Pods), slices.Clone(in.Services)
	in.Slices, in.Policies = slices.Clone(in.Slices), slices.Clone(in.Policies)
	in.Routes = f.Routes()
	in.TrafficPolicies = f.TrafficPolicies()
	return in
}

func (f fixedSource) TrafficPolicies() []*v1alpha1.TrafficPolicy {
	return slices.Clone(f.in.TrafficPolicies)
}

func (f fixedSource) Routes() RouteInputs {
	r := f.in.Routes
	return RouteInputs{HTTPRoutes: slices.Clone(r.HTTPRoutes), GRPCRoutes: slices.Clone(r.GRPCRoutes), Grants: slices.Clone(r.Grants)}
}

func find[T metav1.Object](xs []T, ns, name string) (T, int) {
	for i, x := range xs {
		if x.GetNamespace() == ns && x.GetName() == name {
			return x, i
		}
	}
	var zero T
	return zero, -1
}

func (f fixedSource) Pod(ns, name string) *corev1.Pod { p, _ := find(f.in.Pods, ns, name); return p }
func (f fixedSource) Service(ns, name string) *corev1.Service {
	s, _ := find(f.in.Services, ns, name)
	return s
}
func (f fixedSource) Policy(ns, name string) *v1alpha1.AgentPolicy {
	p, _ := find(f.in.Policies, ns, name)
	return p
}
func (f fixedSource) ServiceSlices(ns, svc string) []*EndpointSlice {
	var out []*EndpointSlice
	for _, s := range f.in.Slices {
		if s.Namespace == ns && s.Labels[discoveryv1.LabelServiceName] == svc {
			out = append(out, s)
		}
	}
	return out
}

// put replaces the object with x's namespace/name in xs, or appends x.
func put[T metav1.Object](xs []T, x T) []T {
	if _, i := find(xs, x.GetNamespace(), x.GetName()); i >= 0 {
		xs[i] = x
		return xs
	}
	return append(xs, x)
}

func drop[T metav1.Object](xs []T, ns, name string) []T {
	if _, i := find(xs, ns, name); i >= 0 {
		return slices.Delete(xs, i, i+1)
	}
	return xs
}

// TestModelMatchesCompute: over random streams of changes to pods
// (created, deleted, recreated under the same name, relabelled, moved to
// another address or one another pod holds, finished, host-network,
// annotated), Services, EndpointSlices, AgentPolicies (podSelector and
// namespaceSelector peers), HTTPRoutes, GRPCRoutes and ReferenceGrants,
// TrafficPolicies (conflicting, invalid, targeting missing Services) and
// now and then a Namespace, the model updated
// with only what changed equals Compute over all the inputs after every
// step, and the Delta it returned takes a holder of the previous view to
// the new one.
func TestModelMatchesCompute(t *testing.T) {
	var rebuilds, patches, routed, trafficked, conflicted int
	defer func() {
		t.Logf("%d incremental updates, %d rebuilds, %d views with routes, %d with TrafficPolicies, %d with a conflict",
			patches, rebuilds, routed, trafficked, conflicted)
		if patches < rebuilds {
			t.Errorf("only %d of %d updates were incremental: the test hardly covers them", patches, patches+rebuilds)
		}
		if routed < (patches+rebuilds)/4 {
			t.Errorf("only %d of %d views have routes: the test hardly covers them", routed, patches+rebuilds)
		}
		if trafficked < (patches+rebuilds)/4 || conflicted < (patches+rebuilds)/10 {
			t.Errorf("only %d (%d with a conflict) of %d views have TrafficPolicies: the test hardly covers them",
				trafficked, conflicted, patches+rebuilds)
		}
	}()
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 11))
		in := &Inputs{TrustDomain: "td"}
		for i := range 3 {
			n := nsAnnotated(fmt.Sprintf("ns%d", i), nil)
			if i < 2 {
				n.Labels[DataplaneLabel] = DataplaneEnabled
			}
			in.Namespaces = append(in.Namespaces, n)
		}
		m := NewModel(fixedSource{in})
		held := map[string]any{}
		apply(held, m.Update(Dirty{All: true}))
		gen := &changer{rng: rng, in: in}
		defer func() { rebuilds, patches = rebuilds+m.Rebuilds, patches+m.Patches }()
		for step := range 80 {
			d := gen.changes(1 + rng.IntN(4))
			delta := m.Update(d)
			apply(held, delta)
			want := Compute(fixedSource{in}.All())
			got := m.Snapshot()
			if slices.ContainsFunc(want.Services, func(s meshconfig.Service) bool { return len(s.Routes) > 0 }) {
				routed++
			}
			if slices.ContainsFunc(want.Services, func(s meshconfig.Service) bool { return s.Traffic != nil }) {
				trafficked++
			}
			if slices.ContainsFunc(want.Traffic, func(s TrafficState) bool { return s.Accepted.Reason == v1alpha1.ReasonConflicted }) {
				conflicted++
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d (dirty %+v): model differs from Compute:\n%s", seed, step, d, snapDiff(got, want))
			}
			if err := heldMatches(held, want); err != nil {
				t.Fatalf("seed %d step %d: applying the deltas: %v", seed, step, err)
			}
		}
	}
}

func apply(held map[string]any, d *Delta) {
	for k, w := range d.Workloads {
		set(held, "w/"+k, w)
	}
	for k, s := range d.Services {
		set(held, "s/"+k, s)
	}
	for k, p := range d.Policies {
		set(held, "p/"+k, p)
	}
}

func set[T any](held map[string]any, k string, v *T) {
	if v == nil {
		delete(held, k)
		return
	}
	held[k] = v
}

func heldMatches(held map[string]any, s *Snapshot) error {
	want := map[string]any{}
	for i := range s.Workloads {
		want["w/"+s.Workloads[i].UID] = &s.Workloads[i]
	}
	for i := range s.Services {
		want["s/"+s.Services[i].Key()] = &s.Services[i]
	}
	for i := range s.AuthzPolicies {
		want["p/"+s.AuthzPolicies[i].Key()] = &s.AuthzPolicies[i]
	}
	for k, v := range want {
		if h, ok := held[k]; !ok || !reflect.DeepEqual(h, v) {
			return fmt.Errorf("%s: held %+v, want %+v", k, h, v)
		}
	}
	for k := range held {
		if _, ok := want[k]; !ok {
			return fmt.Errorf("%s: held, but gone", k)
		}
	}
	return nil
}

func snapDiff(got, want *Snapshot) string {
	switch {
	case !reflect.DeepEqual(got.Workloads, want.Workloads):
		for i := range max(len(got.Workloads), len(want.Workloads)) {
			var g, w *meshconfig.Workload
			if i < len(got.Workloads) {
				g = &got.Workloads[i]
			}
			if i < len(want.Workloads) {
				w = &want.Workloads[i]
			}
			if !reflect.DeepEqual(g, w) {
				return fmt.Sprintf("workload %d:\n got %+v %+v\nwant %+v %+v", i, g, authzOf(g), w, authzOf(w))
			}
		}
	case !reflect.DeepEqual(got.Services, want.Services):
		return fmt.Sprintf("services:\n got %+v\nwant %+v", got.Services, want.Services)
	case !reflect.DeepEqual(got.AuthzPolicies, want.AuthzPolicies):
		return fmt.Sprintf("authz policies:\n got %+v\nwant %+v", got.AuthzPolicies, want.AuthzPolicies)
	case !reflect.DeepEqual(got.Policies, want.Policies):
		return fmt.Sprintf("policy states:\n got %+v\nwant %+v", got.Policies, want.Policies)
	case !reflect.DeepEqual(got.Routes, want.Routes):
		return fmt.Sprintf("route states:\n got %+v\nwant %+v", got.Routes, want.Routes)
	case !reflect.DeepEqual(got.Traffic, want.Traffic):
		return fmt.Sprintf("TrafficPolicy states:\n got %+v\nwant %+v", got.Traffic, want.Traffic)
	}
	return fmt.Sprintf("warnings:\n got %+v\nwant %+v", got.Warnings, want.Warnings)
}

func authzOf(w *meshconfig.Workload) *policy.Target {
	if w == nil {
		return nil
	}
	return w.Authz
}

// changer makes random changes to its inputs and names them.
type changer struct {
	rng *rand.Rand
	in  *Inputs
	gen int // bumps UIDs of recreated pods
}

func (c *changer) changes(n int) Dirty {
	d := Dirty{Pods: map[string]bool{}, Services: map[string]bool{}, Policies: map[string]bool{}, Routes: map[string]bool{},
		Traffic: map[string]bool{}}
	for range n {
		c.one(&d)
	}
	return d
}

func (c *changer) nsName() string { return fmt.Sprintf("ns%d", c.rng.IntN(3)) }

func (c *changer) one(d *Dirty) {
	r := c.rng
	switch k := r.IntN(26); {
	case k < 9: // a pod
		ns, name := c.nsName(), fmt.Sprintf("p%d", r.IntN(8))
		d.Pods[ns+"/"+name] = true
		if r.IntN(5) == 0 {
			c.in.Pods = drop(c.in.Pods, ns, name)
			return
		}
		c.gen++
		ip := fmt.Sprintf("10.0.%d.%d", r.IntN(4), r.IntN(250))
		if len(c.in.Pods) > 0 && r.IntN(15) == 0 {
			ip = c.in.Pods[r.IntN(len(c.in.Pods))].Status.PodIP // a clash, or an address freed and taken again
		}
		p := pod(ns, name, fmt.Sprintf("n%d", r.IntN(2)), ip)
		if old := (fixedSource{c.in}).Pod(ns, name); old != nil && r.IntN(3) > 0 {
			p.UID, p.CreationTimestamp = old.UID, old.CreationTimestamp // the same pod, changed
		} else {
			p.UID = types.UID(fmt.Sprintf("uid-%s-%s-%d", ns, name, c.gen)) // created or recreated
			p.CreationTimestamp = metav1.NewTime(p.CreationTimestamp.Add(timeStep(c.gen)))
		}
		p.Labels = map[string]string{"app": fmt.Sprintf("a%d", r.IntN(3))}
		switch r.IntN(12) {
		case 0:
			p.Status.PodIP, p.Status.PodIPs = "", nil
		case 1:
			p.Status.Phase = corev1.PodSucceeded
		case 2:
			p.Spec.HostNetwork = true
		case 3:
			p.Annotations = map[string]string{v1alpha1.MTLSModeAnnotation: "bogus"}
		case 4:
			p.Annotations = map[string]string{v1alpha1.MTLSModeAnnotation: "STRICT"}
		case 5:
			p.Spec.Containers = []corev1.Container{ctr(tcpProbe(num(8080)), nil, nil)}
		}
		c.in.Pods = put(c.in.Pods, p)
	case k < 13: // a slice
		ns, svcName := c.nsName(), fmt.Sprintf("s%d", r.IntN(3))
		d.Services[ns+"/"+svcName] = true
		name := fmt.Sprintf("%s-%d", svcName, r.IntN(2))
		if r.IntN(4) == 0 {
			c.in.Slices = drop(c.in.Slices, ns, name)
			return
		}
		var eps []discoveryv1.Endpoint
		for range r.IntN(4) {
			pn := fmt.Sprintf("p%d", r.IntN(8))
			e := ep(fmt.Sprintf("10.0.9.%d", r.IntN(250)), "", ptr(r.IntN(4) > 0))
			if p := (fixedSource{c.in}).Pod(ns, pn); p != nil && p.Status.PodIP != "" && r.IntN(5) > 0 {
				e.Addresses = []string{p.Status.PodIP}
				e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: pn, UID: p.UID}
			} else if r.IntN(2) == 0 {
				e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: pn, UID: types.UID("uid-gone-" + pn)}
			}
			eps = append(eps, e)
		}
		c.in.Slices = put(c.in.Slices, slice(ns, name, svcName, eps...))
	case k < 15: // a service
		ns, name := c.nsName(), fmt.Sprintf("s%d", r.IntN(3))
		d.Services[ns+"/"+name] = true
		if r.IntN(4) == 0 {
			c.in.Services = drop(c.in.Services, ns, name)
			return
		}
		s := svc(ns, name)
		s.Spec.Ports[0].Port = int32(80 + r.IntN(3))
		switch r.IntN(4) { // sometimes the protocol annotation, valid or not
		case 0:
			s.Annotations = map[string]string{v1alpha1.AppProtocolsAnnotation: "http=agentmesh.io/mcp"}
		case 1:
			s.Annotations = map[string]string{v1alpha1.AppProtocolsAnnotation: "81=tcp,garbage"}
		}
		if r.IntN(6) == 0 {
			s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.org"
		}
		c.in.Services = put(c.in.Services, s)
	case k < 19: // a policy
		ns, name := c.nsName(), fmt.Sprintf("pol%d", r.IntN(3))
		d.Policies[ns+"/"+name] = true
		if r.IntN(4) == 0 {
			c.in.Policies = drop(c.in.Policies, ns, name)
			return
		}
		var sel map[string]string
		if r.IntN(3) > 0 {
			sel = map[string]string{"app": fmt.Sprintf("a%d", r.IntN(3))}
		}
		from := v1alpha1.Source{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", r.IntN(3))}}}
		switch r.IntN(3) {
		case 0:
			from = v1alpha1.Source{ServiceAccounts: []string{"sa-p1"}}
		case 1:
			from.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": c.nsName()}}
		}
		action := v1alpha1.ActionAllow
		if r.IntN(3) == 0 {
			action = v1alpha1.ActionDeny
		}
		p := agentPolicy(ns, name, sel, action, v1alpha1.Rule{From: []v1alpha1.Source{from}, Ports: []v1alpha1.Port{{Port: 80}}})
		if r.IntN(8) == 0 {
			p.Spec.Action = "Bogus" // invalid: enforced fail closed
		}
		c.in.Policies = put(c.in.Policies, p)
	case k < 22: // a route
		c.route(d)
	case k < 24: // a TrafficPolicy
		c.trafficPolicy(d)
	case k < 25: // a ReferenceGrant
		ns := c.nsName()
		from, kind := c.nsName(), []string{KindHTTPRoute, KindGRPCRoute}[r.IntN(2)]
		d.Routes["ReferenceGrant/"+ns+"/g-"+from] = true
		if r.IntN(3) == 0 {
			c.in.Routes.Grants = drop(c.in.Routes.Grants, ns, "g-"+from)
			return
		}
		var to *string
		if r.IntN(2) == 0 {
			to = ptr(fmt.Sprintf("s%d", r.IntN(3)))
		}
		c.in.Routes.Grants = put(c.in.Routes.Grants, grant(ns, kind, from, to))
	default: // a namespace's annotations or enrollment
		i := r.IntN(3)
		n := nsAnnotated(fmt.Sprintf("ns%d", i), map[string]string{v1alpha1.DefaultActionAnnotation: []string{"Allow", "Deny", "bogus"}[r.IntN(3)]})
		if r.IntN(2) == 0 {
			n.Labels[DataplaneLabel] = DataplaneEnabled
		}
		c.in.Namespaces[i] = n
		d.All = true
	}
}

// timeStep keeps creation times of recreated pods increasing.
func timeStep(gen int) time.Duration { return time.Duration(gen) * time.Second }

// route makes, changes or deletes an HTTPRoute or GRPCRoute with parents
// and backends among the changer's services, now and then with a bad
// regular expression.
func (c *changer) route(d *Dirty) {
	r := c.rng
	ns, name := c.nsName(), fmt.Sprintf("r%d", r.IntN(3))
	grpc := r.IntN(3) == 0
	kind := KindHTTPRoute
	if grpc {
		kind = KindGRPCRoute
	}
	d.Routes[kind+"/"+ns+"/"+name] = true
	if r.IntN(4) == 0 {
		if grpc {
			c.in.Routes.GRPCRoutes = drop(c.in.Routes.GRPCRoutes, ns, name)
		} else {
			c.in.Routes.HTTPRoutes = drop(c.in.Routes.HTTPRoutes, ns, name)
		}
		return
	}
	var parents []gwv1.ParentReference
	for range 1 + r.IntN(2) {
		pns := ""
		if r.IntN(3) == 0 {
			pns = c.nsName()
		}
		parents = append(parents, svcParent(fmt.Sprintf("s%d", r.IntN(3)), pns, []int32{0, 80, 81}[r.IntN(3)]))
	}
	var backends []gwv1.BackendRef
	for range r.IntN(3) {
		bns := ""
		if r.IntN(3) == 0 {
			bns = c.nsName()
		}
		backends = append(backends, backendRef(bns, fmt.Sprintf("s%d", r.IntN(3)), int32(80+r.IntN(3)), int32(r.IntN(4))-1))
	}
	created := int64(r.IntN(3))
	if grpc {
		m := gwv1.GRPCRouteMatch{Method: &gwv1.GRPCMethodMatch{Service: ptr(fmt.Sprintf("pkg.S%d", r.IntN(2)))}}
		if r.IntN(2) == 0 {
			m.Method.Method = ptr("M")
		}
		var bs []gwv1.GRPCBackendRef
		for _, b := range backends {
			bs = append(bs, gwv1.GRPCBackendRef{BackendRef: b})
		}
		g := grpcRoute(ns, name, created, parents, gwv1.GRPCRouteRule{Matches: []gwv1.GRPCRouteMatch{m}, BackendRefs: bs})
		c.in.Routes.GRPCRoutes = put(c.in.Routes.GRPCRoutes, g)
		return
	}
	var rules []gwv1.HTTPRouteRule
	for range 1 + r.IntN(2) {
		var ms []gwv1.HTTPRouteMatch
		for range r.IntN(3) {
			typ := []gwv1.PathMatchType{gwv1.PathMatchExact, gwv1.PathMatchPathPrefix, gwv1.PathMatchRegularExpression}[r.IntN(3)]
			path := fmt.Sprintf("/p%d", r.IntN(3))
			if typ == gwv1.PathMatchRegularExpression && r.IntN(6) == 0 {
				path = "/(" // unsupported
			}
			ms = append(ms, pathMatch(typ, path))
		}
		rules = append(rules, gwv1.HTTPRouteRule{Matches: ms, BackendRefs: httpBackends(backends...)})
	}
	c.in.Routes.HTTPRoutes = put(c.in.Routes.HTTPRoutes, httpRoute(ns, name, created, parents, rules...))
}

// trafficPolicy makes, changes or deletes a TrafficPolicy targeting one
// or two of the changer's services, created at one of three seconds (so
// that some tie and are ordered by name), now and then invalid.
func (c *changer) trafficPolicy(d *Dirty) {
	r := c.rng
	ns, name := c.nsName(), fmt.Sprintf("tp%d", r.IntN(3))
	d.Traffic[ns+"/"+name] = true
	if r.IntN(4) == 0 {
		c.in.TrafficPolicies = drop(c.in.TrafficPolicies, ns, name)
		return
	}
	var targets []string
	for range 1 + r.IntN(2) {
		targets = append(targets, fmt.Sprintf("s%d", r.IntN(4))) // s3 never exists
	}
	tp := trafficPolicy(ns, name, int64(r.IntN(3)), targets...)
	tp.Generation = int64(1 + r.IntN(2))
	switch r.IntN(6) {
	case 0: // invalid: Convert refuses it
		tp.Spec.OutlierDetection = &v1alpha1.OutlierDetection{MaxEjectionTime: ptr(v1alpha1.Duration("1s"))}
	case 1:
		tp.Spec.LoadBalancer = &v1alpha1.LoadBalancer{Algorithm: v1alpha1.RoundRobin}
	case 2:
		tp.Spec.RateLimit = &v1alpha1.RateLimit{PerSource: &v1alpha1.TokenBucket{RequestsPerSecond: int32(1 + r.IntN(3))}}
	}
	c.in.TrafficPolicies = put(c.in.TrafficPolicies, tp)
}
