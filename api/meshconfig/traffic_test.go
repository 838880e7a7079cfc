package meshconfig

import (
	"math"
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
