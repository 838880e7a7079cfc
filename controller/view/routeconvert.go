package view

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// Retry defaults for a rule whose retry leaves them out (Gateway API
// leaves them to the implementation): two more tries, the first after
// 25ms (Envoy's base interval), growing with jitter.
const (
	DefaultRetryAttempts = 2
	DefaultRetryBackoff  = 25 * time.Millisecond
)

// unsupportedError is a value of a route the mesh cannot serve: the route
// is not Accepted (UnsupportedValue), with the error as its message.
type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string { return e.msg }

func unsupported(format string, args ...any) error {
	return &unsupportedError{msg: fmt.Sprintf(format, args...)}
}

// httpRouteObject reads an HTTPRoute. A match without a path matches
// PathPrefix "/" (the API's default), a rule without matches once.
// Hostnames are not read: a route on a Service applies to requests to
// the Service, whatever their Host.
func httpRouteObject(r *gwv1.HTTPRoute) *routeObject {
	o := &routeObject{kind: KindHTTPRoute, meta: &r.ObjectMeta, parents: r.Spec.ParentRefs}
	for i := range r.Spec.Rules {
		rule, err := httpRule(&r.Spec.Rules[i], fmt.Sprintf("spec.rules[%d]", i))
		if err != nil {
			o.unsupported = err.Error()
			o.rules = nil
			return o
		}
		o.rules = append(o.rules, rule)
	}
	return o
}

func httpRule(r *gwv1.HTTPRouteRule, where string) (routeRule, error) {
	var out routeRule
	if len(r.Filters) > 0 {
		return out, unsupported("%s.filters: the mesh does not apply HTTPRoute filters (%s)", where, r.Filters[0].Type)
	}
	if r.SessionPersistence != nil {
		return out, unsupported("%s.sessionPersistence: the mesh does not support it here", where)
	}
	matches := r.Matches
	if len(matches) == 0 {
		matches = []gwv1.HTTPRouteMatch{{}}
	}
	for j := range matches {
		m, err := httpMatch(&matches[j])
		if err != nil {
			return out, unsupported("%s.matches[%d].%v", where, j, err)
		}
		out.matches = append(out.matches, m)
	}
	for j := range r.BackendRefs {
		b := &r.BackendRefs[j]
		if len(b.Filters) > 0 {
			return out, unsupported("%s.backendRefs[%d].filters: the mesh does not apply HTTPRoute filters (%s)", where, j, b.Filters[0].Type)
		}
		out.backends = append(out.backends, b.BackendRef)
	}
	var err error
	if t := r.Timeouts; t != nil {
		if out.timeout, err = parseDuration(t.Request); err != nil {
			return out, unsupported("%s.timeouts.request: %v", where, err)
		}
		if out.backendTimeout, err = parseDuration(t.BackendRequest); err != nil {
			return out, unsupported("%s.timeouts.backendRequest: %v", where, err)
		}
	}
	if out.retry, err = retryOf(r.Retry); err != nil {
		return out, unsupported("%s.retry.%v", where, err)
	}
	return out, nil
}

func httpMatch(m *gwv1.HTTPRouteMatch) (meshconfig.RouteMatch, error) {
	out := meshconfig.RouteMatch{PathType: meshconfig.PathPrefix, Path: "/"}
	if p := m.Path; p != nil {
		if p.Type != nil {
			out.PathType = string(*p.Type)
		}
		if p.Value != nil {
			out.Path = *p.Value
		}
		switch out.PathType {
		case meshconfig.PathExact, meshconfig.PathPrefix:
			if !strings.HasPrefix(out.Path, "/") {
				return out, fmt.Errorf("path: %q does not start with /", out.Path)
			}
		case meshconfig.PathRegex:
			if err := checkRegex(out.Path); err != nil {
				return out, fmt.Errorf("path: %w", err)
			}
		default:
			return out, fmt.Errorf("path: unknown type %q", out.PathType)
		}
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	for i, h := range m.Headers {
		v, err := valueMatch(string(h.Name), h.Value, (*string)(h.Type))
		if err != nil {
			return out, fmt.Errorf("headers[%d]: %w", i, err)
		}
		out.Headers = append(out.Headers, v)
	}
	for i, q := range m.QueryParams {
		v, err := valueMatch(string(q.Name), q.Value, (*string)(q.Type))
		if err != nil {
			return out, fmt.Errorf("queryParams[%d]: %w", i, err)
		}
		out.Query = append(out.Query, v)
	}
	return out, nil
}

// valueMatch converts a header or query parameter match of type typ
// (nil: Exact).
func valueMatch(name, value string, typ *string) (meshconfig.ValueMatch, error) {
	v := meshconfig.ValueMatch{Name: name, Value: value}
	if name == "" {
		return v, errors.New("no name")
	}
	switch t := deref(typ, "Exact"); t {
	case "Exact":
	case "RegularExpression":
		if err := checkRegex(value); err != nil {
			return v, err
		}
		v.Regex = true
	default:
		return v, fmt.Errorf("unknown type %q", t)
	}
	return v, nil
}

// checkRegex checks a regular expression as the data plane compiles it
// (Go's RE2 syntax).
func checkRegex(re string) error {
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("regular expression %q: %w (the mesh uses RE2 syntax)", re, err)
	}
	return nil
}

// durationSyntax is Gateway API's Duration (GEP-2257): up to four of a
// number of at most five digits and a unit h, m, s or ms.
var durationSyntax = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// parseDuration reads a Gateway API Duration; nil and "0s" are 0 (no
// timeout).
func parseDuration(d *gwv1.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if !durationSyntax.MatchString(string(*d)) {
		return 0, fmt.Errorf("duration %q: want Gateway API's form, e.g. 10s, 500ms, 1h30m", *d)
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", *d, err)
	}
	return v, nil
}

// retryOf converts a rule's retry; nil stays nil (the mesh's defaults).
func retryOf(r *gwv1.HTTPRouteRetry) (*meshconfig.Retry, error) {
	if r == nil {
		return nil, nil
	}
	out := &meshconfig.Retry{Attempts: DefaultRetryAttempts, Backoff: DefaultRetryBackoff}
	if r.Attempts != nil {
		out.Attempts = *r.Attempts
	}
	if r.Backoff != nil {
		b, err := parseDuration(r.Backoff)
		if err != nil {
			return nil, fmt.Errorf("backoff: %w", err)
		}
		out.Backoff = b
	}
	for _, c := range r.Codes {
		if c < 400 || c > 599 {
			return nil, fmt.Errorf("codes: %d is not a 4xx or 5xx status", c)
		}
		out.Codes = append(out.Codes, int(c))
	}
	if out.Attempts < 0 {
		return nil, fmt.Errorf("attempts: %d is negative", out.Attempts)
	}
	return out, nil
}

func deref[T any](p *T, dflt T) T {
	if p == nil {
		return dflt
	}
	return *p
}
