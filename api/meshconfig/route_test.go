package meshconfig

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRouteMatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		m      RouteMatch
		method string
		target string
		header map[string]string
		want   bool
	}{
		{"zero matches all", RouteMatch{}, "POST", "/x?y=1", nil, true},
		{"exact", RouteMatch{PathType: PathExact, Path: "/a"}, "GET", "/a", nil, true},
		{"exact is not a prefix", RouteMatch{PathType: PathExact, Path: "/a"}, "GET", "/a/b", nil, false},
		{"prefix whole element", RouteMatch{PathType: PathPrefix, Path: "/foo"}, "GET", "/foo/bar", nil, true},
		{"prefix itself", RouteMatch{PathType: PathPrefix, Path: "/foo/"}, "GET", "/foo", nil, true},
		{"prefix not mid-element", RouteMatch{PathType: PathPrefix, Path: "/foo"}, "GET", "/foobar", nil, false},
		{"prefix /", RouteMatch{PathType: PathPrefix, Path: "/"}, "GET", "/anything", nil, true},
		{"regex anchored", RouteMatch{PathType: PathRegex, Path: "/v[0-9]+/.*"}, "GET", "/v2/x", nil, true},
		{"regex anchored, no partial", RouteMatch{PathType: PathRegex, Path: "/v[0-9]+"}, "GET", "/v2/x", nil, false},
		{"method", RouteMatch{Method: "POST"}, "GET", "/", nil, false},
		{"header, name any case", RouteMatch{Headers: []ValueMatch{{Name: "x-variant", Value: "b"}}}, "GET", "/", map[string]string{"X-Variant": "b"}, true},
		{"header value exact", RouteMatch{Headers: []ValueMatch{{Name: "X-Variant", Value: "b"}}}, "GET", "/", map[string]string{"X-Variant": "B"}, false},
		{"header missing", RouteMatch{Headers: []ValueMatch{{Name: "X-Variant", Value: "b"}}}, "GET", "/", nil, false},
		{"header regex", RouteMatch{Headers: []ValueMatch{{Name: "X-Agent", Value: "^plan", Regex: true}}}, "GET", "/", map[string]string{"X-Agent": "planner"}, true},
		{"query", RouteMatch{Query: []ValueMatch{{Name: "v", Value: "2"}}}, "GET", "/?v=2", nil, true},
		{"query other value", RouteMatch{Query: []ValueMatch{{Name: "v", Value: "2"}}}, "GET", "/?v=1", nil, false},
		{"invalid regex matches nothing", RouteMatch{PathType: PathRegex, Path: "/("}, "GET", "/(", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, nil)
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			if got := tc.m.Matches(r); got != tc.want {
				t.Errorf("%+v on %s %s %v: %v, want %v", tc.m, tc.method, tc.target, tc.header, got, tc.want)
			}
		})
	}
	rt := Route{Port: 80}
	if rt.Matches(81, httptest.NewRequest("GET", "/", nil)) || !rt.Matches(80, httptest.NewRequest("GET", "/", nil)) {
		t.Error("a route for port 80 must take requests to port 80 only")
	}
}

func TestRoutePickBackend(t *testing.T) {
	rt := Route{Backends: []Backend{{Service: "a/v1", Port: 80, Weight: 90}, {Service: "a/v0", Port: 80}, {Service: "a/v2", Port: 80, Weight: 10}}}
	if rt.TotalWeight() != 100 {
		t.Fatalf("total weight %d", rt.TotalWeight())
	}
	count := map[string]int{}
	for n := range uint64(100) {
		count[rt.PickBackend(n).Service]++
	}
	if count["a/v1"] != 90 || count["a/v2"] != 10 || count["a/v0"] != 0 {
		t.Errorf("shares over every draw: %v", count)
	}
	if (&Route{}).PickBackend(0) != nil {
		t.Error("a route without backends picked one")
	}
}

func TestRouteValidate(t *testing.T) {
	ok := Route{Name: "ns/r", Match: RouteMatch{PathType: PathPrefix, Path: "/"}, Backends: []Backend{{Service: "ns/s", Port: 80, Weight: 1}}}
	for _, tc := range []struct {
		name string
		edit func(*Route)
		want string // "" valid
	}{
		{"valid", func(*Route) {}, ""},
		{"relative path", func(r *Route) { r.Match.Path = "x" }, "must start with /"},
		{"bad regex", func(r *Route) { r.Match = RouteMatch{PathType: PathRegex, Path: "("} }, "regular expression"},
		{"unknown path type", func(r *Route) { r.Match.PathType = "Glob" }, "unknown path match type"},
		{"backend without namespace", func(r *Route) { r.Backends[0].Service = "s" }, "namespace/name"},
		{"backend without port", func(r *Route) { r.Backends[0].Port = 0 }, "namespace/name and a port"},
		{"negative timeout", func(r *Route) { r.Timeout = -time.Second }, "negative timeout"},
		{"retry code", func(r *Route) { r.Retry = &Retry{Codes: []int{200}} }, "want 400-599"},
		{"header without name", func(r *Route) { r.Match.Headers = []ValueMatch{{Value: "x"}} }, "needs a name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := ok
			rt.Backends = append([]Backend(nil), ok.Backends...)
			tc.edit(&rt)
			c := &Config{TrustDomain: "cluster.local", Services: []Service{{Name: "s", Namespace: "ns", Routes: []Route{rt}}}}
			err := c.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate: %v; want %q", err, tc.want)
			}
		})
	}
}
