package meshconfig

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestTrafficPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		tp   TrafficPolicy
		want string // "" valid
	}{
		{"empty", TrafficPolicy{}, ""},
		{"full", TrafficPolicy{
			LoadBalancer: &LoadBalancer{Algorithm: LBConsistentHash, Hash: &HashKey{Header: "X-User"}},
			Affinity:     &Affinity{Key: HashKey{ContextID: true}},
			Timeouts:     &Timeouts{Connect: time.Second, FirstByte: time.Second, Idle: time.Minute},
			RetryBudget:  &RetryBudget{Ratio: 0.2, MinPerSecond: 10},
			RetryBackoff: &RetryBackoff{Base: 10 * time.Millisecond, Max: time.Second},
			Breaker:      &Breaker{MaxRequests: 10},
			Outlier:      &Outlier{ConsecutiveFailures: 5, BaseEjection: 30 * time.Second, MaxEjectedPercent: 10},
			RateLimit:    &RateLimit{PerSource: &Bucket{Rate: 5, Burst: 5}, Tools: map[string]Bucket{"search": {Rate: 1, Burst: 1}}},
		}, ""},
		{"hash without key", TrafficPolicy{LoadBalancer: &LoadBalancer{Algorithm: LBConsistentHash}}, "needs a hash key"},
		{"unknown algorithm", TrafficPolicy{LoadBalancer: &LoadBalancer{Algorithm: "Random"}}, "unknown algorithm"},
		{"two keys", TrafficPolicy{Affinity: &Affinity{Key: HashKey{Header: "a", Cookie: "b"}}}, "exactly one"},
		{"negative timeout", TrafficPolicy{Timeouts: &Timeouts{Idle: -1}}, "negative duration"},
		{"NaN ratio", TrafficPolicy{RetryBudget: &RetryBudget{Ratio: math.NaN()}}, "finite ratio"},
		{"infinite rate", TrafficPolicy{RateLimit: &RateLimit{PerEndpoint: &Bucket{Rate: math.Inf(1)}}}, "finite rate"},
		{"outlier without threshold", TrafficPolicy{Outlier: &Outlier{BaseEjection: time.Second}}, "consecutiveFailures"},
		{"backoff max below base", TrafficPolicy{RetryBackoff: &RetryBackoff{Base: time.Second, Max: time.Millisecond}}, "retryBackoff"},
		{"negative backoff", TrafficPolicy{RetryBackoff: &RetryBackoff{Base: -1}}, "retryBackoff"},
		{"tool without name", TrafficPolicy{RateLimit: &RateLimit{Tools: map[string]Bucket{"": {Rate: 1}}}}, "want a tool name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := tc.tp
			c := &Config{TrustDomain: "cluster.local", Services: []Service{{Name: "s", Namespace: "ns", Traffic: &tp}}}
			err := c.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate: %v; want %q", err, tc.want)
			}
		})
	}
}

// TestIndexRateLimited: a workload's limited Services, each once even
// when the pod is an endpoint of both families; only on a port the
// Service sends to it.
func TestIndexRateLimited(t *testing.T) {
	ip4, ip6 := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")
	limited := Service{Name: "dv", Namespace: "agents", Ports: []ServicePort{{Name: "http", Port: 80}},
		Traffic: &TrafficPolicy{RateLimit: &RateLimit{PerSource: &Bucket{Rate: 1, Burst: 1}}},
		Endpoints: []Endpoint{
			{WorkloadUID: "uid-1", IPs: []netip.Addr{ip4}, Ready: true, Ports: map[string]uint16{"http": 8080}},
			{WorkloadUID: "uid-1", IPs: []netip.Addr{ip6}, Ready: true, Ports: map[string]uint16{"http": 8080}},
		}}
	plain := Service{Name: "other", Namespace: "agents", Ports: []ServicePort{{Port: 80, TargetPort: 8080}},
		Endpoints: []Endpoint{{WorkloadUID: "uid-1", IPs: []netip.Addr{ip4}, Ready: true}}}
	x := NewIndex(&Config{Services: []Service{limited, plain}})
	if got := x.RateLimited("uid-1", 8080); len(got) != 1 || got[0].Name != "dv" {
		t.Errorf("RateLimited(uid-1, 8080) = %v, want dv once", got)
	}
	if got := x.RateLimited("uid-1", 9090); len(got) != 0 {
		t.Errorf("RateLimited on a port dv does not send to: %v", got)
	}
	if got := x.RateLimited("uid-2", 8080); len(got) != 0 {
		t.Errorf("RateLimited of another workload: %v", got)
	}
}
