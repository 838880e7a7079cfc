package policy

import (
	"testing"
)

// TestEvaluateRequest: rules with L7 parts decide each request; Admissible
// and NeedsRequests say what a connection's requests can change.
func TestEvaluateRequest(t *testing.T) {
	getOnly := pol("get-only", allow, from(Peer{Identities: SetOf(webID)}).with(&HTTPMatch{Methods: []string{"GET"}, Paths: []string{"/api/*", "/health"}}, nil, nil))
	tools := pol("tools", allow, from(Peer{Identities: SetOf(webID)}).with(nil, nil, &MCPMatch{Tools: []string{"search"}}))
	a2a := pol("a2a", allow, from(Peer{Identities: SetOf(webID)}).with(nil, &JSONRPCMatch{Methods: []string{"message/send", "tasks/get"}}, nil))
	noDelete := pol("no-delete", deny, from(Peer{Identities: SetOf(webID)}).with(nil, nil, &MCPMatch{Tools: []string{"delete_db"}}))
	noPost := pol("no-post", deny, Rule{}.on(port(80)).with(&HTTPMatch{Methods: []string{"POST"}}, nil, nil))
	web := mtls(webID, "10.0.0.1", 80)
	call := func(method, tool string) *Call { return &Call{Method: method, Tool: tool} }
	tests := []struct {
		name string
		t    *Target
		q    Request
		want Decision
	}{
		{"http method and path prefix", target(getOnly), Request{Method: "GET", Path: "/api/v1/x"},
			Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/get-only", Rule: 0}},
		{"http exact path", target(getOnly), Request{Method: "GET", Path: "/health"},
			Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/get-only", Rule: 0}},
		{"http wrong method", target(getOnly), Request{Method: "POST", Path: "/api/v1/x"},
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/get-only", Rule: -1}},
		{"http path not a prefix", target(getOnly), Request{Method: "GET", Path: "/apix"},
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/get-only", Rule: -1}},
		{"mcp listed tool", target(tools), Request{Method: "POST", Path: "/mcp", RPC: call("tools/call", "search")},
			Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/tools", Rule: 0}},
		{"mcp other tool", target(tools), Request{Method: "POST", Path: "/mcp", RPC: call("tools/call", "delete_db")},
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/tools", Rule: -1}},
		{"mcp session plumbing allowed", target(tools), Request{Method: "POST", Path: "/mcp", RPC: call("initialize", "")},
			Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/tools", Rule: 0}},
		{"mcp event stream GET allowed", target(tools), Request{Method: "GET", Path: "/mcp", MCPStream: true},
			Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/tools", Rule: 0}},
		{"mcp session DELETE allowed", target(tools), Request{Method: "DELETE", Path: "/mcp", MCPStream: true},
			Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/tools", Rule: 0}},
		{"mcp rule, plain GET not MCP", target(tools), Request{Method: "GET", Path: "/admin"},
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/tools", Rule: -1}},
		{"mcp rule, POST without a JSON-RPC call", target(tools), Request{Method: "POST", Path: "/admin/reset"},
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/tools", Rule: -1}},
		{"jsonrpc listed method", target(a2a), Request{Method: "POST", Path: "/", RPC: call("message/send", "")},
			Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/a2a", Rule: 0}},
		{"jsonrpc other method", target(a2a), Request{Method: "POST", Path: "/", RPC: call("tasks/cancel", "")},
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/a2a", Rule: -1}},
		{"jsonrpc rule, no call", target(a2a), Request{Method: "GET", Path: "/"},
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/a2a", Rule: -1}},
		{"deny tool", target(noDelete), Request{Method: "POST", Path: "/mcp", RPC: call("tools/call", "delete_db")},
			Decision{Reason: ReasonDenyRule, Policy: "shop/no-delete", Rule: 0}},
		{"deny tool rule leaves other calls", target(noDelete), Request{Method: "POST", Path: "/mcp", RPC: call("initialize", "")},
			Decision{Allow: true, Reason: ReasonDefault, Rule: -1}},
		{"deny post", target(pol("all", allow, Rule{}), noPost), Request{Method: "POST", Path: "/"},
			Decision{Reason: ReasonDenyRule, Policy: "shop/no-post", Rule: 0}},
		{"deny post lets get", target(pol("all", allow, Rule{}), noPost), Request{Method: "GET", Path: "/"},
			Decision{Allow: true, Reason: ReasonAllowRule, Policy: "shop/all", Rule: 0}},
		{"marked L7 without parts matches no request", target(pol("old", allow, from(Peer{Identities: SetOf(webID)}).l7())), Request{Method: "GET", Path: "/"},
			Decision{Reason: ReasonNoAllowMatch, Policy: "shop/old", Rule: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := EvaluateRequest(tc.t, web, tc.q); got != tc.want {
				t.Errorf("EvaluateRequest = %+v, want %+v", got, tc.want)
			}
		})
	}

	// What the connection's requests can change.
	for _, tc := range []struct {
		name         string
		t            *Target
		c            Conn
		needs, admit bool
		atL4         bool
	}{
		{"allow with http part", target(getOnly), web, true, true, false},
		{"allow with http part, other peer", target(getOnly), mtls(otherID, "10.0.0.1", 80), false, false, false},
		{"deny with mcp part", target(noDelete), web, true, true, false},
		{"deny post on port 80 only", target(noPost), mtls(webID, "10.0.0.1", 81), false, true, true},
		{"no l7 rules", target(pol("all", allow, Rule{})), web, false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NeedsRequests(tc.t, tc.c); got != tc.needs {
				t.Errorf("NeedsRequests = %v, want %v", got, tc.needs)
			}
			if got := Admissible(tc.t, tc.c); got.Allow != tc.admit {
				t.Errorf("Admissible = %v, want allow %v", got, tc.admit)
			}
			if got := Evaluate(tc.t, tc.c); got.Allow != tc.atL4 {
				t.Errorf("Evaluate = %v, want allow %v (opaque bytes: L7 Allow rules match nothing, L7 Deny rules without their L7 part)", got, tc.atL4)
			}
		})
	}
}

func (r Rule) with(h *HTTPMatch, j *JSONRPCMatch, m *MCPMatch) Rule {
	r.L7, r.HTTP, r.JSONRPC, r.MCP = true, h, j, m
	return r
}
