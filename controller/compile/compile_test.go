package compile

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// fakeResolver knows a few namespaces and workloads.
type fakeResolver struct{}

var (
	fakeNamespaces = map[string]labels.Set{"shop": {"team": "a"}, "ops": {"team": "b"}, "other": {"team": "a"}}
	fakeWorkloads  = []struct {
		uid, ns string
		labels  labels.Set
	}{
		{"uid-web", "shop", labels.Set{"app": "web"}},
		{"uid-db", "shop", labels.Set{"app": "db"}},
		{"uid-ops-web", "ops", labels.Set{"app": "web"}},
	}
)

func (fakeResolver) TrustDomain() string { return td }

func (fakeResolver) Namespaces(sel labels.Selector) []string {
	var out []string
	for name, l := range fakeNamespaces {
		if sel.Matches(l) {
			out = append(out, name)
		}
	}
	return out
}

func (fakeResolver) Workloads(ns policy.Set[string], sel labels.Selector) []string {
	var out []string
	for _, w := range fakeWorkloads {
		if ns.Has(w.ns) && sel.Matches(w.labels) {
			out = append(out, w.uid)
		}
	}
	return out
}

// compileJSON compiles an AgentPolicy in namespace shop from its spec.
func compileJSON(t *testing.T, spec string) (policy.Policy, error) {
	t.Helper()
	p := &v1alpha1.AgentPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"}}
	if err := json.Unmarshal([]byte(spec), &p.Spec); err != nil {
		t.Fatalf("bad test spec: %v", err)
	}
	return Compile(p, fakeResolver{})
}

func TestCompile(t *testing.T) {
	p, err := compileJSON(t, `{"action": "Allow", "rules": [
		{"from": [{"serviceAccounts": ["web", "ops/admin"]}]},
		{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "namespaces": ["other", "ops"]}]},
		{"from": [{"namespaces": ["ops"], "podSelector": {"matchLabels": {"app": "web"}}}, {"podSelector": {}}]},
		{"from": [{"ipBlocks": [{"cidr": "10.1.2.3/8", "except": ["10.1.0.0/16"]}]}], "ports": [{"port": 80}, {"port": 9000, "endPort": 9010}]},
		{"mcp": {"tools": ["search"]}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	r := p.Rules
	if len(r) != 5 || r[4].Index != 4 || !r[4].L7 || r[0].L7 {
		t.Fatalf("rules = %+v", r)
	}
	if r[4].MCP == nil || !slices.Equal(r[4].MCP.Tools, []string{"search"}) || r[4].HTTP != nil || r[0].HasL7() {
		t.Errorf("L7 parts: rule 4 %+v, rule 0 %+v", r[4], r[0])
	}
	if !r[0].From[0].Identities.Has(webID) || !r[0].From[0].Identities.Has(adminID) || r[0].From[0].Identities.Len() != 2 {
		t.Errorf("identities = %+v", r[0].From[0].Identities)
	}
	if ns := r[1].From[0].Namespaces; !ns.Has("other") || ns.Has("ops") || ns.Has("shop") {
		t.Errorf("namespaces (selector AND list) = %+v", ns)
	}
	if w := r[2].From[0]; !w.Workloads.Has("uid-ops-web") || w.Workloads.Len() != 1 || !w.Namespaces.Any() {
		t.Errorf("pods in ops = %+v", w)
	}
	if w := r[2].From[1].Workloads; !w.Has("uid-web") || !w.Has("uid-db") || w.Len() != 2 {
		t.Errorf("pods in own namespace = %+v", w)
	}
	wantBlock := policy.IPBlock{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	if b := r[3].From[0].IPBlocks; len(b) != 1 || b[0].Prefix != wantBlock.Prefix || b[0].Except[0] != wantBlock.Except[0] {
		t.Errorf("ipBlocks = %+v", b)
	}
	if ports := r[3].Ports; len(ports) != 2 || ports[0] != port(80) || ports[1] != (policy.PortRange{From: 9000, To: 9010}) {
		t.Errorf("ports = %+v", ports)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct{ spec, want string }{
		{`{"action": "Maybe"}`, `action "Maybe"`},
		{`{"action": "Deny", "rules": [{}]}`, "rules[0]: deny rule without from or ports"},
		{`{"action": "Allow", "rules": [{"from": [{}]}]}`, "from entry sets nothing"},
		{`{"action": "Allow", "rules": [{"ports": [{"port": 0}]}]}`, "ports[0]: port range 0-0"},
		{`{"action": "Allow", "rules": [{"ports": [{"port": 70000}]}]}`, "port range 70000-70000"},
		{`{"action": "Allow", "rules": [{"ports": [{"port": 90, "endPort": 80}]}]}`, "port range 90-80"},
		{`{"action": "Allow", "rules": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}`, `protocol "UDP"`},
		{`{"action": "Allow", "rules": [{"from": [{"serviceAccounts": ["a/b/c"]}]}]}`, `service account "a/b/c"`},
		{`{"action": "Allow", "rules": [{"from": [{"serviceAccounts": ["/x"]}]}]}`, `service account "/x"`},
		{`{"action": "Allow", "rules": [{"from": [{"ipBlocks": [{"cidr": "10.0.0.300/8"}]}]}]}`, "cidr:"},
		{`{"action": "Allow", "rules": [{"from": [{"ipBlocks": [{"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}]}]}]}`, "not within"},
		{`{"action": "Allow", "rules": [{"from": [{"ipBlocks": [{"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}]}]}]}`, "not within"},
		{`{"action": "Allow", "rules": [{"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}]}]}`, "podSelector:"},
		{`{"action": "Allow", "rules": [{"http": {"methods": ["GE T"]}}]}`, `http.methods[0] "GE T"`},
		{`{"action": "Allow", "rules": [{"http": {"paths": ["api/*"]}}]}`, `http.paths[0] "api/*"`},
		{`{"action": "Allow", "rules": [{"http": {"paths": ["/a/*/b"]}}]}`, `only at the end`},
		{`{"action": "Allow", "rules": [{"jsonrpc": {"methods": [""]}}]}`, "jsonrpc.methods"},
		{`{"action": "Allow", "rules": [{"mcp": {"tools": ["ok", ""]}}]}`, "mcp.tools"},
	}
	for _, tc := range tests {
		_, err := compileJSON(t, tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.spec, err, tc.want)
		}
	}
}

func TestCompileMappedPrefix(t *testing.T) {
	p, err := compileJSON(t, `{"action": "Allow", "rules": [{"from": [{"ipBlocks": [{"cidr": "::ffff:10.0.0.0/104", "except": ["::ffff:10.1.0.0/112"]}]}]}]}`)
	if err != nil {
		t.Fatal(err)
	}
	tg := target(p).permissive()
	check(t, tg, plain("10.2.0.1", 80), allowed(0))
	check(t, tg, plain("10.1.0.1", 80), noMatch)
}

// TestCompileEvaluate runs a compiled policy end to end.
func TestCompileEvaluate(t *testing.T) {
	p, err := compileJSON(t, `{"action": "Allow", "rules": [{"from": [{"serviceAccounts": ["web"]}], "ports": [{"port": 8080}]}]}`)
	if err != nil {
		t.Fatal(err)
	}
	tg := target(p)
	check(t, tg, mtls(webID, "10.0.0.1", 8080), allowed(0))
	check(t, tg, mtls(webID, "10.0.0.1", 8081), noMatch)
	check(t, tg, mtls(adminID, "10.0.0.1", 8080), noMatch)
}
