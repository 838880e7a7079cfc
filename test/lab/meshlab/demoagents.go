package meshlab

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/test/lab"
)

// The agents part of the demo: agents on the official SDKs speaking A2A
// and MCP by Service name, on a lab of its own whose ztunnels proxy HTTP
// per request and send spans to Jaeger.
const (
	agenticNS  = "agentic"
	agentPortS = "8080"
	// chainCalls are the A2A messages planner sends for the latency
	// figures.
	chainCalls = 40
)

// demoAgent is one pod of the agents part.
type demoAgent struct {
	name, node string
	cmd        []string
}

var demoAgents = []demoAgent{
	{"planner", "n1", []string{"http", "--name", "planner", "--listen", ":" + agentPortS}},
	{"data-validator", "n2", []string{"a2a-server", "--name", "data-validator", "--listen", ":" + agentPortS,
		"--mcp-to", "http://billing:" + agentPortS + MCPPath, "--mcp-tool", "charge"}},
	{"billing", "n1", []string{"mcp-server", "--name", "billing", "--listen", ":" + agentPortS, "--tools", "charge,refund"}},
}

// The policies of the agents part: planner may send data-validator
// messages (and read its card); data-validator may call billing's charge
// tool, nothing else.
var agentPolicies = []struct{ name, app, spec string }{
	{"planner-to-validator", "data-validator", `{"rules": [
		{"from": [{"serviceAccounts": ["planner"]}], "jsonrpc": {"methods": ["message/send"]}},
		{"from": [{"serviceAccounts": ["planner"]}], "http": {"methods": ["GET"], "paths": ["/.well-known/*"]}}]}`},
	{"validator-charges", "billing", `{"rules": [
		{"from": [{"serviceAccounts": ["data-validator"]}], "mcp": {"tools": ["charge"]}}]}`},
}

// runAgentsDemo is the demo's agents part.
func runAgentsDemo(ctx context.Context, f labFlags, w io.Writer) (err error) {
	fmt.Fprintf(w, "\n=== agents speaking A2A and MCP through the mesh, request by request ===\n")
	fmt.Fprintf(w, "starting a second 2-node lab whose ztunnels run --http-per-request and send spans to Jaeger...\n")
	abs, err := filepath.Abs(f.binDir)
	if err != nil {
		return fmt.Errorf("bin dir: %w", err)
	}
	l, err := lab.New(ctx, lab.Options{Nodes: 2, BinDir: abs, Logger: newLogger(f.verbose), CertLifetime: f.certLifetime,
		StartMesh: true, Kube: true, KubeBinDir: f.kubeBinDir,
		ZtunnelArgs: []string{"--http-per-request", "--otlp-endpoint=" + lab.JaegerOTLP().String(), "--trace-sampling=1"}})
	if err != nil {
		return err
	}
	defer func() { err = closeLab(l, w, err) }()
	if err := l.StartJaeger(ctx); err != nil {
		return err
	}
	pods, err := startDemoAgents(ctx, l)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "lab %s: in namespace %s, planner (n1, meshlab's HTTP agent), data-validator (n2, an A2A agent on a2a-go that\n"+
		"calls billing's MCP tool charge for each message), billing (n1, an MCP server on the go-sdk with tools charge and refund);\n"+
		"Services data-validator (appProtocol agentmesh.io/a2a) and billing (agentmesh.io/mcp); Jaeger on the wire network\n\n", l.ID(), agenticNS)
	for _, p := range agentPolicies {
		fmt.Fprintf(w, "AgentPolicy %s/%s on %s: %s\n", agenticNS, p.name, p.app, compactJSON(p.spec))
	}
	if err := applyAgentPolicies(ctx, l); err != nil {
		return err
	}
	validator := pods["data-validator"]
	mcpURL := "http://billing:" + agentPortS + MCPPath
	// The policies are in force once billing's tunnel refuses refund.
	if err := waitFor(ctx, 30*time.Second, "billing's ztunnel refusing tool refund", func() (bool, string) {
		r, err := mcpCalls(ctx, l, validator, mcpURL, "refund")
		return err == nil && len(r) == 1 && !r[0].OK, fmt.Sprint(r, err)
	}); err != nil {
		return err
	}

	// 1. An allowed and a denied MCP tool call, one session.
	fmt.Fprintf(w, "\ndata-validator calls billing by Service name, over MCP (one session): charge, refund, charge\n")
	since := time.Now()
	calls, err := mcpCalls(ctx, l, validator, mcpURL, "charge", "refund", "charge")
	if err != nil {
		return err
	}
	for _, c := range calls {
		if c.OK {
			fmt.Fprintf(w, "  tools/call %-7s allowed: %q\n", c.Tool, c.Text)
		} else {
			fmt.Fprintf(w, "  tools/call %-7s refused: %s\n", c.Tool, c.Error)
		}
	}
	denied, err := lab.WaitLogLine(ctx, l.DaemonLog(1, "ztunnel"), "request denied by policy", func(m lab.LogLine) bool {
		ts, err := time.Parse(time.RFC3339Nano, m.Str("time"))
		return m.Str("mcp_tool") == "refund" && err == nil && !ts.Before(since)
	})
	if err != nil {
		return fmt.Errorf("billing's tunnel's denial line: %w", err)
	}
	fmt.Fprintf(w, "  billing's ztunnel (n1) logged: request denied by policy: %s calling %s %s, policy %s (%s)\n",
		denied.Str("src_identity"), denied.Str("rpc_method"), denied.Str("mcp_tool"), denied.Str("policy"), denied.Str("reason"))

	// 2. The chain, traced.
	traceID, appSpan := randomHex(16), randomHex(8)
	a2aURL := "http://data-validator:" + agentPortS + A2APath
	fmt.Fprintf(w, "\nplanner sends data-validator an A2A message/send by Service name, with its own span's traceparent\n"+
		"(00-%s-%s-01); data-validator calls billing's charge over MCP for it:\n", traceID, appSpan)
	res, err := a2aCalls(ctx, l, pods["planner"], a2aURL, "invoice 42", 1, "00-"+traceID+"-"+appSpan+"-01")
	if err != nil {
		return err
	}
	if len(res) != 1 || !res[0].OK {
		return fmt.Errorf("planner's message/send: %+v", res)
	}
	fmt.Fprintf(w, "  answer: %q\n", res[0].Text)

	// 3. Per-agent latency from the tunnels' metrics (meshctl stat).
	fmt.Fprintf(w, "\nplanner sends %d more messages while meshctl stat reads both tunnels' metrics twice, 10 s apart:\n\n", chainCalls)
	stat, err := statDuring(ctx, l, func() error {
		r, err := a2aCalls(ctx, l, pods["planner"], a2aURL, "invoice", chainCalls, "")
		if err == nil && slices.ContainsFunc(r, func(c A2ACallResult) bool { return !c.OK }) {
			err = fmt.Errorf("a message failed: %+v", r)
		}
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(w, indent(stat))

	// 4. The trace, from Jaeger.
	spans, err := waitTrace(ctx, l, traceID, 4)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nthe trace %s as Jaeger has it (client spans from the caller's ztunnel, server spans from the callee's):\n\n", traceID)
	printTraceTree(w, spans, appSpan)

	// 5. A canary and an ejection.
	return runTrafficDemo(ctx, l, pods, w)
}

// startDemoAgents creates the namespace, one pod per demoAgent and the
// Services, and waits until the mesh has them and the Services route.
func startDemoAgents(ctx context.Context, l *lab.Lab) (map[string]*lab.Pod, error) {
	if _, err := l.CreateNamespace(ctx, agenticNS, map[string]string{dataplaneLabel: "enabled"}); err != nil {
		return nil, err
	}
	for _, a := range demoAgents {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: a.name}}
		if _, err := l.Client().CoreV1().ServiceAccounts(agenticNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("create service account %s/%s: %w", agenticNS, a.name, err)
		}
		port, _ := strconv.Atoi(agentPortS)
		c := corev1.Container{Name: "agent", Image: "meshlab", Command: append([]string{"meshlab", "app"}, a.cmd...),
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}},
				PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: a.name, Namespace: agenticNS, Labels: map[string]string{"app": a.name, "version": "v1"}},
			Spec: corev1.PodSpec{NodeName: a.node, ServiceAccountName: a.name, Containers: []corev1.Container{c}}}
		if _, err := l.CreatePod(ctx, pod); err != nil {
			return nil, err
		}
	}
	pods := map[string]*lab.Pod{}
	for _, a := range demoAgents {
		p, err := l.WaitMeshPod(ctx, agenticNS, a.name, true)
		if err != nil {
			return nil, err
		}
		pods[a.name] = p
	}
	for _, svc := range []struct{ name, proto string }{{"data-validator", "agentmesh.io/a2a"}, {"billing", "agentmesh.io/mcp"}} {
		port, _ := strconv.Atoi(agentPortS)
		if _, err := l.CreateService(ctx, agenticNS, svc.name, map[string]string{"app": svc.name},
			corev1.ServicePort{Name: "http", Port: int32(port), TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP, AppProtocol: &svc.proto}); err != nil {
			return nil, err
		}
		key := agenticNS + "/" + svc.name
		for _, node := range []int{1, 2} {
			if err := waitFor(ctx, 30*time.Second, fmt.Sprintf("n%d's ztunnel routing %s", node, key), func() (bool, string) {
				svcs, err := l.ZtunnelServices(ctx, node, key)
				ok := err == nil && len(svcs) == 1 && len(svcs[0].Endpoints) == 1 && svcs[0].Endpoints[0].Ready
				return ok, fmt.Sprint(svcs, err)
			}); err != nil {
				return nil, err
			}
		}
	}
	return pods, nil
}

func applyAgentPolicies(ctx context.Context, l *lab.Lab) error {
	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	for _, p := range agentPolicies {
		var spec map[string]any
		if err := json.Unmarshal([]byte(p.spec), &spec); err != nil {
			return fmt.Errorf("policy %s: %w", p.name, err)
		}
		spec["podSelector"] = map[string]any{"matchLabels": map[string]any{"app": p.app}}
		spec["action"] = "Allow"
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "agentmesh.io/v1alpha1", "kind": "AgentPolicy",
			"metadata": map[string]any{"name": p.name, "namespace": agenticNS}, "spec": spec}}
		if _, err := dyn.Resource(policyGVR).Namespace(agenticNS).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create policy %s: %w", p.name, err)
		}
	}
	return nil
}

// mcpCalls runs `app mcp-call` in pod p: one session, the tools in order.
func mcpCalls(ctx context.Context, l *lab.Lab, p *lab.Pod, url string, tools ...string) ([]MCPCallResult, error) {
	args := []string{l.Bin("meshlab"), "app", "mcp-call", "--to", url}
	for _, t := range tools {
		args = append(args, "--call", t)
	}
	return RunLines[MCPCallResult](ctx, p, args...)
}

// a2aCalls runs `app a2a-call` in pod p, sending text n times.
func a2aCalls(ctx context.Context, l *lab.Lab, p *lab.Pod, url, text string, n int, traceparent string) ([]A2ACallResult, error) {
	return RunLines[A2ACallResult](ctx, p, l.Bin("meshlab"), "app", "a2a-call", "--to", url, "--send", text,
		"--count", strconv.Itoa(n), "--traceparent", traceparent, "--timeout", "2m")
}

// RunLines runs args in pod p and decodes each output line as a T (the
// sample agents' clients print a JSON line per call).
func RunLines[T any](ctx context.Context, p *lab.Pod, args ...string) ([]T, error) {
	out, err := p.Run(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w: %s", strings.Join(args[1:3], " "), p.Name, err, bytes.TrimSpace(out))
	}
	var res []T
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		var v T
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			return nil, fmt.Errorf("%s: line %q: %w", strings.Join(args[1:3], " "), line, err)
		}
		res = append(res, v)
	}
	return res, nil
}

// statDuring runs meshctl stat --by edge over both nodes' metrics while
// load runs, and returns its table.
func statDuring(ctx context.Context, l *lab.Lab, load func() error) (string, error) {
	args := []string{"stat", "--by", "edge", "-n", agenticNS, "--interval", "10s"}
	for _, n := range []int{1, 2} {
		args = append(args, "--metrics", fmt.Sprintf("%s=http://127.0.0.1:%d/metrics", l.NodeNetnsPath(n), mesh.MetricsPort))
	}
	cmd := exec.CommandContext(ctx, l.Bin("meshctl"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("meshctl stat: %w", err)
	}
	lerr := load()
	werr := cmd.Wait()
	if werr != nil {
		werr = fmt.Errorf("meshctl stat: %w: %s", werr, out.String())
	}
	return strings.TrimRight(out.String(), "\n"), errors.Join(lerr, werr)
}

// waitTrace waits until Jaeger has at least n spans of trace id.
func waitTrace(ctx context.Context, l *lab.Lab, id string, n int) ([]lab.JaegerSpan, error) {
	var spans []lab.JaegerSpan
	err := waitFor(ctx, 30*time.Second, "the trace in Jaeger", func() (bool, string) {
		var err error
		spans, err = l.JaegerTrace(ctx, id)
		return err == nil && len(spans) >= n, fmt.Sprintf("%d spans, %v", len(spans), err)
	})
	return spans, err
}

// printTraceTree prints the spans as a tree under root (the app's own
// span, which Jaeger does not have), children by start time.
func printTraceTree(w io.Writer, spans []lab.JaegerSpan, root string) {
	children := map[string][]lab.JaegerSpan{}
	for _, s := range spans {
		children[s.Parent()] = append(children[s.Parent()], s)
	}
	for _, c := range children {
		slices.SortFunc(c, func(a, b lab.JaegerSpan) int { return cmp.Compare(a.StartTime, b.StartTime) })
	}
	fmt.Fprintf(w, "  planner's own span %s (the app's; not exported)\n", root)
	var walk func(parent, prefix string)
	walk = func(parent, prefix string) {
		c := children[parent]
		for i, s := range c {
			branch, next := "├─ ", "│  "
			if i == len(c)-1 {
				branch, next = "└─ ", "   "
			}
			fmt.Fprintf(w, "  %s%s%s\n", prefix, branch, describeSpan(s))
			walk(s.SpanID, prefix+next)
		}
	}
	walk(root, "")
}

// describeSpan is one line of the tree: kind, who, what, status, time.
func describeSpan(s lab.JaegerSpan) string {
	what := s.OperationName // the method, or the agent call the body named
	if what != s.Tag("http.request.method") {
		what = s.Tag("http.request.method") + " " + what
	}
	node := "caller's ztunnel"
	if s.Tag("span.kind") == "server" {
		node = "callee's ztunnel"
	}
	who := s.Tag("agentmesh.source.workload") + " -> " + cmp.Or(s.Tag("agentmesh.destination.service"), s.Tag("agentmesh.destination.workload"), "?")
	return fmt.Sprintf("%-6s %-16s %-46s %-28s %s  %v", s.Tag("span.kind"), node, who, what,
		s.Tag("http.response.status_code"), (time.Duration(s.Duration) * time.Microsecond).Round(10*time.Microsecond))
}

// waitFor polls cond every 200ms until it holds or limit passes.
func waitFor(ctx context.Context, limit time.Duration, what string, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		ok, last := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %s)", what, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func compactJSON(s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		return s
	}
	return b.String()
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
