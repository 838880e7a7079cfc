package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"

	ztdebug "github.com/agentmesh/agentmesh/ztunnel/debug"
)

func TestServiceEndpoints(t *testing.T) {
	answer := []ztdebug.Service{{
		Name: "data-validator", Namespace: "agents", VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.7"), netip.MustParseAddr("fd00:96::7")},
		Ports: []ztdebug.ServicePort{{Name: "http", Port: 8080, TargetPort: "8080"}},
		Endpoints: []ztdebug.Endpoint{
			{Workload: "agents/dv-1", Identity: "spiffe://cluster.local/ns/agents/sa/dv", Addrs: []netip.Addr{netip.MustParseAddr("10.0.1.5")},
				Ready: true, Mesh: true, EWMAMillis: 0.42, Open: 3, Picks: 120, Failures: 1},
			{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.9")}, Ready: false, Ejected: true},
		},
		Routes: []ztdebug.Route{
			{Name: "agents/dv-canary", Kind: "HTTPRoute", Rule: 0, Match: "x-variant=b", Backends: []meshconfig.Backend{{Service: "agents/dv-v2", Port: 8080, Weight: 1}}},
			{Name: "agents/dv-canary", Kind: "HTTPRoute", Rule: 1, Port: 8080, Match: "/*", Timeout: "10s", Backend: "2s",
				Backends: []meshconfig.Backend{{Service: "agents/dv-v1", Port: 8080, Weight: 90}, {Service: "agents/dv-v2", Port: 8080, Weight: 10}},
				Retry:    &meshconfig.Retry{Attempts: 2, Codes: []int{503}, Backoff: 25 * time.Millisecond}},
		},
		Traffic: &meshconfig.TrafficPolicy{Name: "agents/dv-traffic"},
	}}
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.Path + "?" + r.URL.RawQuery
		json.NewEncoder(w).Encode(answer)
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"service", "endpoints", "agents/data-validator", "--ztunnel", srv.URL}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if query != "/debug/services?service=agents%2Fdata-validator" {
		t.Errorf("query %q", query)
	}
	for _, want := range []string{
		"service agents/data-validator  vips 10.96.0.7,fd00:96::7  ports http 8080->8080",
		"10.0.1.5   agents/dv-1  true   hbone      0.42ms  3     120    1         false    spiffe://cluster.local/ns/agents/sa/dv",
		"192.0.2.9  -            false  plain tcp  0.00ms  0     0      0         true     -",
		"HTTPRoute agents/dv-canary  0     *     x-variant=b  agents/dv-v2:8080 100%",
		"HTTPRoute agents/dv-canary  1     8080  /*           agents/dv-v1:8080 90%, agents/dv-v2:8080 10%  10s (try 2s)  2x on [503] after 25ms",
		"traffic policy agents/dv-traffic",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	for _, bad := range [][]string{{"service", "endpoints"}, {"service", "endpoints", "nons"}, {"service", "endpoints", "a/b", "-o", "yaml"}} {
		if code := run(context.Background(), bad, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2", bad, code)
		}
	}
}
