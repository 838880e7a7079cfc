package compile

import (
	"encoding/json"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// FuzzCompile compiles arbitrary specs: no panics, and what compiles is
// well formed and evaluates.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`{"action": "Allow", "rules": [{"from": [{"serviceAccounts": ["web", "ops/admin"], "ipBlocks": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]}], "ports": [{"port": 80, "endPort": 90}]}]}`,
		`{"action": "Deny", "rules": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}}]}]}`,
		`{"action": "Allow", "rules": [{"http": {"methods": ["GET"]}, "ports": [{"port": 65535}]}]}`,
		`{"action": "Deny", "rules": [{"ports": [{"port": 0, "endPort": -1}]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := &v1alpha1.AgentPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"}}
		if json.Unmarshal(data, &p.Spec) != nil {
			return
		}
		compiled, err := Compile(p, fakeResolver{})
		if err != nil {
			return
		}
		checkCompiled(t, compiled)
		for _, c := range []conn{mtls(webID, "10.1.2.3", 80), plain("fd00::1", 9000).fromWorkload("uid-web")} {
			policy.Evaluate(target(compiled).permissive().Target, c.Conn)
		}
	})
}

func checkCompiled(t *testing.T, c policy.Policy) {
	for i, r := range c.Rules {
		if r.Index != i {
			t.Fatalf("rule %d has index %d", i, r.Index)
		}
		for _, pr := range r.Ports {
			if pr.From == 0 || pr.From > pr.To {
				t.Fatalf("bad port range %+v", pr)
			}
		}
		for _, peer := range r.From {
			for _, b := range peer.IPBlocks {
				checkBlock(t, b)
			}
		}
	}
}

func checkBlock(t *testing.T, b policy.IPBlock) {
	if !b.Prefix.IsValid() || b.Prefix != b.Prefix.Masked() {
		t.Fatalf("prefix %v not valid and masked", b.Prefix)
	}
	for _, e := range b.Except {
		if e != e.Masked() || e.Bits() < b.Prefix.Bits() || !b.Prefix.Overlaps(e) {
			t.Fatalf("except %v not within %v", e, b.Prefix)
		}
	}
}
