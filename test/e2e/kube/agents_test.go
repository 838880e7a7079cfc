package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
)

// TestAgentProtocolsLab: agents built on the official SDKs call each other
// by Service name through the mesh, and AgentPolicy rules with L7 fields
// decide each call in the destination's tunnel: an MCP client (go-sdk)
// may call tool search but not delete_db (a JSON-RPC error naming no
// internals, logged with the policy) and the same session's next call
// works; an A2A client (a2a-go) may send a message but not cancel a task;
// the agent card may be read with GET but not POSTed to. The
// destination's metrics count the calls per tool, and meshctl requests
// reads the calls back from its ring of recent requests.
func TestAgentProtocolsLab(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	namespace(ctx, t, l, svcNS, true, "planner", "tools", "dv")
	planner := startPod(ctx, t, l, echoPod(svcNS, "planner", "planner", "n1", nil), true)
	agent := func(name, sa, app string, cmd ...string) {
		p := echoPod(svcNS, name, sa, "n2", map[string]string{"app": app})
		p.Spec.Containers[0].Command = append([]string{"meshlab", "app"}, cmd...)
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: echoPort, Protocol: corev1.ProtocolTCP}}
		startPod(ctx, t, l, p, true)
	}
	agent("tools-0", "tools", "tools", "mcp-server", "--name", "tools", "--listen", fmt.Sprintf(":%d", echoPort), "--tools", "search,delete_db")
	agent("dv-0", "dv", "dv", "a2a-server", "--name", "data-validator", "--listen", fmt.Sprintf(":%d", echoPort))
	for name, app := range map[string]string{"tools": "mcp", "data-validator": "a2a"} {
		proto := "agentmesh.io/" + app
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: svcNS},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": map[string]string{"mcp": "tools", "a2a": "dv"}[app]},
				Ports: []corev1.ServicePort{{Name: "http", Port: echoPort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP, AppProtocol: &proto}}}}
		if _, err := l.Client().CoreV1().Services(svcNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitEndpoints(ctx, t, l, 1, svcNS+"/"+name, 1)
	}
	pol := newPolicies(t, l)
	pol.apply(ctx, svcNS, "planner-tools", `
podSelector: {matchLabels: {app: tools}}
action: Allow
rules:
- from: [{serviceAccounts: [planner]}]
  mcp: {tools: [search]}
`)
	pol.apply(ctx, svcNS, "planner-a2a", `
podSelector: {matchLabels: {app: dv}}
action: Allow
rules:
- from: [{serviceAccounts: [planner]}]
  jsonrpc: {methods: [message/send]}
- from: [{serviceAccounts: [planner]}]
  http: {methods: [GET], paths: ["/.well-known/*"]}
`)
	mcpTo := fmt.Sprintf("http://tools:%d%s", echoPort, meshlab.MCPPath)
	mcpCall := func(tools ...string) []meshlab.MCPCallResult {
		t.Helper()
		args := []string{l.Bin("meshlab"), "app", "mcp-call", "--to", mcpTo}
		for _, tool := range tools {
			args = append(args, "--call", tool)
		}
		return runLines[meshlab.MCPCallResult](ctx, t, planner, args...)
	}
	waitFor(t, "delete_db denied by planner-tools", func() (bool, string) {
		r := mcpCall("delete_db")
		return len(r) == 1 && !r[0].OK, fmt.Sprint(r)
	})
	// The two policies reach n2 on their own; wait for planner-a2a too
	// (its HTTP rule: a POST to the agent card is refused).
	card := fmt.Sprintf("http://data-validator:%d/.well-known/agent-card.json", echoPort)
	httpDo := func(method string) []meshlab.HTTPDoResult {
		t.Helper()
		return runLines[meshlab.HTTPDoResult](ctx, t, planner, l.Bin("meshlab"), "app", "http-do", "--method", method, "--url", card, "--body", "{}")
	}
	waitFor(t, "agent card POST denied by planner-a2a", func() (bool, string) {
		h := httpDo("POST")
		return len(h) == 1 && h[0].Status == 403, fmt.Sprint(h)
	})

	// MCP through the mesh: allowed, denied, allowed again, one session.
	before, err := l.ZtunnelSeries(ctx, 2, "agentmesh_requests_total")
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	r := mcpCall("search", "delete_db", "search")
	t.Logf("mcp calls: %+v", r)
	if len(r) != 3 || !r[0].OK || r[0].Text != "tools: search(x)" || r[1].OK || !r[2].OK || r[0].Session != r[2].Session || r[0].Session == "" {
		t.Fatalf("mcp session: %+v; want search answered, delete_db refused, search answered again, in one session", r)
	}
	if !strings.Contains(r[1].Error, "Forbidden") || strings.Contains(r[1].Error, "planner-tools") || strings.Contains(r[1].Error, "agentmesh") {
		t.Errorf("the denied call's error %q: want the JSON-RPC error Forbidden, naming no policy", r[1].Error)
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	line, err := lab.WaitLogLine(wctx, l.DaemonLog(2, "ztunnel"), "request denied by policy", func(m lab.LogLine) bool {
		ts, err := time.Parse(time.RFC3339Nano, m.Str("time"))
		return m.Str("mcp_tool") == "delete_db" && err == nil && !ts.Before(since)
	})
	if err != nil {
		t.Fatalf("n2's request-denied line for delete_db: %v", err)
	}
	if line.Str("policy") != svcNS+"/planner-tools" || line.Str("src_identity") != spiffeID(svcNS, "planner") || line.Str("rpc_method") != "tools/call" {
		t.Errorf("request-denied line: %v", line)
	}

	// A2A: message/send allowed, tasks/cancel denied.
	a := runLines[meshlab.A2ACallResult](ctx, t, planner, l.Bin("meshlab"), "app", "a2a-call",
		"--to", fmt.Sprintf("http://data-validator:%d%s", echoPort, meshlab.A2APath), "--send", "hello", "--cancel", "task-1")
	t.Logf("a2a calls: %+v", a)
	if len(a) != 2 || !a[0].OK || a[0].Text != "data-validator: hello" || a[1].OK || !strings.Contains(a[1].Error, "Forbidden") {
		t.Errorf("a2a calls: %+v; want message/send answered and tasks/cancel refused (Forbidden)", a)
	}
	// HTTP: GET of the agent card allowed, POST to it denied.
	for method, want := range map[string]int{"GET": 200, "POST": 403} {
		h := httpDo(method)
		if len(h) != 1 || h[0].Status != want {
			t.Errorf("%s %s: %+v, want status %d", method, card, h, want)
		}
	}

	checkRecentRequests(ctx, t, l, since)

	// The destination's metrics count exactly the calls the clients made
	// since, by tool and by A2A method.
	after, err := l.ZtunnelSeries(ctx, 2, "agentmesh_requests_total")
	if err != nil {
		t.Fatal(err)
	}
	count := func(series map[string]float64, code, label, value string) float64 {
		var n float64
		for s, v := range series {
			if strings.Contains(s, `reporter="destination"`) && strings.Contains(s, `source_workload="planner"`) &&
				strings.Contains(s, `response_code="`+code+`"`) && strings.Contains(s, label+`="`+value+`"`) {
				n += v
			}
		}
		return n
	}
	for _, w := range []struct {
		code, label, value string
		want               float64
	}{
		{"200", "mcp_tool", "search", 2}, {"403", "mcp_tool", "delete_db", 1},
		{"200", "a2a_method", "message/send", 1}, {"403", "a2a_method", "tasks/cancel", 1},
	} {
		if got := count(after, w.code, w.label, w.value) - count(before, w.code, w.label, w.value); got != w.want {
			t.Errorf("destination agentmesh_requests_total{%s=%q,response_code=%q} grew by %v, want %v (the calls made)", w.label, w.value, w.code, got, w.want)
		}
	}
}

// checkRecentRequests runs meshctl requests against n2's ztunnel (its
// admin API, in n2's netns) for workload planner and expects the
// destination's records, made since, of the denied delete_db call (403)
// and an allowed search call (200); the table names the MCP calls.
func checkRecentRequests(ctx context.Context, t *testing.T, l *lab.Lab, since time.Time) {
	t.Helper()
	admin := l.NodeNetnsPath(2) + "=" + fmt.Sprintf("http://127.0.0.1:%d", mesh.AdminPort)
	meshctl := func(args ...string) string {
		t.Helper()
		args = append([]string{"requests", "--ztunnel", admin, "--workload", svcNS + "/planner"}, args...)
		var stderr strings.Builder
		cmd := exec.CommandContext(ctx, l.Bin("meshctl"), args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("meshctl %v: %v\n%s%s", args, err, out, stderr.String())
		}
		return string(out)
	}
	// The tunnel keeps a request once its response is out: the client
	// may have it a moment earlier.
	waitFor(t, "n2's kept requests: delete_db 403 and search 200 from planner", func() (bool, string) {
		out := meshctl("-o", "json")
		var doc debug.Requests
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("meshctl requests -o json: %v\n%s", err, out)
		}
		var denied, allowed bool
		for _, q := range doc.Requests {
			if q.Time.Before(since) || q.Reporter != "destination" || q.Source.Workload != svcNS+"/planner" || q.MCPMethod != "tools/call" {
				continue
			}
			denied = denied || q.MCPTool == "delete_db" && q.Status == 403
			allowed = allowed || q.MCPTool == "search" && q.Status == 200
		}
		return denied && allowed, out
	})
	out := meshctl()
	t.Logf("meshctl requests:\n%s", out)
	var rows []string
	for line := range strings.SplitSeq(out, "\n") {
		rows = append(rows, strings.Join(strings.Fields(line), " "))
	}
	for _, want := range []string{"POST tools/call delete_db 403", "POST tools/call search 200"} {
		if !slices.ContainsFunc(rows, func(r string) bool { return strings.Contains(r, want) }) {
			t.Errorf("meshctl requests: no row with %q", want)
		}
	}
}

// runLines is meshlab.RunLines, failing t on an error.
func runLines[T any](ctx context.Context, t *testing.T, p *lab.Pod, args ...string) []T {
	t.Helper()
	res, err := meshlab.RunLines[T](ctx, p, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}
