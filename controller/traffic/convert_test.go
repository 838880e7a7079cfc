package traffic

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// policy builds the TrafficPolicy shop/tp with spec read from YAML (a
// targetRefs entry for Service search is added when spec has none).
func policy(t *testing.T, spec string) *v1alpha1.TrafficPolicy {
	t.Helper()
	tp := &v1alpha1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "tp"}}
	if err := yaml.UnmarshalStrict([]byte(spec), &tp.Spec); err != nil {
		t.Fatalf("bad test spec: %v", err)
	}
	if tp.Spec.TargetRefs == nil {
		tp.Spec.TargetRefs = []v1alpha1.LocalPolicyTargetReference{{Kind: "Service", Name: "search"}}
	}
	return tp
}

func TestConvert(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       meshconfig.TrafficPolicy // Name is always shop/tp
	}{
		{name: "targets only: every section nil", spec: `{}`},
		{name: "full", spec: `
targetRefs: [{group: "", kind: Service, name: search}, {group: "", kind: Service, name: fetch}]
loadBalancer: {algorithm: ConsistentHash, hash: {header: X-User}}
sessionAffinity: {key: {contextId: true}}
timeouts: {connect: 2s, firstByte: 30s, idle: 5m, total: 1h30m}
retryBudget: {percent: 50, minRetriesPerSecond: 3}
retryBackoff: {base: 100ms, max: 2s}
circuitBreaker: {maxConnections: 1, maxPendingRequests: 2, maxRequests: 3, maxRequestsPerEndpoint: 4}
outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 500ms, maxEjectionTime: 1m, maxEjectedPercent: 0}
rateLimit:
  perEndpoint: {requestsPerSecond: 100, burst: 200}
  perSource: {requestsPerSecond: 10}
  tools: [{name: search, requestsPerSecond: 1, burst: 5}, {name: fetch, requestsPerSecond: 2}]
`, want: meshconfig.TrafficPolicy{
			LoadBalancer: &meshconfig.LoadBalancer{Algorithm: meshconfig.LBConsistentHash, Hash: &meshconfig.HashKey{Header: "X-User"}},
			Affinity:     &meshconfig.Affinity{Key: meshconfig.HashKey{ContextID: true}},
			Timeouts:     &meshconfig.Timeouts{Connect: 2 * time.Second, FirstByte: 30 * time.Second, Idle: 5 * time.Minute, Total: 90 * time.Minute},
			RetryBudget:  &meshconfig.RetryBudget{Ratio: 0.5, MinPerSecond: 3},
			RetryBackoff: &meshconfig.RetryBackoff{Base: 100 * time.Millisecond, Max: 2 * time.Second},
			Breaker:      &meshconfig.Breaker{MaxConnections: 1, MaxPendingRequests: 2, MaxRequests: 3, MaxRequestsPerEndpoint: 4},
			Outlier:      &meshconfig.Outlier{ConsecutiveFailures: 3, BaseEjection: 500 * time.Millisecond, MaxEjection: time.Minute, MaxEjectedPercent: 0},
			RateLimit: &meshconfig.RateLimit{
				PerEndpoint: &meshconfig.Bucket{Rate: 100, Burst: 200},
				PerSource:   &meshconfig.Bucket{Rate: 10, Burst: 10},
				Tools:       map[string]meshconfig.Bucket{"search": {Rate: 1, Burst: 5}, "fetch": {Rate: 2, Burst: 2}},
			},
		}},
		{name: "defaults of empty sections", spec: `{retryBudget: {}, outlierDetection: {}}`, want: meshconfig.TrafficPolicy{
			RetryBudget: &meshconfig.RetryBudget{Ratio: 0.2, MinPerSecond: 10},
			Outlier:     &meshconfig.Outlier{ConsecutiveFailures: 5, BaseEjection: 30 * time.Second, MaxEjection: 300 * time.Second, MaxEjectedPercent: 10},
		}},
		{name: "percent 0 is no ratio", spec: `{retryBudget: {percent: 0}}`, want: meshconfig.TrafficPolicy{
			RetryBudget: &meshconfig.RetryBudget{Ratio: 0, MinPerSecond: 10},
		}},
		{name: "long base ejection raises the default max", spec: `{outlierDetection: {baseEjectionTime: 10m}}`, want: meshconfig.TrafficPolicy{
			Outlier: &meshconfig.Outlier{ConsecutiveFailures: 5, BaseEjection: 10 * time.Minute, MaxEjection: 10 * time.Minute, MaxEjectedPercent: 10},
		}},
		{name: "max ejection equal to the default base", spec: `{outlierDetection: {maxEjectionTime: 30s}}`, want: meshconfig.TrafficPolicy{
			Outlier: &meshconfig.Outlier{ConsecutiveFailures: 5, BaseEjection: 30 * time.Second, MaxEjection: 30 * time.Second, MaxEjectedPercent: 10},
		}},
		{name: "backoff: max defaults to 10 times base", spec: `{retryBackoff: {base: 40ms}}`, want: meshconfig.TrafficPolicy{
			RetryBackoff: &meshconfig.RetryBackoff{Base: 40 * time.Millisecond, Max: 400 * time.Millisecond},
		}},
		{name: "backoff: base defaults to 25ms", spec: `{retryBackoff: {max: 1s}}`, want: meshconfig.TrafficPolicy{
			RetryBackoff: &meshconfig.RetryBackoff{Base: 25 * time.Millisecond, Max: time.Second},
		}},
		{name: "breaker: left out is no limit", spec: `{circuitBreaker: {maxRequests: 7}}`, want: meshconfig.TrafficPolicy{
			Breaker: &meshconfig.Breaker{MaxRequests: 7},
		}},
		{name: "timeouts: left out and 0s are none", spec: `{timeouts: {idle: 0s, total: 10s}}`, want: meshconfig.TrafficPolicy{
			Timeouts: &meshconfig.Timeouts{Total: 10 * time.Second},
		}},
		{name: "firstByte with total none", spec: `{timeouts: {firstByte: 1m, total: 0s}}`, want: meshconfig.TrafficPolicy{
			Timeouts: &meshconfig.Timeouts{FirstByte: time.Minute},
		}},
		{name: "algorithms", spec: `{loadBalancer: {algorithm: LeastRequest}, sessionAffinity: {key: {cookie: sid}}}`, want: meshconfig.TrafficPolicy{
			LoadBalancer: &meshconfig.LoadBalancer{Algorithm: meshconfig.LBLeastRequest},
			Affinity:     &meshconfig.Affinity{Key: meshconfig.HashKey{Cookie: "sid"}},
		}},
		{name: "contextId false beside a header", spec: `{sessionAffinity: {key: {header: Mcp-Session-Id, contextId: false}}}`, want: meshconfig.TrafficPolicy{
			Affinity: &meshconfig.Affinity{Key: meshconfig.HashKey{Header: "Mcp-Session-Id"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Convert(policy(t, tc.spec))
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			tc.want.Name = "shop/tp"
			if diff := cmp.Diff(&tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// What Convert accepts, the data plane must accept.
			cfg := meshconfig.Config{Services: []meshconfig.Service{{Namespace: "shop", Name: "search", Traffic: got}}}
			if err := cfg.Validate(); err != nil {
				t.Errorf("data plane refuses the result: %v", err)
			}
		})
	}
}

func TestConvertErrors(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       []string // substrings of the error
	}{
		{name: "no targets", spec: `{targetRefs: []}`, want: []string{"spec.targetRefs: want 1 to 16 Services, have 0"}},
		{name: "target kind", spec: `{targetRefs: [{kind: Deployment, name: search}]}`,
			want: []string{"spec.targetRefs[0]: a TrafficPolicy targets Services only", `kind "Deployment"`}},
		{name: "target group", spec: `{targetRefs: [{group: apps, kind: Service, name: search}]}`, want: []string{`group "apps"`}},
		{name: "target name", spec: `{targetRefs: [{kind: Service}]}`, want: []string{"spec.targetRefs[0].name: missing"}},
		{name: "algorithm", spec: `{loadBalancer: {algorithm: Random}}`,
			want: []string{`spec.loadBalancer.algorithm: "Random" is not one of PeakEWMA, RoundRobin, LeastRequest, ConsistentHash`}},
		{name: "algorithm missing", spec: `{loadBalancer: {}}`, want: []string{`spec.loadBalancer.algorithm: "" is not one of`}},
		{name: "consistent hash without hash", spec: `{loadBalancer: {algorithm: ConsistentHash}}`,
			want: []string{"spec.loadBalancer: algorithm ConsistentHash needs hash"}},
		{name: "hash without consistent hash", spec: `{loadBalancer: {algorithm: RoundRobin, hash: {header: x}}}`,
			want: []string{"spec.loadBalancer.hash: used only by algorithm ConsistentHash"}},
		{name: "hash with two keys", spec: `{loadBalancer: {algorithm: ConsistentHash, hash: {header: x, cookie: y}}}`,
			want: []string{"spec.loadBalancer.hash: set exactly one of header, cookie or contextId: true"}},
		{name: "affinity without key", spec: `{sessionAffinity: {key: {contextId: false}}}`,
			want: []string{"spec.sessionAffinity.key: set exactly one of"}},
		{name: "malformed duration", spec: `{timeouts: {connect: 10}}`,
			want: []string{`spec.timeouts.connect: "10" is not a duration`, `"500ms"`}},
		{name: "negative duration", spec: `{timeouts: {idle: -1s}}`, want: []string{`spec.timeouts.idle: "-1s" is not a duration`}},
		{name: "go-only unit", spec: `{timeouts: {idle: 10us}}`, want: []string{`spec.timeouts.idle: "10us" is not a duration`}},
		{name: "fraction", spec: `{timeouts: {idle: 1.5s}}`, want: []string{`spec.timeouts.idle: "1.5s" is not a duration`}},
		{name: "backoff max under base", spec: `{retryBackoff: {base: 1s, max: 500ms}}`,
			want: []string{"spec.retryBackoff.max: 500ms is shorter than base (1s)"}},
		{name: "backoff empty", spec: `{retryBackoff: {}}`, want: []string{"spec.retryBackoff: needs base or max"}},
		{name: "firstByte over total", spec: `{timeouts: {firstByte: 2m, total: 1m}}`,
			want: []string{"spec.timeouts: firstByte (2m) must not be longer than total (1m)"}},
		{name: "percent", spec: `{retryBudget: {percent: 101}}`, want: []string{"spec.retryBudget.percent: 101 is not a percentage"}},
		{name: "min retries", spec: `{retryBudget: {minRetriesPerSecond: -1}}`, want: []string{"spec.retryBudget.minRetriesPerSecond: must not be negative"}},
		{name: "breaker zero", spec: `{circuitBreaker: {maxConnections: 0}}`,
			want: []string{"spec.circuitBreaker.maxConnections: must be at least 1 (leave it out for no limit)"}},
		{name: "base ejection zero", spec: `{outlierDetection: {baseEjectionTime: 0s}}`,
			want: []string{"spec.outlierDetection.baseEjectionTime: must be longer than 0s"}},
		{name: "max below base", spec: `{outlierDetection: {baseEjectionTime: 1m, maxEjectionTime: 30s}}`,
			want: []string{"spec.outlierDetection.maxEjectionTime: 30s is shorter than baseEjectionTime (1m)"}},
		{name: "max below default base", spec: `{outlierDetection: {maxEjectionTime: 10s}}`,
			want: []string{"10s is shorter than baseEjectionTime (30s, the default)"}},
		{name: "consecutive failures", spec: `{outlierDetection: {consecutiveFailures: 0}}`,
			want: []string{"spec.outlierDetection.consecutiveFailures: must be at least 1"}},
		{name: "ejected percent", spec: `{outlierDetection: {maxEjectedPercent: -1}}`,
			want: []string{"spec.outlierDetection.maxEjectedPercent: -1 is not a percentage"}},
		{name: "rate zero", spec: `{rateLimit: {perSource: {requestsPerSecond: 0}}}`,
			want: []string{"spec.rateLimit.perSource.requestsPerSecond: must be at least 1"}},
		{name: "burst zero", spec: `{rateLimit: {perEndpoint: {requestsPerSecond: 1, burst: 0}}}`,
			want: []string{"spec.rateLimit.perEndpoint.burst: must be at least 1"}},
		{name: "tool twice", spec: `{rateLimit: {tools: [{name: a, requestsPerSecond: 1}, {name: a, requestsPerSecond: 2}]}}`,
			want: []string{`spec.rateLimit.tools[1].name: tool "a" is listed twice`}},
		{name: "tool without name", spec: `{rateLimit: {tools: [{requestsPerSecond: 1}]}}`,
			want: []string{"spec.rateLimit.tools[0].name: missing"}},
		{name: "every problem named", spec: `{loadBalancer: {algorithm: Random}, timeouts: {total: x}, circuitBreaker: {maxRequests: 0}}`,
			want: []string{"spec.loadBalancer.algorithm", "; spec.timeouts.total", "; spec.circuitBreaker.maxRequests"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Convert(policy(t, tc.spec))
			if err == nil {
				t.Fatalf("Convert accepted it: %+v", got)
			}
			if got != nil {
				t.Errorf("Convert returned a policy with its error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}
