package kube

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	neturl "net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// TestHTTPPerRequestLab: with ztunnel's --http-per-request, 30 GETs an
// agent sends over one keep-alive connection to a Service by name are
// balanced request by request over its three replicas (two on the other
// node over mTLS, one on the caller's node over the same-node fast path,
// kept-alive upstreams included), each with a request line
// naming its endpoint and both identities, counted in
// agentmesh_requests_total, and the connection's access line counts 30
// requests.
func TestHTTPPerRequestLab(t *testing.T) {
	l := newLab(t, 2, func(o *lab.Options) { o.ZtunnelArgs = append(o.ZtunnelArgs, "--http-per-request") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	namespace(ctx, t, l, svcNS, true, "planner", "dv")
	caller := startPod(ctx, t, l, agentPod(svcNS, "planner", "planner", "n1"), true)
	for i, node := range []string{"n2", "n2", "n1"} {
		p := agentPod(svcNS, fmt.Sprintf("dv-%d", i), "dv", node)
		p.Labels = map[string]string{"app": "dv"}
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: echoPort, Protocol: corev1.ProtocolTCP}}
		startPod(ctx, t, l, p, true)
	}
	createService(ctx, t, l, "data-validator", map[string]string{"app": "dv"}, intstr.FromString("http"))
	waitEndpoints(ctx, t, l, 1, "agents/data-validator", 3)

	const n = 30
	since := time.Now()
	to := fmt.Sprintf("http://data-validator:%d/", echoPort)
	code, body, err := caller.HTTPGet(ctx, "http://127.0.0.1:8080/calls?n=30&to="+neturl.QueryEscape(to))
	if err != nil || code != 200 {
		t.Fatalf("calls: %d %s %v", code, body, err)
	}
	var res meshlab.CallsResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("calls: %v: %s", err, body)
	}
	t.Logf("%d calls on %d connection(s): answered by %v, status %v", n, res.Connections, res.By, res.Status)
	if res.Error != "" || res.Status[200] != n || res.Connections != 1 {
		t.Fatalf("calls: %s; want %d answers of 200 on one connection", body, n)
	}
	if len(res.By) != 3 {
		t.Errorf("one connection's requests answered by %v, want all three replicas (balanced per request)", res.By)
	}
	checkLatencyBracket(ctx, t, l, res)

	// The request lines on the caller's node.
	var lines []map[string]any
	waitFor(t, "30 request lines on n1", func() (bool, string) {
		lines = requestLines(t, l, 1, since)
		return len(lines) >= n, fmt.Sprintf("%d lines", len(lines))
	})
	by := map[string]int{}
	for _, r := range lines {
		if r["dst_service"] != "agents/data-validator" || r["src_identity"] != spiffeID(svcNS, "planner") ||
			r["dst_identity"] != spiffeID(svcNS, "dv") || r["status"] != float64(200) || r["method"] != "GET" || r["app_protocol"] != "http1" {
			t.Errorf("request line: %v", r)
		}
		by[fmt.Sprint(r["dst_workload"], " ", r["protocol"])]++
	}
	t.Logf("request lines by destination and protocol: %v", by)
	if by["agents/dv-2 local"] == 0 || by["agents/dv-2 hbone"] != 0 || by["agents/dv-0 hbone"]+by["agents/dv-1 hbone"] == 0 {
		t.Errorf("request lines %v: want the same-node replica over the local path and the others over HBONE", by)
	}
	series, err := l.ZtunnelSeries(ctx, 1, "agentmesh_requests_total")
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for s, v := range series {
		if strings.Contains(s, `destination_service="agents/data-validator"`) && strings.Contains(s, `response_code="200"`) &&
			strings.Contains(s, `reporter="source"`) && strings.Contains(s, `source_workload="planner"`) {
			total += v
		}
	}
	if total != n {
		t.Errorf("agentmesh_requests_total from planner to agents/data-validator, 200: %v, want %d\n%v", total, n, series)
	}
	a, err := l.WaitAccessLog(ctx, 1, func(a lab.AccessLog) bool {
		return a.Direction == "outbound" && a.DstService == "agents/data-validator" && !a.Time.Before(since) && a.Result == "ok"
	})
	if err != nil {
		t.Fatalf("the connection's access line: %v", err)
	}
	if a.AppProtocol != "http1" {
		t.Errorf("access line app_protocol %q, want http1", a.AppProtocol)
	}

	checkStatRequests(ctx, t, l, caller, to)

	// An AgentPolicy whose rule names HTTP methods and paths: each
	// request is decided by the replica's node; a denied one gets 403 and
	// the connection goes on.
	pol := newPolicies(t, l)
	pol.apply(ctx, svcNS, "planner-reads", `
podSelector: {matchLabels: {app: dv}}
action: Allow
rules:
- from: [{serviceAccounts: [planner]}]
  http: {methods: [GET], paths: ["/"]}
`)
	calls := func(path string) meshlab.CallsResult {
		t.Helper()
		to := fmt.Sprintf("http://data-validator:%d%s", echoPort, path)
		code, body, err := caller.HTTPGet(ctx, "http://127.0.0.1:8080/calls?n=6&to="+neturl.QueryEscape(to))
		var res meshlab.CallsResult
		if err != nil || code != 200 || json.Unmarshal(body, &res) != nil {
			t.Fatalf("calls %s: %d %s %v", path, code, body, err)
		}
		return res
	}
	waitFor(t, "GET /nope denied by planner-reads", func() (bool, string) {
		res := calls("/nope")
		return res.Status[403] == 6, fmt.Sprint(res.Status)
	})
	if st, reason := pol.accepted(ctx, svcNS, "planner-reads"); st != "True" || reason != "Accepted" {
		t.Errorf("planner-reads Accepted = %s/%s, want True/Accepted", st, reason)
	}
	if res := calls("/"); res.Status[200] != 6 || res.Connections != 1 {
		t.Errorf("GET / under planner-reads: %+v, want 6 answers of 200 on one connection", res)
	}
	res = calls("/nope")
	if res.Status[403] != 6 || res.Connections != 1 {
		t.Errorf("GET /nope under planner-reads: %+v, want 6 refusals (403) on one connection", res)
	}
	var denied int
	for node := 1; node <= 2; node++ {
		f, err := os.ReadFile(l.DaemonLog(node, "ztunnel"))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(f), "\n") {
			if strings.Contains(line, `"msg":"request denied by policy"`) && strings.Contains(line, `"path":"/nope"`) &&
				strings.Contains(line, `"src_identity":"`+spiffeID(svcNS, "planner")+`"`) && strings.Contains(line, `"policy":"agents/planner-reads"`) {
				denied++
			}
		}
	}
	if denied < 6 {
		t.Errorf("%d request-denied lines for GET /nope naming planner and agents/planner-reads, want at least 6", denied)
	}
}

// requestLines are node's ztunnel "request" lines since.
func requestLines(t *testing.T, l *lab.Lab, node int, since time.Time) []map[string]any {
	t.Helper()
	f, err := os.Open(l.DaemonLog(node, "ztunnel"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil || m["msg"] != "request" {
			continue
		}
		if ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"])); err != nil || ts.Before(since) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// checkStatRequests runs meshctl stat --by edge against the caller's node
// while the caller sends requests to url, and expects the edge planner ->
// data-validator with a request rate, full success and percentiles.
func checkStatRequests(ctx context.Context, t *testing.T, l *lab.Lab, caller *lab.Pod, url string) {
	t.Helper()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		args := []string{"stat", "--by", "edge", "--interval", "2s", "-o", "json",
			"--metrics", l.NodeNetnsPath(1) + "=" + fmt.Sprintf("http://127.0.0.1:%d/metrics", mesh.MetricsPort)}
		out, err := exec.CommandContext(ctx, l.Bin("meshctl"), args...).CombinedOutput()
		done <- result{out, err}
	}()
	var res result
	for sent := false; ; {
		select {
		case res = <-done:
		default:
			// Requests until meshctl has read twice.
			code, body, err := caller.HTTPGet(ctx, "http://127.0.0.1:8080/calls?n=5&to="+neturl.QueryEscape(url))
			if err != nil || code != 200 {
				t.Fatalf("calls: %d %s %v", code, body, err)
			}
			sent = true
			continue
		}
		if !sent {
			t.Fatalf("meshctl stat ended before any request was sent: %s", res.out)
		}
		break
	}
	if res.err != nil {
		t.Fatalf("meshctl stat: %v\n%s", res.err, res.out)
	}
	var rows []struct {
		From, To string
		Requests *struct {
			PerSecond, SuccessRate, P50Ms, P99Ms float64
		}
	}
	if err := json.Unmarshal(res.out, &rows); err != nil {
		t.Fatalf("meshctl stat -o json: %v\n%s", err, res.out)
	}
	for _, r := range rows {
		if r.From == svcNS+"/planner" && strings.HasPrefix(r.To, svcNS+"/dv-") {
			if q := r.Requests; q != nil && q.PerSecond > 0 && q.SuccessRate == 1 && q.P50Ms > 0 && q.P99Ms >= q.P50Ms {
				t.Logf("meshctl stat: %s -> %s %.1f req/s, p50 %.2f ms, p99 %.2f ms", r.From, r.To, q.PerSecond, q.P50Ms, q.P99Ms)
				return
			}
		}
	}
	t.Errorf("meshctl stat --by edge: no planner -> dv row with requests, full success and percentiles:\n%s", res.out)
}

// checkLatencyBracket: the source tunnel's duration histogram holds the
// calls the client made, each no longer than the client measured it (the
// tunnel's interval lies inside the client's): every one is at or below
// the first bucket bound above the client's slowest call.
func checkLatencyBracket(ctx context.Context, t *testing.T, l *lab.Lab, res meshlab.CallsResult) {
	t.Helper()
	series, err := l.ZtunnelSeries(ctx, 1, "agentmesh_request_duration_seconds_bucket")
	if err != nil {
		t.Fatal(err)
	}
	cum := map[float64]float64{} // le -> cumulative count over the planner's series
	for s, v := range series {
		if !strings.Contains(s, `reporter="source"`) || !strings.Contains(s, `source_workload="planner"`) {
			continue
		}
		_, rest, ok := strings.Cut(s, `le="`)
		le, _, _ := strings.Cut(rest, `"`)
		b, err := strconv.ParseFloat(le, 64)
		if !ok || err != nil {
			continue
		}
		cum[b] += v
	}
	total := cum[math.Inf(1)]
	upper := math.Inf(1)
	for le := range cum {
		if le >= res.MaxMS/1000 && le < upper {
			upper = le
		}
	}
	t.Logf("client: %d calls, %.2f..%.2f ms; tunnel histogram: %v requests, %v at or below %v s", res.Status[200], res.MinMS, res.MaxMS, total, cum[upper], upper)
	if total != float64(res.Status[200]) || cum[upper] != total {
		t.Errorf("source histogram: %v requests, %v at or below %v s (the client's slowest call %.2f ms); want the %d calls, all bracketed",
			total, cum[upper], upper, res.MaxMS, res.Status[200])
	}
}
