// Package traffic turns TrafficPolicies (agentmesh.io/v1alpha1) into the
// data plane's meshconfig.TrafficPolicy and decides which policy applies
// to each Service. Everything here is pure: the controller feeds it from
// its informers and writes what it returns.
package traffic

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// Defaults of the fields left out of a section that is present. A section
// left out altogether is nil in the result: the data plane's built-in
// behaviour, which for the retry budget is the same 20 % and 10/s
// (Linkerd's), and otherwise none (no timeout, limit or ejection).
const (
	DefaultRetryPercent        = 20 // retryBudget.percent
	DefaultMinRetriesPerSecond = 10 // retryBudget.minRetriesPerSecond
	DefaultConsecutiveFailures = 5  // outlierDetection.consecutiveFailures (Envoy's, Istio's)
	DefaultMaxEjectedPercent   = 10 // outlierDetection.maxEjectedPercent (Envoy's)
	// DefaultBaseEjection is outlierDetection.baseEjectionTime (Envoy's).
	DefaultBaseEjection = 30 * time.Second
	// DefaultMaxEjection is outlierDetection.maxEjectionTime, raised to
	// baseEjectionTime when that is longer (as Envoy does).
	DefaultMaxEjection = 300 * time.Second
	// DefaultRetryBackoff is retryBackoff.base; max defaults to 10 times
	// base.
	DefaultRetryBackoff = 25 * time.Millisecond
)

// durationRE is the Gateway API duration format (GEP-2257), the pattern of
// v1alpha1.Duration.
var durationRE = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// Convert turns tp's spec into the data plane's model, named
// "namespace/name", with the defaults of the fields left out of present
// sections filled in. It checks again what the CRD's schema and CEL rules
// check (an object stored under an older CRD, or written past the
// apiserver, may carry anything) and names every problem it finds, by
// its field path, in one error.
func Convert(tp *v1alpha1.TrafficPolicy) (*meshconfig.TrafficPolicy, error) {
	var p problems
	s := &tp.Spec
	checkTargets(&p, s.TargetRefs)
	out := &meshconfig.TrafficPolicy{
		Name:         tp.Namespace + "/" + tp.Name,
		LoadBalancer: convertLoadBalancer(&p, s.LoadBalancer),
		Affinity:     convertAffinity(&p, s.SessionAffinity),
		Timeouts:     convertTimeouts(&p, s.Timeouts),
		RetryBudget:  convertRetryBudget(&p, s.RetryBudget),
		RetryBackoff: convertRetryBackoff(&p, s.RetryBackoff),
		Breaker:      convertBreaker(&p, s.CircuitBreaker),
		Outlier:      convertOutlier(&p, s.OutlierDetection),
		RateLimit:    convertRateLimit(&p, s.RateLimit),
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// problems collects what is wrong with a spec, each "field: what".
type problems []string

func (p *problems) addf(field, format string, args ...any) {
	*p = append(*p, field+": "+fmt.Sprintf(format, args...))
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return errors.New(strings.Join(p, "; "))
}

func checkTargets(p *problems, refs []v1alpha1.LocalPolicyTargetReference) {
	if len(refs) == 0 || len(refs) > 16 {
		p.addf("spec.targetRefs", "want 1 to 16 Services, have %d", len(refs))
	}
	for i, r := range refs {
		field := fmt.Sprintf("spec.targetRefs[%d]", i)
		if r.Group != "" || r.Kind != "Service" {
			p.addf(field, "a TrafficPolicy targets Services only (group \"\", kind Service), not group %q kind %q", r.Group, r.Kind)
		}
		if r.Name == "" {
			p.addf(field+".name", "missing")
		}
	}
}

// duration parses a Gateway API duration; nil is 0. ok is false (and the
// problem noted) when d is malformed.
func duration(p *problems, field string, d *v1alpha1.Duration) (v time.Duration, ok bool) {
	if d == nil {
		return 0, true
	}
	v, err := time.ParseDuration(string(*d))
	if !durationRE.MatchString(string(*d)) || err != nil {
		p.addf(field, "%q is not a duration: want numbers with units h, m, s or ms, such as \"10s\", \"500ms\" or \"1h30m\"", *d)
		return 0, false
	}
	return v, true
}

// orDefault is *v, or def when v is nil.
func orDefault(v *int32, def int) int {
	if v == nil {
		return def
	}
	return int(*v)
}
