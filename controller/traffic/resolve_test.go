package traffic

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// tp is the policy ns/name created age seconds after t0, at generation
// 3, targeting the named Services.
func tp(ns, name string, age int, targets ...string) *v1alpha1.TrafficPolicy {
	p := &v1alpha1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, Generation: 3,
		CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second)),
	}}
	for _, s := range targets {
		p.Spec.TargetRefs = append(p.Spec.TargetRefs, v1alpha1.LocalPolicyTargetReference{Kind: "Service", Name: s})
	}
	return p
}

// invalid makes p fail Convert.
func invalid(p *v1alpha1.TrafficPolicy) *v1alpha1.TrafficPolicy {
	p.Spec.LoadBalancer = &v1alpha1.LoadBalancer{Algorithm: v1alpha1.ConsistentHash}
	return p
}

// limited gives p a rate limit.
func limited(p *v1alpha1.TrafficPolicy) *v1alpha1.TrafficPolicy {
	p.Spec.RateLimit = &v1alpha1.RateLimit{PerEndpoint: &v1alpha1.TokenBucket{RequestsPerSecond: 10}}
	return p
}

// cond is an Accepted condition as Resolve makes it.
type cond struct{ status, reason, msg string }

func TestResolve(t *testing.T) {
	exists := map[string]Target{"a/web": TargetClusterIP, "a/db": TargetClusterIP, "a/cache": TargetClusterIP, "b/web": TargetClusterIP,
		"a/peers": TargetHeadless, "a/ext": TargetExternalName}
	for _, tc := range []struct {
		name     string
		policies []*v1alpha1.TrafficPolicy
		services map[string]string // Service -> the policy that applies to it
		accepted map[string]cond
	}{
		{name: "none"},
		{name: "one policy, two targets",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "p", 0, "web", "db")},
			services: map[string]string{"a/web": "a/p", "a/db": "a/p"},
			accepted: map[string]cond{"a/p": {"True", "Accepted", "applies to Services web, db"}},
		},
		{name: "oldest wins",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "new", 10, "web"), tp("a", "old", 0, "web")},
			services: map[string]string{"a/web": "a/old"},
			accepted: map[string]cond{
				"a/old": {"True", "Accepted", "applies to Service web"},
				"a/new": {"False", "Conflicted", "Service web: TrafficPolicy old applies instead (created earlier)"},
			},
		},
		{name: "same age: first by name",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "zeta", 0, "web"), tp("a", "alpha", 0, "web")},
			services: map[string]string{"a/web": "a/alpha"},
			accepted: map[string]cond{
				"a/alpha": {"True", "Accepted", "applies to Service web"},
				"a/zeta":  {"False", "Conflicted", "Service web: TrafficPolicy alpha applies instead (created at the same time, first by name)"},
			},
		},
		{name: "partly conflicted is accepted",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "old", 0, "web"), tp("a", "new", 5, "web", "db", "gone")},
			services: map[string]string{"a/web": "a/old", "a/db": "a/new"},
			accepted: map[string]cond{
				"a/old": {"True", "Accepted", "applies to Service web"},
				"a/new": {"True", "Accepted", "applies to Service db; Service web: TrafficPolicy old applies instead (created earlier); Service gone not found"},
			},
		},
		{name: "conflicted and missing",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "old", 0, "web"), tp("a", "new", 5, "web", "gone")},
			services: map[string]string{"a/web": "a/old"},
			accepted: map[string]cond{
				"a/old": {"True", "Accepted", "applies to Service web"},
				"a/new": {"False", "Conflicted", "Service web: TrafficPolicy old applies instead (created earlier); Service gone not found"},
			},
		},
		{name: "targets not found",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "p", 0, "gone"), tp("a", "q", 0, "gone", "lost")},
			accepted: map[string]cond{
				"a/p": {"False", "TargetNotFound", "Service gone not found"},
				"a/q": {"False", "TargetNotFound", "Services gone, lost not found"},
			},
		},
		{name: "an invalid policy claims nothing",
			policies: []*v1alpha1.TrafficPolicy{invalid(tp("a", "old", 0, "web")), tp("a", "new", 5, "web")},
			services: map[string]string{"a/web": "a/new"},
			accepted: map[string]cond{
				"a/old": {"False", "Invalid", "spec.loadBalancer: algorithm ConsistentHash needs hash: the header, cookie or contextId to hash requests by"},
				"a/new": {"True", "Accepted", "applies to Service web"},
			},
		},
		{name: "invalid with missing targets is Invalid",
			policies: []*v1alpha1.TrafficPolicy{invalid(tp("a", "p", 0, "gone"))},
			accepted: map[string]cond{"a/p": {"False", "Invalid", "spec.loadBalancer: algorithm ConsistentHash needs hash: the header, cookie or contextId to hash requests by"}},
		},
		{name: "namespaces do not conflict",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "p", 5, "web"), tp("b", "p", 0, "web")},
			services: map[string]string{"a/web": "a/p", "b/web": "b/p"},
			accepted: map[string]cond{
				"a/p": {"True", "Accepted", "applies to Service web"},
				"b/p": {"True", "Accepted", "applies to Service web"},
			},
		},
		{name: "three-way, each loses to the oldest",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "c", 2, "web", "cache"), tp("a", "b", 1, "db", "web"), tp("a", "a", 0, "web")},
			services: map[string]string{"a/web": "a/a", "a/db": "a/b", "a/cache": "a/c"},
			accepted: map[string]cond{
				"a/a": {"True", "Accepted", "applies to Service web"},
				"a/b": {"True", "Accepted", "applies to Service db; Service web: TrafficPolicy a applies instead (created earlier)"},
				"a/c": {"True", "Accepted", "applies to Service cache; Service web: TrafficPolicy a applies instead (created earlier)"},
			},
		},
		{name: "same Service twice in one policy",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "p", 0, "web", "web", "gone", "gone")},
			services: map[string]string{"a/web": "a/p"},
			accepted: map[string]cond{"a/p": {"True", "Accepted", "applies to Service web; Service gone not found"}},
		},
		{name: "ExternalName and headless without a rate limit are Invalid",
			policies: []*v1alpha1.TrafficPolicy{tp("a", "p", 0, "ext"), tp("a", "q", 0, "peers")},
			accepted: map[string]cond{
				"a/p": {"False", "Invalid", "Service ext is of type ExternalName: its traffic leaves the mesh, so no TrafficPolicy applies to it"},
				"a/q": {"False", "Invalid", "Service peers is headless (no cluster IP): callers connect to its pods directly, so only rateLimit (enforced by the pods' tunnels) applies to it, and this policy has none"},
			},
		},
		{name: "headless with a rate limit: accepted, saying what applies",
			policies: []*v1alpha1.TrafficPolicy{limited(tp("a", "p", 0, "peers", "web", "ext"))},
			services: map[string]string{"a/peers": "a/p", "a/web": "a/p"},
			accepted: map[string]cond{"a/p": {"True", "Accepted", "applies to Services peers, web; Service peers without a cluster IP: only rateLimit applies there (callers connect to the pods directly); Service ext is of type ExternalName: its traffic leaves the mesh, so no TrafficPolicy applies to it"}},
		},
		{name: "nil entries and duplicates skipped",
			policies: []*v1alpha1.TrafficPolicy{nil, tp("a", "p", 0, "web"), tp("a", "p", 0, "web")},
			services: map[string]string{"a/web": "a/p"},
			accepted: map[string]cond{"a/p": {"True", "Accepted", "applies to Service web"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.policies)
			res := Resolve(tc.policies, func(ns, name string) Target { return exists[ns+"/"+name] })
			if !slices.Equal(in, tc.policies) {
				t.Error("Resolve reordered its argument")
			}
			services := map[string]string{}
			for svc, mc := range res.Services {
				services[svc] = mc.Name
			}
			if diff := cmp.Diff(tc.services, services, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("services (-want +got):\n%s", diff)
			}
			accepted := map[string]cond{}
			for key, c := range res.Accepted {
				if c.Type != v1alpha1.ConditionAccepted || c.ObservedGeneration != 3 || !c.LastTransitionTime.IsZero() {
					t.Errorf("%s: condition %+v: want type Accepted, observedGeneration 3, no time", key, c)
				}
				accepted[key] = cond{string(c.Status), c.Reason, c.Message}
			}
			if diff := cmp.Diff(tc.accepted, accepted, cmpopts.EquateEmpty(), cmp.AllowUnexported(cond{})); diff != "" {
				t.Errorf("accepted (-want +got):\n%s", diff)
			}
		})
	}
}

// TestResolveOrderIndependent checks that the input order changes nothing.
func TestResolveOrderIndependent(t *testing.T) {
	ps := []*v1alpha1.TrafficPolicy{tp("a", "x", 1, "web", "db"), tp("a", "y", 1, "db", "cache"), tp("a", "z", 0, "cache")}
	exists := func(string, string) Target { return TargetClusterIP }
	want := Resolve(ps, exists)
	for range 20 {
		shuffled := slices.Clone(ps)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if diff := cmp.Diff(want, Resolve(shuffled, exists)); diff != "" {
			t.Fatalf("order changed the result (-first +now):\n%s", diff)
		}
	}
}
