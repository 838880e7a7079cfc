package pipeline

import (
	"net/http/httptest"
	"testing"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// TestMatchRoute: producer routes (the Service's namespace) apply to every
// client; a client whose namespace has consumer routes for the Service
// follows those instead; another namespace's consumer routes apply to
// nobody else; the first route that fits wins.
func TestMatchRoute(t *testing.T) {
	svc := &meshconfig.Service{Name: "web", Namespace: "prod", Routes: []meshconfig.Route{
		{Name: "prod/exact", Match: meshconfig.RouteMatch{PathType: meshconfig.PathExact, Path: "/a"}},
		{Name: "team-a/mine", Match: meshconfig.RouteMatch{PathType: meshconfig.PathPrefix, Path: "/"}},
		{Name: "prod/all", Match: meshconfig.RouteMatch{PathType: meshconfig.PathPrefix, Path: "/"}},
		{Name: "prod/port81", Port: 81},
	}}
	for _, tc := range []struct {
		ns, path string
		port     uint16
		want     string
	}{
		{"prod", "/a", 80, "prod/exact"},
		{"prod", "/b", 80, "prod/all"},
		{"team-b", "/a", 80, "prod/exact"},
		{"team-a", "/a", 80, "team-a/mine"},
		{"team-a", "/b", 81, "team-a/mine"},
	} {
		rt := matchRoute(svc, tc.ns, tc.port, httptest.NewRequest("GET", tc.path, nil))
		if rt == nil || rt.Name != tc.want {
			t.Errorf("client in %s, %s port %d: %+v, want %s", tc.ns, tc.path, tc.port, rt, tc.want)
		}
	}
	only := &meshconfig.Service{Name: "web", Namespace: "prod", Routes: []meshconfig.Route{{Name: "prod/port81", Port: 81}}}
	if rt := matchRoute(only, "prod", 80, httptest.NewRequest("GET", "/", nil)); rt != nil {
		t.Errorf("no route fits port 80, got %+v", rt)
	}
	if rt := matchRoute(nil, "prod", 80, httptest.NewRequest("GET", "/", nil)); rt != nil {
		t.Errorf("no service: %+v", rt)
	}
}
