package traffic

import (
	"fmt"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// algorithms maps the CRD's algorithm names to the data plane's.
var algorithms = map[v1alpha1.LoadBalancerAlgorithm]string{
	v1alpha1.PeakEWMA:       meshconfig.LBPeakEWMA,
	v1alpha1.RoundRobin:     meshconfig.LBRoundRobin,
	v1alpha1.LeastRequest:   meshconfig.LBLeastRequest,
	v1alpha1.ConsistentHash: meshconfig.LBConsistentHash,
}

func convertLoadBalancer(p *problems, lb *v1alpha1.LoadBalancer) *meshconfig.LoadBalancer {
	if lb == nil {
		return nil
	}
	alg, ok := algorithms[lb.Algorithm]
	if !ok {
		p.addf("spec.loadBalancer.algorithm", "%q is not one of PeakEWMA, RoundRobin, LeastRequest, ConsistentHash", lb.Algorithm)
	}
	out := &meshconfig.LoadBalancer{Algorithm: alg}
	switch {
	case lb.Algorithm == v1alpha1.ConsistentHash && lb.Hash == nil:
		p.addf("spec.loadBalancer", "algorithm ConsistentHash needs hash: the header, cookie or contextId to hash requests by")
	case lb.Algorithm != v1alpha1.ConsistentHash && lb.Hash != nil:
		p.addf("spec.loadBalancer.hash", "used only by algorithm ConsistentHash (to pin requests under another algorithm, use sessionAffinity)")
	case lb.Hash != nil:
		k := hashKey(p, "spec.loadBalancer.hash", lb.Hash)
		out.Hash = &k
	}
	return out
}

func convertAffinity(p *problems, a *v1alpha1.SessionAffinity) *meshconfig.Affinity {
	if a == nil {
		return nil
	}
	return &meshconfig.Affinity{Key: hashKey(p, "spec.sessionAffinity.key", &a.Key)}
}

func hashKey(p *problems, field string, k *v1alpha1.HashKey) meshconfig.HashKey {
	n := 0
	for _, set := range []bool{k.Header != "", k.Cookie != "", k.ContextID} {
		if set {
			n++
		}
	}
	if n != 1 {
		p.addf(field, "set exactly one of header, cookie or contextId: true")
	}
	return meshconfig.HashKey{Header: k.Header, Cookie: k.Cookie, ContextID: k.ContextID}
}

// convertTimeouts: a timeout left out (or "0s") is none.
func convertTimeouts(p *problems, t *v1alpha1.Timeouts) *meshconfig.Timeouts {
	if t == nil {
		return nil
	}
	out := &meshconfig.Timeouts{}
	out.Connect, _ = duration(p, "spec.timeouts.connect", t.Connect)
	out.FirstByte, _ = duration(p, "spec.timeouts.firstByte", t.FirstByte)
	out.Idle, _ = duration(p, "spec.timeouts.idle", t.Idle)
	out.Total, _ = duration(p, "spec.timeouts.total", t.Total)
	if out.Total > 0 && out.FirstByte > out.Total {
		p.addf("spec.timeouts", "firstByte (%s) must not be longer than total (%s)", *t.FirstByte, *t.Total)
	}
	return out
}

func convertRetryBudget(p *problems, b *v1alpha1.RetryBudget) *meshconfig.RetryBudget {
	if b == nil {
		return nil
	}
	out := &meshconfig.RetryBudget{
		Ratio:        float64(orDefault(b.Percent, DefaultRetryPercent)) / 100,
		MinPerSecond: orDefault(b.MinRetriesPerSecond, DefaultMinRetriesPerSecond),
	}
	if out.Ratio < 0 || out.Ratio > 1 {
		p.addf("spec.retryBudget.percent", "%d is not a percentage (0 to 100)", *b.Percent)
	}
	if out.MinPerSecond < 0 {
		p.addf("spec.retryBudget.minRetriesPerSecond", "must not be negative")
	}
	return out
}

// convertRetryBackoff: base defaults to DefaultRetryBackoff, max to 10
// times base.
func convertRetryBackoff(p *problems, b *v1alpha1.RetryBackoff) *meshconfig.RetryBackoff {
	if b == nil {
		return nil
	}
	out := &meshconfig.RetryBackoff{Base: DefaultRetryBackoff}
	baseOK := true
	if b.Base != nil {
		out.Base, baseOK = duration(p, "spec.retryBackoff.base", b.Base)
	}
	out.Max = 10 * out.Base
	if b.Max != nil {
		var maxOK bool
		out.Max, maxOK = duration(p, "spec.retryBackoff.max", b.Max)
		if baseOK && maxOK && out.Max < out.Base {
			p.addf("spec.retryBackoff.max", "%s is shorter than base (%s)", *b.Max, out.Base)
		}
	}
	if b.Base == nil && b.Max == nil {
		p.addf("spec.retryBackoff", "needs base or max")
	}
	return out
}

// convertBreaker: a limit left out is none.
func convertBreaker(p *problems, b *v1alpha1.CircuitBreaker) *meshconfig.Breaker {
	if b == nil {
		return nil
	}
	limit := func(name string, v *int32) int {
		if v != nil && *v < 1 {
			p.addf("spec.circuitBreaker."+name, "must be at least 1 (leave it out for no limit)")
		}
		return orDefault(v, 0)
	}
	return &meshconfig.Breaker{
		MaxConnections:         limit("maxConnections", b.MaxConnections),
		MaxPendingRequests:     limit("maxPendingRequests", b.MaxPendingRequests),
		MaxRequests:            limit("maxRequests", b.MaxRequests),
		MaxRequestsPerEndpoint: limit("maxRequestsPerEndpoint", b.MaxRequestsPerEndpoint),
	}
}

func convertOutlier(p *problems, o *v1alpha1.OutlierDetection) *meshconfig.Outlier {
	if o == nil {
		return nil
	}
	out := &meshconfig.Outlier{
		ConsecutiveFailures: orDefault(o.ConsecutiveFailures, DefaultConsecutiveFailures),
		BaseEjection:        DefaultBaseEjection,
		MaxEjectedPercent:   orDefault(o.MaxEjectedPercent, DefaultMaxEjectedPercent),
	}
	baseOK := true
	if o.BaseEjectionTime != nil {
		out.BaseEjection, baseOK = duration(p, "spec.outlierDetection.baseEjectionTime", o.BaseEjectionTime)
		if baseOK && out.BaseEjection == 0 {
			p.addf("spec.outlierDetection.baseEjectionTime", "must be longer than 0s")
		}
	}
	out.MaxEjection = max(DefaultMaxEjection, out.BaseEjection)
	if o.MaxEjectionTime != nil {
		var maxOK bool
		out.MaxEjection, maxOK = duration(p, "spec.outlierDetection.maxEjectionTime", o.MaxEjectionTime)
		if baseOK && maxOK && out.MaxEjection < out.BaseEjection {
			base := "30s, the default"
			if o.BaseEjectionTime != nil {
				base = string(*o.BaseEjectionTime)
			}
			p.addf("spec.outlierDetection.maxEjectionTime", "%s is shorter than baseEjectionTime (%s)", *o.MaxEjectionTime, base)
		}
	}
	if out.ConsecutiveFailures < 1 {
		p.addf("spec.outlierDetection.consecutiveFailures", "must be at least 1")
	}
	if out.MaxEjectedPercent < 0 || out.MaxEjectedPercent > 100 {
		p.addf("spec.outlierDetection.maxEjectedPercent", "%d is not a percentage (0 to 100)", out.MaxEjectedPercent)
	}
	return out
}

func convertRateLimit(p *problems, r *v1alpha1.RateLimit) *meshconfig.RateLimit {
	if r == nil {
		return nil
	}
	out := &meshconfig.RateLimit{
		PerEndpoint: bucketOf(p, "spec.rateLimit.perEndpoint", r.PerEndpoint),
		PerSource:   bucketOf(p, "spec.rateLimit.perSource", r.PerSource),
	}
	if len(r.Tools) > 0 {
		out.Tools = make(map[string]meshconfig.Bucket, len(r.Tools))
	}
	for i, t := range r.Tools {
		field := fmt.Sprintf("spec.rateLimit.tools[%d]", i)
		if t.Name == "" {
			p.addf(field+".name", "missing")
			continue
		}
		if _, dup := out.Tools[t.Name]; dup {
			p.addf(field+".name", "tool %q is listed twice", t.Name)
			continue
		}
		out.Tools[t.Name] = *bucketOf(p, field, &v1alpha1.TokenBucket{RequestsPerSecond: t.RequestsPerSecond, Burst: t.Burst})
	}
	return out
}

// bucketOf converts a token bucket; its burst defaults to its rate.
func bucketOf(p *problems, field string, b *v1alpha1.TokenBucket) *meshconfig.Bucket {
	if b == nil {
		return nil
	}
	if b.RequestsPerSecond < 1 {
		p.addf(field+".requestsPerSecond", "must be at least 1")
	}
	if b.Burst != nil && *b.Burst < 1 {
		p.addf(field+".burst", "must be at least 1")
	}
	return &meshconfig.Bucket{
		Rate:  float64(b.RequestsPerSecond),
		Burst: orDefault(b.Burst, int(b.RequestsPerSecond)),
	}
}
