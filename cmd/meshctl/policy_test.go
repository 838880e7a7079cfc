package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	ztdebug "github.com/agentmesh/agentmesh/ztunnel/debug"
)

// fakeAPIs serves a controller and a ztunnel answering with the given
// JSON bodies and records the queries they got.
func fakeAPIs(t *testing.T, ctl, zt any, ztStatus int) (ctlURL, ztURL string, queries *[]string) {
	t.Helper()
	var qs []string
	serve := func(path string, body any, status int) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			qs = append(qs, r.URL.Path+"?"+r.URL.RawQuery)
			if r.URL.Path != path {
				http.NotFound(w, r)
				return
			}
			if status != http.StatusOK {
				http.Error(w, body.(string), status)
				return
			}
			json.NewEncoder(w).Encode(body)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	return serve("/debug/workload", ctl, http.StatusOK), serve("/debug/authz", zt, ztStatus), &qs
}

const ctlAnswer = `{"workload": {"uid": "u1", "name": "data-validator", "namespace": "shop", "serviceAccount": "validator",
  "node": "n2", "ips": ["198.18.2.5"], "enrolled": true}, "identity": "spiffe://cluster.local/ns/shop/sa/validator",
  "node": "n2", "policies": [{"name": "shop/only-planner", "action": "Allow", "accepted": "True", "reason": "Accepted"},
  {"name": "shop/new", "action": "Deny", "accepted": "True", "reason": "L7FieldsNotEnforced", "message": "rule 0 uses http"}]}`

const ztAnswer = `{"node": "n2", "from": {"workload": "shop/billing", "identity": "spiffe://cluster.local/ns/shop/sa/billing",
  "addr": "198.18.1.7", "mtls": true}, "to": {"workload": "shop/data-validator", "uid": "u1", "addr": "198.18.2.5"},
  "port": 8080, "mtlsMode": "STRICT", "default": "Allow", "policies": ["shop/only-planner"],
  "decision": {"allow": false, "reason": "no-allow-match", "policy": "shop/only-planner", "rule": -1}}`

func decode(t *testing.T, s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestPolicyCheckText(t *testing.T) {
	ctl, zt, qs := fakeAPIs(t, decode(t, ctlAnswer), decode(t, ztAnswer), http.StatusOK)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"policy", "check", "--from", "shop/billing", "--to", "shop/data-validator",
		"--port", "8080", "--controller", ctl, "--ztunnel", zt}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	text := out.String()
	t.Logf("output:\n%s", text)
	for _, want := range []string{
		"shop/billing", "spiffe://cluster.local/ns/shop/sa/billing, mTLS, 198.18.1.7",
		"shop/data-validator port 8080", "on node n2 (mTLS mode STRICT, namespace default Allow)",
		"shop/only-planner", "Allow, accepted",
		"Deny, accepted with a warning: L7FieldsNotEnforced: rule 0 uses http",
		"pending:", "shop/new (not in ztunnel yet)",
		"decision: DENY: Allow policies select shop/data-validator (shop/only-planner) but no rule of theirs matches",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	wantQ := []string{"/debug/workload?pod=shop%2Fdata-validator", "/debug/authz?from=shop%2Fbilling&port=8080&to=shop%2Fdata-validator"}
	if strings.Join(*qs, " ") != strings.Join(wantQ, " ") {
		t.Errorf("queries = %q, want %q", *qs, wantQ)
	}
}

// TestPolicyCheckProbe: a check from the node's own address names the
// node as the source and lists the destination's probe ports.
func TestPolicyCheckProbe(t *testing.T) {
	zt := `{"node": "n2", "from": {"addr": "198.19.2.1", "node": true}, "to": {"workload": "shop/data-validator", "uid": "u1",
	  "addr": "198.18.2.5"}, "port": 8080, "mtlsMode": "STRICT", "default": "Allow", "policies": ["shop/only-planner"],
	  "probePorts": [8080, 8081], "decision": {"allow": true, "reason": "kubelet-probe", "rule": -1}}`
	ctl, ztURL, _ := fakeAPIs(t, decode(t, ctlAnswer), decode(t, zt), http.StatusOK)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"policy", "check", "--from", "198.19.2.1", "--to", "shop/data-validator",
		"--port", "8080", "--controller", ctl, "--ztunnel", ztURL}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	text := out.String()
	t.Logf("output:\n%s", text)
	for _, want := range []string{"(the node itself)", "plaintext from 198.19.2.1", "probe ports:", "[8080 8081]",
		"decision: ALLOW: plaintext from the node's own address to a probe port of shop/data-validator"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestPolicyCheckExplain(t *testing.T) {
	for _, tc := range []struct{ decision, want string }{
		{`{"allow": true, "reason": "allow-rule", "policy": "shop/p", "rule": 2}`, "ALLOW by shop/p rule 2 (allow-rule)"},
		{`{"allow": false, "reason": "deny-rule", "policy": "shop/d", "rule": 0}`, "DENY by shop/d rule 0 (deny-rule)"},
		{`{"allow": false, "reason": "deny-rule", "policy": "shop/bad", "rule": -1}`, "DENY by shop/bad as a whole: it is invalid and enforced as a Deny of every connection"},
		{`{"allow": true, "reason": "namespace-default", "rule": -1}`, "ALLOW: no Allow policy selects shop/v, the namespace default (Allow) applies"},
		{`{"allow": false, "reason": "plaintext-strict", "rule": -1}`, "DENY: plaintext to a STRICT workload"},
		{`{"allow": false, "reason": "no-policy-data", "rule": -1}`, "DENY: ztunnel has no policy data for shop/v yet (fail closed)"},
		{`{"allow": true, "reason": "kubelet-probe", "rule": -1}`,
			"ALLOW: plaintext from the node's own address to a probe port of shop/v (kubelet-probe), admitted whatever the policies and mTLS mode say"},
	} {
		var z ztdebug.Authz
		if err := json.Unmarshal([]byte(`{"to": {"workload": "shop/v"}, "default": "Allow", "decision": `+tc.decision+`}`), &z); err != nil {
			t.Fatal(err)
		}
		if got := explain(&z); got != tc.want {
			t.Errorf("explain(%s) = %q, want %q", tc.decision, got, tc.want)
		}
	}
}

func TestPolicyCheckErrors(t *testing.T) {
	ctl, zt, _ := fakeAPIs(t, decode(t, ctlAnswer), "to shop/data-validator runs on node n2, ask that node's ztunnel", http.StatusBadRequest)
	for _, tc := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"--from", "shop/billing", "--to", "data-validator", "--port", "8080"}, 2, `--to "data-validator": want <namespace>/<pod>`},
		{[]string{"--from", "nope", "--to", "shop/v", "--port", "70000"}, 2, "--port 70000: want 1-65535"},
		{[]string{"--from", "198.18.9.9", "--to", "shop/v", "--port", "80", "--controller", ctl, "--ztunnel", zt}, 1,
			"ztunnel: 400 Bad Request: to shop/data-validator runs on node n2, ask that node's ztunnel (is --ztunnel the admin endpoint of node n2's ztunnel?)"},
		{[]string{"--from", "198.18.9.9", "--to", "shop/v", "--port", "80", "--controller", "http://127.0.0.1:1"}, 1, "controller unreachable"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"policy", "check"}, tc.args...), &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String(), tc.inStderr) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut.String(), tc.code, tc.inStderr)
		}
	}
}
