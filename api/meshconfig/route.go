package meshconfig

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Route is one way a request to a Service goes: one match of one rule of
// a Gateway API HTTPRoute or GRPCRoute whose parentRef is the Service
// (GAMMA). The controller flattens a Service's routes into
// Service.Routes in Gateway API's precedence order; a request to the
// Service takes the first Route whose Port and Match fit it, and a
// request no Route fits goes to the Service's own endpoints.
type Route struct {
	// Name is the route object, "namespace/name"; Kind "HTTPRoute" or
	// "GRPCRoute"; Rule the index of the rule within it. For records.
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
	Rule int    `json:"rule,omitempty"`
	// Port is the parentRef's port: the route applies to requests to
	// that Service port only; 0 to every port.
	Port  uint16     `json:"port,omitempty"`
	Match RouteMatch `json:"match,omitzero"`
	// Backends share the requests by Weight. A rule whose backends all
	// have weight 0, or none, answers 500 (Gateway API's rule for a rule
	// with no valid backend).
	Backends []Backend `json:"backends,omitempty"`
	// Timeout bounds a request as a whole, its retries included (504
	// after it); BackendTimeout each try. 0: none.
	Timeout        time.Duration `json:"timeout,omitempty"`
	BackendTimeout time.Duration `json:"backendTimeout,omitempty"`
	// Retry is the rule's retry policy; nil: the mesh's defaults.
	Retry *Retry `json:"retry,omitempty"`
}

// Path match types (Gateway API's HTTPPathMatch types).
const (
	PathExact  = "Exact"
	PathPrefix = "PathPrefix"
	PathRegex  = "RegularExpression"
)

// RouteMatch is what a request must carry for a Route: all of it
// (Gateway API's HTTPRouteMatch; a GRPCRoute's method match is a path
// match on /service/method). The zero value matches every request.
type RouteMatch struct {
	// PathType is PathExact, PathPrefix or PathRegex; "" for any path.
	PathType string `json:"pathType,omitempty"`
	Path     string `json:"path,omitempty"`
	// Method is the HTTP method; "" for any.
	Method  string       `json:"method,omitempty"`
	Headers []ValueMatch `json:"headers,omitempty"`
	Query   []ValueMatch `json:"query,omitempty"`
}

// ValueMatch matches a header (name case-insensitive) or a query
// parameter (name exact) by its first value: equal to Value, or, with
// Regex, matching it (RE2, unanchored as Gateway API leaves it).
type ValueMatch struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Regex bool   `json:"regex,omitempty"`
}

// Backend is a share of a Route's requests: Service ("namespace/name") on
// Port.
type Backend struct {
	Service string `json:"service"`
	Port    uint16 `json:"port"`
	Weight  uint32 `json:"weight"`
}

// Retry says when a request that failed is tried again: up to Attempts
// more times, after Backoff (growing, with jitter), when the response
// status is one of Codes or the try's connection failed. Codes retry a
// request whose body was sent (a POST the app may have acted on) only
// because the route asks for it.
type Retry struct {
	// Attempts 0 with Codes: DefaultRetryAttempts.
	Attempts int           `json:"attempts,omitempty"`
	Codes    []int         `json:"codes,omitempty"`
	Backoff  time.Duration `json:"backoff,omitempty"`
}

// DefaultRetryAttempts is how many times a route's retry codes retry a
// request when the route does not say (Gateway API leaves it to the
// implementation).
const DefaultRetryAttempts = 2

// Matches reports whether request r, sent to port, takes route rt.
func (rt *Route) Matches(port uint16, r *http.Request) bool {
	if rt.Port != 0 && rt.Port != port {
		return false
	}
	return rt.Match.Matches(r)
}

// Matches reports whether r carries all that m asks for.
func (m *RouteMatch) Matches(r *http.Request) bool {
	if m.Method != "" && m.Method != r.Method {
		return false
	}
	switch m.PathType {
	case PathExact:
		if r.URL.Path != m.Path {
			return false
		}
	case PathPrefix:
		if !pathHasPrefix(r.URL.Path, m.Path) {
			return false
		}
	case PathRegex:
		if !matchRegex(m.Path, r.URL.Path, true) {
			return false
		}
	}
	for i := range m.Headers {
		h := &m.Headers[i]
		v, ok := r.Header[http.CanonicalHeaderKey(h.Name)]
		if !ok || !h.matches(v[0]) {
			return false
		}
	}
	if len(m.Query) > 0 {
		q := r.URL.Query()
		for i := range m.Query {
			p := &m.Query[i]
			v, ok := q[p.Name]
			if !ok || !p.matches(v[0]) {
				return false
			}
		}
	}
	return true
}

func (v *ValueMatch) matches(s string) bool {
	if v.Regex {
		return matchRegex(v.Value, s, false)
	}
	return s == v.Value
}

// pathHasPrefix is Gateway API's PathPrefix: prefix matches whole path
// elements ("/foo" matches "/foo" and "/foo/bar", not "/foobar"); a
// trailing slash of prefix is ignored.
func pathHasPrefix(path, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix == "" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// Regular expressions of routes, compiled once per pattern (a config's
// patterns are few and checked by Validate).
var (
	regexMu    sync.RWMutex
	regexCache = map[string]*regexp.Regexp{}
)

const maxRegexCache = 4096

// matchRegex reports whether s matches pattern: all of s when anchored
// (a path, as most implementations read Gateway API's path
// RegularExpression), anywhere in it otherwise (a header or query
// value). An invalid pattern matches nothing.
func matchRegex(pattern, s string, anchored bool) bool {
	key := pattern
	if anchored {
		key = "^(?:" + pattern + ")$"
	}
	regexMu.RLock()
	re, ok := regexCache[key]
	regexMu.RUnlock()
	if !ok {
		var err error
		re, err = regexp.Compile(key)
		if err != nil {
			re = nil
		}
		regexMu.Lock()
		if len(regexCache) >= maxRegexCache {
			clear(regexCache)
		}
		regexCache[key] = re
		regexMu.Unlock()
	}
	return re != nil && re.MatchString(s)
}

// PickBackend chooses the backend of rt for a draw n in [0, total
// weight): the one whose share holds it. nil when no backend has weight.
func (rt *Route) PickBackend(n uint64) *Backend {
	for i := range rt.Backends {
		b := &rt.Backends[i]
		if n < uint64(b.Weight) {
			return b
		}
		n -= uint64(b.Weight)
	}
	return nil
}

// TotalWeight is the sum of rt's backends' weights.
func (rt *Route) TotalWeight() uint64 {
	var t uint64
	for _, b := range rt.Backends {
		t += uint64(b.Weight)
	}
	return t
}

// validateRoutes checks the routes and the traffic policy of s.
func (s *Service) validateRoutes() error {
	var errs []error
	if s.Traffic != nil {
		if err := s.Traffic.validate(); err != nil {
			errs = append(errs, fmt.Errorf("service %s traffic policy %s: %w", s.Key(), s.Traffic.Name, err))
		}
	}
	for i := range s.Routes {
		rt := &s.Routes[i]
		if err := rt.validate(); err != nil {
			errs = append(errs, fmt.Errorf("service %s route %d (%s rule %d): %w", s.Key(), i, rt.Name, rt.Rule, err))
		}
	}
	return errors.Join(errs...)
}

func (rt *Route) validate() error {
	m := &rt.Match
	switch m.PathType {
	case "":
	case PathExact, PathPrefix:
		if !strings.HasPrefix(m.Path, "/") {
			return fmt.Errorf("path %q must start with /", m.Path)
		}
	case PathRegex:
		if _, err := regexp.Compile(m.Path); err != nil {
			return fmt.Errorf("path regular expression: %w", err)
		}
	default:
		return fmt.Errorf("unknown path match type %q", m.PathType)
	}
	for _, vs := range [][]ValueMatch{m.Headers, m.Query} {
		for _, v := range vs {
			if v.Name == "" {
				return errors.New("a header or query match needs a name")
			}
			if v.Regex {
				if _, err := regexp.Compile(v.Value); err != nil {
					return fmt.Errorf("%s: regular expression: %w", v.Name, err)
				}
			}
		}
	}
	for _, b := range rt.Backends {
		ns, name, ok := strings.Cut(b.Service, "/")
		if !ok || ns == "" || name == "" || b.Port == 0 {
			return fmt.Errorf("backend %q port %d: want namespace/name and a port", b.Service, b.Port)
		}
	}
	if rt.Timeout < 0 || rt.BackendTimeout < 0 {
		return errors.New("negative timeout")
	}
	if r := rt.Retry; r != nil {
		if r.Attempts < 0 || r.Backoff < 0 {
			return errors.New("negative retry attempts or backoff")
		}
		for _, c := range r.Codes {
			if c < 400 || c > 599 {
				return fmt.Errorf("retry code %d: want 400-599", c)
			}
		}
	}
	return nil
}
