package ztunnel

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/pipeline"
)

// l7Rule is fromIDs(idClient) with L7 parts.
func l7Rule(h *policy.HTTPMatch, j *policy.JSONRPCMatch, m *policy.MCPMatch) policy.Rule {
	r := fromIDs(idClient)
	r.L7, r.HTTP, r.JSONRPC, r.MCP = true, h, j, m
	return r
}

// TestL7Policy: b's tunnel decides every request of a stream from the
// client when rules with L7 parts apply: HTTP method and path, MCP tools
// (a denied tool gets a JSON-RPC error with the call's id and the next
// allowed call on the same connection works), JSON-RPC methods (A2A
// tasks/cancel denied by a Deny policy), batches call by call, Mcp-Method
// headers that disagree with the body refused; opaque bytes fall back to
// the rules at L4 (an Allow rule with L7 parts matches nothing there, a
// Deny rule matches without its L7 part).
// The source proxies per request (sourceL7) or copies bytes (not).
func TestL7Policy(t *testing.T) {
	for _, sourceL7 := range []bool{true, false} {
		name := map[bool]string{true: "source per request", false: "source opaque"}[sourceL7]
		t.Run(name, func(t *testing.T) { testL7Policy(t, sourceL7) })
	}
}

func testL7Policy(t *testing.T, sourceL7 bool) {
	e := newHTTPEnv(t, "http", "uid-b")
	if !sourceL7 {
		e.node.pipe.HTTP = false
	}
	authz := target(policy.MTLSPermissive,
		agentPolicy("read", policy.ActionAllow, l7Rule(&policy.HTTPMatch{Methods: []string{"GET"}, Paths: []string{"/", "/headers"}}, nil, nil)),
		agentPolicy("tools", policy.ActionAllow, l7Rule(&policy.HTTPMatch{Paths: []string{"/mcp"}}, nil, &policy.MCPMatch{Tools: []string{"search"}})),
		agentPolicy("a2a", policy.ActionAllow, l7Rule(&policy.HTTPMatch{Paths: []string{"/a2a/*"}}, &policy.JSONRPCMatch{}, nil)),
		agentPolicy("no-cancel", policy.ActionDeny, l7Rule(nil, &policy.JSONRPCMatch{Methods: []string{"tasks/cancel"}}, nil)),
	)
	c := e.config(authz)
	c.Workloads = append(c.Workloads, e.node.Index().Config.Workloads[2:]...)
	c.Services = e.node.Index().Config.Services
	e.node.SetConfig(c)
	client, dials := e.client(false)
	do := func(method, path, body string, hdr ...string) (int, string, http.Header) {
		t.Helper()
		req, err := http.NewRequest(method, "http://web"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	call := func(id any, method, tool string) string {
		m := map[string]any{"jsonrpc": "2.0", "id": id, "method": method}
		if tool != "" {
			m["params"] = map[string]any{"name": tool, "arguments": map[string]any{}}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	type rpcErr struct {
		ID    any `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}

	if code, body, _ := do("GET", "/", ""); code != 200 || !strings.HasPrefix(body, "server GET") {
		t.Errorf("GET / = %d %q, want the app's answer", code, body)
	}
	if code, _, h := do("POST", "/", "x"); code != 403 || h.Get("Agentmesh-Error") != "denied" {
		t.Errorf("POST / = %d %v, want 403 denied", code, h)
	}
	if code, _, _ := do("GET", "/x/../headers", ""); code != 200 {
		t.Errorf("GET /x/../headers (cleaned: /headers) = %d, want 200", code)
	}
	// MCP: an allowed tool, a denied one, the allowed one again.
	if code, body, _ := do("POST", "/mcp", call(1, "tools/call", "search")); code != 200 || !strings.HasPrefix(body, "server POST") {
		t.Errorf("tools/call search = %d %q, want the app's answer", code, body)
	}
	code, body, _ := do("POST", "/mcp", call(2, "tools/call", "delete_db"))
	var re rpcErr
	if err := json.Unmarshal([]byte(body), &re); code != 403 || err != nil || re.ID != float64(2) || re.Error.Code != -32001 || strings.Contains(body, "tools") {
		t.Errorf("tools/call delete_db = %d %q, want 403 and a JSON-RPC error for id 2 naming no internals", code, body)
	}
	e.logs.wait(t, map[string]any{"msg": authorize.MsgRequestDenied, "mcp_tool": "delete_db", "policy": "agents/read,agents/tools,agents/a2a",
		"reason": "no-allow-match", "src_identity": idClient.String()})
	if code, _, _ := do("POST", "/mcp", call(3, "tools/call", "search")); code != 200 {
		t.Errorf("the next allowed call = %d, want 200", code)
	}
	if code, _, _ := do("POST", "/mcp", call(4, "initialize", "")); code != 200 {
		t.Errorf("initialize = %d, want 200 (no tool called)", code)
	}
	// The mcp part admits the session's plumbing without a call, and
	// nothing that is not MCP.
	for _, q := range []struct {
		method, body string
		hdr          []string
		want         int
	}{
		{"GET", "", []string{"Accept", "application/json, text/event-stream"}, 200},
		{"DELETE", "", []string{"Mcp-Session-Id", "s1"}, 200},
		{"GET", "", nil, 403},
		{"DELETE", "", nil, 403},
		{"POST", "reset everything", nil, 403},
		{"POST", `{"not":"json-rpc"}`, nil, 403},
	} {
		if code, _, _ := do(q.method, "/mcp", q.body, q.hdr...); code != q.want {
			t.Errorf("%s /mcp %q %v under an mcp rule = %d, want %d", q.method, q.body, q.hdr, code, q.want)
		}
	}
	if code, _, _ := do("POST", "/mcp", call(5, "tools/call", "search"), "Mcp-Method", "tools/call", "Mcp-Name", "other"); code != 400 {
		t.Errorf("Mcp-Name disagreeing with the body = %d, want 400", code)
	}
	batch := "[" + call(6, "tools/call", "search") + "," + call("seven", "tools/call", "delete_db") + "]"
	code, body, _ = do("POST", "/mcp", batch)
	var res []rpcErr
	if err := json.Unmarshal([]byte(body), &res); code != 403 || err != nil || len(res) != 2 || res[1].ID != "seven" {
		t.Errorf("batch with a denied call = %d %q, want 403 and an error per call", code, body)
	}
	if code, _, _ := do("POST", "/mcp", `{"jsonrpc":"2.0","id":8,"method":"tools/call","method":"x"}`); code != 400 {
		t.Errorf("duplicate member names = %d, want 400", code)
	}
	// A2A over JSON-RPC: message/send allowed, tasks/cancel denied.
	if code, _, _ := do("POST", "/a2a/v1", call("m1", "message/send", "")); code != 200 {
		t.Errorf("message/send = %d, want 200", code)
	}
	code, body, _ = do("POST", "/a2a/v1", call("c1", "tasks/cancel", ""))
	if err := json.Unmarshal([]byte(body), &re); code != 403 || err != nil || re.ID != "c1" {
		t.Errorf("tasks/cancel = %d %q, want 403 with id c1", code, body)
	}
	e.logs.wait(t, map[string]any{"msg": authorize.MsgRequestDenied, "rpc_method": "tasks/cancel", "policy": "agents/no-cancel", "reason": "deny-rule"})
	if d := dials.Load(); d != 1 {
		t.Errorf("%d client connections: a denial must not end the connection", d)
	}
	m := e.node.rec.M
	// The protocol is the one the source tunnel named on the CONNECT when
	// it proxies per request; unknown to the destination otherwise.
	proto := ""
	if sourceL7 {
		proto = "http1"
	}
	l := []string{"destination", "client", "agents", "server", "agents", "unknown", "200", proto, "", "tools/call", "search"}
	if got := testutil.ToFloat64(m.Requests.WithLabelValues(l...)); got != 2 {
		t.Errorf("destination agentmesh_requests_total for tools/call search = %v, want 2", got)
	}
	l[6], l[10] = "403", "delete_db"
	if got := testutil.ToFloat64(m.Requests.WithLabelValues(l...)); got != 1 {
		t.Errorf("destination agentmesh_requests_total for the denied call = %v, want 1", got)
	}

	// A config under which no request of the client could be allowed
	// closes its live stream.
	deny := agentPolicy("no-client", policy.ActionDeny, fromIDs(idClient))
	live := e.config(target(policy.MTLSPermissive, deny))
	live.Workloads, live.Services = append(live.Workloads, c.Workloads[2:]...), c.Services
	e.node.SetConfig(live)
	waitFor(t, "the live stream closed", func() bool {
		return testutil.ToFloat64(m.PolicyClosed.WithLabelValues("agents/no-client", "deny-rule")) >= 1
	})
	if sourceL7 {
		// The source's next try is refused (401) and answered 403.
		if code, _, _ := do("GET", "/", ""); code != 403 {
			t.Errorf("GET / after the deny = %d, want 403", code)
		}
	}
	e.node.SetConfig(c)

	// Opaque bytes to b's echo port: the rules are taken at L4, where the
	// Deny rule with a JSON-RPC part denies without it (and the Allow
	// rules with L7 parts match nothing), so the stream is closed.
	conn, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := roundTrip(conn, "hello"); got != "" {
		t.Errorf("opaque bytes under L7-only Allow rules got %q", got)
	}
	e.logs.wait(t, map[string]any{"msg": authorize.MsgDenied, "reason": "deny-rule", "policy": "agents/no-cancel", "port": float64(8080)})
}

// TestL7PolicySilentClient: a stream under rules with L7 parts whose
// client sends nothing within the sniff timeout (a server-first
// protocol) is decided as opaque bytes, and what the client sends later
// still arrives.
func TestL7PolicySilentClient(t *testing.T) {
	old := pipeline.SetInboundSniffTimeout(100 * time.Millisecond)
	t.Cleanup(func() { pipeline.SetInboundSniffTimeout(old) })
	e := newFakeEnv(t)
	e.node.SetConfig(e.config(target(policy.MTLSPermissive,
		agentPolicy("any", policy.ActionAllow, fromIDs(idClient), l7Rule(&policy.HTTPMatch{Methods: []string{"GET"}}, nil, nil)))))
	conn, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	// Admitted (some request could be allowed), then decided as opaque
	// once the sniff timed out: two allow decisions.
	waitFor(t, "the opaque decision", func() bool {
		return testutil.ToFloat64(e.node.rec.M.PolicyDecisions.WithLabelValues("allow", "agents/any", "allow-rule")) == 2
	})
	if got, err := roundTrip(conn, "late"); err != nil || got != "echo:late" {
		t.Fatalf("round trip after the timeout = %q, %v", got, err)
	}
	// A client that speaks first with bytes that are not HTTP: decided as
	// opaque at once, the bytes looked at still reach the app.
	conn, err = e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(conn, "hello"); err != nil || got != "echo:hello" {
		t.Fatalf("opaque bytes sent first = %q, %v", got, err)
	}
}

// TestL7RuleAddedToLiveStream: a stream carried as bytes (no rule with L7
// parts applied when it opened) is re-evaluated at L4 when a config
// brings such rules: its requests are not seen, so a Deny rule with an MCP
// part closes it (without its L7 part) instead of letting its next
// requests bypass the rule.
func TestL7RuleAddedToLiveStream(t *testing.T) {
	e := newFakeEnv(t)
	live, err := e.dial(e.a, netip.AddrPortFrom(e.b.IP, 8080))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b admitted the stream", func() bool { return e.node.liveCount("uid-b") == 1 })
	e.node.SetConfig(e.config(target(policy.MTLSPermissive,
		agentPolicy("no-delete", policy.ActionDeny, l7Rule(nil, nil, &policy.MCPMatch{Tools: []string{"delete_db"}})))))
	readEnds(t, "the byte stream under a new deny rule with an mcp part", live)
	if got := testutil.ToFloat64(e.node.rec.M.PolicyClosed.WithLabelValues("agents/no-delete", "deny-rule")); got != 1 {
		t.Errorf("policy_closed = %v, want 1", got)
	}
}

// TestL7PolicyHintedStreamWaits: a stream whose source tunnel proxies
// HTTP per request (its CONNECT says so) may sit idle past the sniff
// timeout, as a spare connection in an HTTP client's pool does, and
// still carries requests decided one by one under rules with L7 parts,
// instead of being taken for a silent server-first client's and denied
// as opaque bytes (a stream without the hint still is:
// TestL7PolicySilentClient).
func TestL7PolicyHintedStreamWaits(t *testing.T) {
	old := pipeline.SetInboundSniffTimeout(50 * time.Millisecond)
	t.Cleanup(func() { pipeline.SetInboundSniffTimeout(old) })
	e := newHTTPEnv(t, "http", "uid-b")
	c := e.config(target(policy.MTLSPermissive,
		agentPolicy("read", policy.ActionAllow, l7Rule(&policy.HTTPMatch{Methods: []string{"GET"}}, nil, nil))))
	c.Workloads = append(c.Workloads, e.node.Index().Config.Workloads[2:]...)
	c.Services = e.node.Index().Config.Services
	e.node.SetConfig(c)
	e.node.mu.Lock()
	pa := e.node.pods["uid-a"].flow
	e.node.mu.Unlock()
	dst := netip.AddrPortFrom(e.b.IP, 8090)
	f := flow.New(flow.Outbound, flow.HBONE, netip.AddrPortFrom(e.a.IP, 40000), dst)
	f.SrcID, f.DstID, f.MTLS = idClient, idServer, true
	f.PerRequest, f.AppProtocol = true, "http1"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	up, err := e.node.pipe.Transport.DialUpstream(ctx, &pa, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	// Idle well past the sniff timeout: there is no event to wait for,
	// the point is that nothing happens meanwhile.
	time.Sleep(4 * 50 * time.Millisecond)
	up.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(up, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(up), nil)
	if err != nil {
		t.Fatalf("a request on the stream after it sat idle: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "server GET") {
		t.Fatalf("a request on the stream after it sat idle: %d %q, want the app's answer", resp.StatusCode, body)
	}
	e.logs.wait(t, map[string]any{"msg": "request", "direction": "inbound", "method": "GET", "status": float64(200), "app_protocol": "http1"})
}

// TestL7PolicyStreamOutlivesAppConn: a stream decided request by request
// stays admitted while it lives, also after the app closed the first
// connection the destination delivered it on (Connection: close): it
// keeps its connection slot, and a policy change that no longer admits it
// closes it (instead of its admission ending with that first connection).
func TestL7PolicyStreamOutlivesAppConn(t *testing.T) {
	e := newHTTPEnv(t, "http", "uid-b")
	allowGet := agentPolicy("read", policy.ActionAllow, l7Rule(&policy.HTTPMatch{Methods: []string{"GET"}}, nil, nil))
	setPolicy := func(authz *policy.Target) {
		c := e.config(authz)
		c.Workloads = append(c.Workloads, e.node.Index().Config.Workloads[2:]...)
		c.Services = e.node.Index().Config.Services
		e.node.SetConfig(c)
	}
	setPolicy(target(policy.MTLSPermissive, allowGet))
	client, _ := e.client(false)
	for _, path := range []string{"/close", "/"} {
		if code, body, _ := httpGet(t, client, "http://web.agents"+path); code != 200 {
			t.Fatalf("GET %s = %d %q", path, code, body)
		}
	}
	// The stream of those requests holds a slot on the destination.
	if used := e.node.pipe.Limits.Conns.Used.Load(); used < 1 {
		t.Errorf("%d connection slots in use while the stream is open, want it to hold one", used)
	}
	// A policy that admits nothing from the client closes the stream.
	other := l7Rule(&policy.HTTPMatch{Methods: []string{"GET"}}, nil, nil)
	other.From = fromIDs(spiffe.New(td, "agents", "someone-else")).From
	setPolicy(target(policy.MTLSPermissive, agentPolicy("read", policy.ActionAllow, other)))
	waitFor(t, "the stream closed by the policy change", func() bool {
		return testutil.ToFloat64(e.node.rec.M.PolicyClosed.WithLabelValues("agents/read", "no-allow-match")) >= 1
	})
}
