package kube

import (
	"context"
	"encoding/json"
	"fmt"
	neturl "net/url"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

var trafficPolicyGVR = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "trafficpolicies"}

// trafficLab is a lab with the planner on n1 and three replicas of
// data-validator (two on n2, one on n1), extra args for replica i's agent
// from args.
type trafficLab struct {
	t        *testing.T
	l        *lab.Lab
	ctx      context.Context
	dyn      dynamic.Interface
	caller   *lab.Pod
	replicas []*lab.Pod
}

func newTrafficLab(t *testing.T, args func(i int) []string) *trafficLab {
	l := newLab(t, 2, func(o *lab.Options) { o.ZtunnelArgs = append(o.ZtunnelArgs, "--http-per-request") })
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	namespace(ctx, t, l, svcNS, true, "planner", "dv")
	tl := &trafficLab{t: t, l: l, ctx: ctx}
	tl.caller = startPod(ctx, t, l, agentPod(svcNS, "planner", "planner", "n1"), true)
	for i, node := range []string{"n2", "n2", "n1"} {
		p := agentPod(svcNS, fmt.Sprintf("dv-%d", i), "dv", node)
		if args != nil {
			p.Spec.Containers[0].Command = append(p.Spec.Containers[0].Command, args(i)...)
		}
		p.Labels = map[string]string{"app": "dv"}
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: echoPort, Protocol: corev1.ProtocolTCP}}
		tl.replicas = append(tl.replicas, startPod(ctx, t, l, p, true))
	}
	createService(ctx, t, l, "data-validator", map[string]string{"app": "dv"}, intstr.FromString("http"))
	waitEndpoints(ctx, t, l, 1, "agents/data-validator", 3)
	var err error
	if tl.dyn, err = dynamic.NewForConfig(l.RestConfig()); err != nil {
		t.Fatal(err)
	}
	return tl
}

// policy applies the TrafficPolicy dv-traffic targeting data-validator
// with spec sections (YAML), and waits until n1's tunnel has it (check
// says so) and its status says Accepted.
func (tl *trafficLab) policy(sections string, check func(*meshconfig.TrafficPolicy) bool) {
	t := tl.t
	t.Helper()
	applySpec(tl.ctx, t, tl.dyn, trafficPolicyGVR, "agentmesh.io/v1alpha1", "TrafficPolicy", svcNS, "dv-traffic",
		"targetRefs: [{group: \"\", kind: Service, name: data-validator}]\n"+sections)
	res := tl.dyn.Resource(trafficPolicyGVR).Namespace(svcNS)
	waitFor(t, "n1's tunnel has the traffic policy", func() (bool, string) {
		c, err := tl.l.ZtunnelConfig(tl.ctx, 1)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range c.Services {
			if s.Key() == "agents/data-validator" {
				return s.Traffic != nil && check(s.Traffic), fmt.Sprintf("%+v", s.Traffic)
			}
		}
		return false, "no service"
	})
	waitFor(t, "the traffic policy Accepted", func() (bool, string) {
		u, err := res.Get(tl.ctx, "dv-traffic", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			cm, _ := c.(map[string]any)
			if cm["type"] == "Accepted" {
				return cm["status"] == "True", fmt.Sprint(cm)
			}
		}
		return false, "no Accepted condition"
	})
}

// calls makes the planner send n requests to data-validator on one
// keep-alive connection, with header (Name:value) when set.
func (tl *trafficLab) calls(n int, header string) meshlab.CallsResult {
	t := tl.t
	t.Helper()
	u := fmt.Sprintf("http://127.0.0.1:8080/calls?n=%d&to=%s", n, neturl.QueryEscape(fmt.Sprintf("http://data-validator:%d/", echoPort)))
	if header != "" {
		u += "&header=" + neturl.QueryEscape(header)
	}
	// The agent bounds the n calls at 60s; 10s (HTTPGet's bound) was
	// too short for 600 of them on a machine loaded by other test packages.
	code, body, err := tl.caller.HTTPGetWithin(tl.ctx, u, callsTimeout)
	if err != nil || code != 200 {
		t.Fatalf("calls: %d %s %v", code, body, err)
	}
	var res meshlab.CallsResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("calls: %v: %s", err, body)
	}
	return res
}

// callsTimeout bounds a GET of an agent's /calls?n=N, which bounds the
// calls itself at 60s.
const callsTimeout = 75 * time.Second

// TestTrafficPolicyAffinityLab: 1000 requests carrying one Mcp-Session-Id
// land on one replica; when that replica dies they move to another and
// stay there.
func TestTrafficPolicyAffinityLab(t *testing.T) {
	tl := newTrafficLab(t, nil)
	tl.policy("sessionAffinity: {key: {header: Mcp-Session-Id}}", func(tp *meshconfig.TrafficPolicy) bool { return tp.Affinity != nil })
	res := tl.calls(1000, "Mcp-Session-Id:conversation-7")
	t.Logf("1000 requests of one session: %v", res.By)
	if len(res.By) != 1 || res.Status[200] != 1000 {
		t.Fatalf("one session's 1000 requests answered by %v (status %v), want one replica", res.By, res.Status)
	}
	var pinned string
	for name := range res.By {
		pinned = name
	}
	if err := tl.l.Client().CoreV1().Pods(svcNS).Delete(tl.ctx, pinned, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(tl.ctx, t, tl.l, 1, "agents/data-validator", 2)
	moved := tl.calls(300, "Mcp-Session-Id:conversation-7")
	again := tl.calls(300, "Mcp-Session-Id:conversation-7")
	t.Logf("after %s died: %v, then %v", pinned, moved.By, again.By)
	if len(moved.By) != 1 || moved.By[pinned] != 0 || moved.Status[200] != 300 {
		t.Fatalf("after the pinned replica died the session went to %v (status %v), want one other replica", moved.By, moved.Status)
	}
	for name := range moved.By {
		if again.By[name] != 300 {
			t.Errorf("the session moved to %s, then went to %v", name, again.By)
		}
	}
}

// TestTrafficPolicyBalancingLab: with one of three replicas 20x slower,
// peak-EWMA (the default) sends it few requests and keeps p99 low; round
// robin sends it a third and p99 is the slow replica's. Both printed.
func TestTrafficPolicyBalancingLab(t *testing.T) {
	tl := newTrafficLab(t, func(i int) []string {
		if i == 0 {
			return []string{"--delay=40ms"}
		}
		return []string{"--delay=2ms"}
	})
	const n = 600
	ewma := tl.calls(n, "")
	tl.policy("loadBalancer: {algorithm: RoundRobin}", func(tp *meshconfig.TrafficPolicy) bool {
		return tp.LoadBalancer != nil && tp.LoadBalancer.Algorithm == meshconfig.LBRoundRobin
	})
	rr := tl.calls(n, "")
	t.Logf("one replica 20x slower (40ms vs 2ms), %d requests each: peak-EWMA p50 %.1fms p99 %.1fms, slow replica got %d; round robin p50 %.1fms p99 %.1fms, slow replica got %d; p99 ratio x%.1f",
		n, ewma.P50MS, ewma.P99MS, ewma.By["dv-0"], rr.P50MS, rr.P99MS, rr.By["dv-0"], rr.P99MS/ewma.P99MS)
	if ewma.Status[200] != n || rr.Status[200] != n {
		t.Fatalf("status: peak-EWMA %v, round robin %v", ewma.Status, rr.Status)
	}
	if rr.By["dv-0"] != n/3 {
		t.Errorf("round robin gave the slow replica %d of %d, want a third", rr.By["dv-0"], n)
	}
	if ewma.By["dv-0"] > n/10 {
		t.Errorf("peak-EWMA gave the slow replica %d of %d, want few", ewma.By["dv-0"], n)
	}
}

// TestTrafficPolicyEjectionLab: a replica that answers 503 to everything
// is ejected after 3 consecutive failures, gets no request while ejected,
// and gets traffic again after its ejection time once it recovered (the
// timeline printed).
func TestTrafficPolicyEjectionLab(t *testing.T) {
	tl := newTrafficLab(t, nil)
	tl.policy(`loadBalancer: {algorithm: RoundRobin}
outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 2s, maxEjectedPercent: 50}`, func(tp *meshconfig.TrafficPolicy) bool { return tp.Outlier != nil })
	bad := tl.replicas[0]
	fault := func(q string) {
		t.Helper()
		if code, body, err := bad.HTTPPost(tl.ctx, "http://127.0.0.1:8080/fault?"+q); err != nil || code != 200 {
			t.Fatalf("POST /fault?%s: %d %s %v", q, code, body, err)
		}
	}
	start := time.Now()
	fault("fail=1")
	res := tl.calls(60, "")
	ejectedAt := time.Since(start)
	t.Logf("t=%s: %s fails everything; 60 requests: %v by %v", ejectedAt.Round(time.Millisecond), bad.Name, res.Status, res.By)
	if res.Status[503] != 3 {
		t.Errorf("the failing replica answered %d requests before its ejection, want 3", res.Status[503])
	}
	if during := tl.calls(60, ""); during.Status[200] != 60 || during.By[bad.Name] != 0 {
		t.Errorf("while ejected: %v by %v, want all answered by the others", during.Status, during.By)
	}
	fault("fail=0")
	recovered := time.Since(start)
	t.Logf("t=%s: %s recovered", recovered.Round(time.Millisecond), bad.Name)
	waitFor(t, bad.Name+" gets traffic again", func() (bool, string) {
		r := tl.calls(30, "")
		return r.By[bad.Name] > 0, fmt.Sprintf("%v", r.By)
	})
	t.Logf("t=%s: %s gets traffic again (ejection time 2s)", time.Since(start).Round(time.Millisecond), bad.Name)
	series, err := tl.l.ZtunnelSeries(tl.ctx, 1, "agentmesh_traffic_events_total")
	if err != nil {
		t.Fatal(err)
	}
	ejections := 0.0
	for s, v := range series {
		if strings.Contains(s, `event="ejection"`) && strings.Contains(s, `service="agents/data-validator"`) {
			ejections += v
		}
	}
	if ejections < 1 {
		t.Errorf("agentmesh_traffic_events_total ejection = %v, want at least 1", ejections)
	}
}

// TestTrafficPolicyLimitsLab: the breaker answers requests over its limit
// with a fast 503 naming it while admitted ones complete; a rate limit per
// source identity (a bucket per endpoint and caller, in the endpoint's
// tunnel) answers the limited caller 429, and another caller of the same
// agent is unaffected.
func TestTrafficPolicyLimitsLab(t *testing.T) {
	tl := newTrafficLab(t, func(int) []string { return []string{"--delay=1s"} })
	tl.policy("circuitBreaker: {maxRequests: 2}", func(tp *meshconfig.TrafficPolicy) bool { return tp.Breaker != nil })
	// Three callers at once: two are admitted (and wait the replicas'
	// second), the third gets a fast 503.
	type answer struct {
		code   int
		reason string
		took   time.Duration
	}
	answers := make(chan answer, 3)
	for range 3 {
		go func() {
			start := time.Now()
			u := fmt.Sprintf("http://127.0.0.1:8080/call?to=%s", neturl.QueryEscape(fmt.Sprintf("http://data-validator:%d/", echoPort)))
			_, body, err := tl.caller.HTTPGet(tl.ctx, u)
			var res meshlab.CallResult
			if err == nil {
				err = json.Unmarshal(body, &res)
			}
			if err != nil {
				res.Error = err.Error()
			}
			answers <- answer{res.Status, res.Error, time.Since(start)}
		}()
	}
	var ok, overflow int
	for range 3 {
		a := <-answers
		t.Logf("breaker: %d %q after %s", a.code, a.reason, a.took.Round(time.Millisecond))
		switch {
		case a.code == 200:
			ok++
		case a.code == 503 && strings.Contains(a.reason, "overflow_max_requests"):
			overflow++
		}
	}
	if ok != 2 || overflow != 1 {
		t.Errorf("three requests at once with maxRequests 2: %d answered, %d overflowed; want 2 and 1", ok, overflow)
	}

	// The buckets are per endpoint and source: one replica left, fast
	// again, so that the calls below meet one bucket within its second.
	for _, p := range tl.replicas[:2] {
		if err := tl.l.Client().CoreV1().Pods(svcNS).Delete(tl.ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitEndpoints(tl.ctx, t, tl.l, 1, "agents/data-validator", 1)
	if code, body, err := tl.replicas[2].HTTPPost(tl.ctx, "http://127.0.0.1:8080/fault?delay=0s"); err != nil || code != 200 {
		t.Fatalf("POST /fault: %d %s %v", code, body, err)
	}
	tl.policy("rateLimit: {perSource: {requestsPerSecond: 1, burst: 2}}", func(tp *meshconfig.TrafficPolicy) bool { return tp.RateLimit != nil })
	res := tl.calls(4, "")
	t.Logf("rate limit 1/s burst 2, 4 requests from the planner: %v", res.Status)
	if res.Status[200] != 2 || res.Status[429] != 2 {
		t.Errorf("the limited caller: %v, want 2 answered and 2 refused with 429", res.Status)
	}
	other := startPod(tl.ctx, t, tl.l, agentPod(svcNS, "other", "dv", "n2"), true)
	u := fmt.Sprintf("http://127.0.0.1:8080/calls?n=2&to=%s", neturl.QueryEscape(fmt.Sprintf("http://data-validator:%d/", echoPort)))
	code, body, err := other.HTTPGet(tl.ctx, u)
	var ores meshlab.CallsResult
	if err == nil && code == 200 {
		err = json.Unmarshal(body, &ores)
	}
	if err != nil || ores.Status[200] != 2 {
		t.Errorf("another caller of the same agent: %d %s %v, want both answered", code, body, err)
	}
}

// TestTrafficPolicyTimeoutsLab: with a first-byte timeout of 2s and no
// other, a server-sent event stream of three minutes with 10 s between
// events is not cut (the mesh has no idle or total timeout by default);
// a replica that hangs gets the caller 504 first_byte_timeout at about
// 2 s (printed). SSE_DURATION shortens the stream for a quick local run.
func TestTrafficPolicyTimeoutsLab(t *testing.T) {
	total := 3 * time.Minute
	if v := os.Getenv("SSE_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SSE_DURATION %q: %v", v, err)
		}
		total = d
	}
	const every = 10 * time.Second
	n := int(total/every) + 1
	tl := newTrafficLab(t, nil)
	tl.policy("timeouts: {firstByte: 2s}", func(tp *meshconfig.TrafficPolicy) bool {
		return tp.Timeouts != nil && tp.Timeouts.FirstByte == 2*time.Second
	})
	ctx, cancel := context.WithTimeout(tl.ctx, total+2*time.Minute)
	defer cancel()
	start := time.Now()
	evs := runLines[meshlab.SSEEvent](ctx, t, tl.caller, tl.l.Bin("meshlab"), "app", "sse-get",
		"--url", fmt.Sprintf("http://data-validator:%d/sse?n=%d&every=%s", echoPort, n, every))
	took := time.Since(start)
	for i, ev := range evs {
		if ev.Error != "" {
			t.Fatalf("event stream broke after %d events (%s): %s", i, took.Round(time.Second), ev.Error)
		}
	}
	t.Logf("%d events %s apart over %s, under a first-byte timeout of 2s", len(evs), every, took.Round(time.Millisecond))
	if len(evs) != n {
		t.Errorf("%d events arrived, want %d", len(evs), n)
	}

	for _, p := range tl.replicas {
		if code, body, err := p.HTTPPost(tl.ctx, "http://127.0.0.1:8080/fault?hang=1"); err != nil || code != 200 {
			t.Fatalf("%s POST /fault: %d %s %v", p.Name, code, body, err)
		}
	}
	start = time.Now()
	u := fmt.Sprintf("http://127.0.0.1:8080/call?to=%s", neturl.QueryEscape(fmt.Sprintf("http://data-validator:%d/", echoPort)))
	_, body, err := tl.caller.HTTPGet(tl.ctx, u)
	took = time.Since(start)
	var res meshlab.CallResult
	if err == nil {
		err = json.Unmarshal(body, &res)
	}
	t.Logf("a hung replica: %d %q after %s", res.Status, res.Error, took.Round(time.Millisecond))
	if err != nil || res.Status != 504 || !strings.Contains(res.Error, "first_byte_timeout") {
		t.Errorf("a hung replica: %d %q (%v), want 504 first_byte_timeout", res.Status, res.Error, err)
	}
}
