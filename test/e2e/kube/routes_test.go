package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

var (
	httpRouteGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	grpcRouteGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "grpcroutes"}
)

// TestHTTPRouteCanaryLab: an HTTPRoute whose parent is the Service
// data-validator (GAMMA) splits an agent's requests 90/10 between the
// Services data-validator-v1 and -v2: over 10 000 requests the split is
// within ±2 points; requests with the A/B header reach v2 only; the
// weights changed to 50/50 reach every node's tunnel (the time printed)
// and the split follows. The route's status says Accepted and
// ResolvedRefs for the mesh.
func TestHTTPRouteCanaryLab(t *testing.T) {
	l := newLab(t, 2, func(o *lab.Options) { o.ZtunnelArgs = append(o.ZtunnelArgs, "--http-per-request") })
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	namespace(ctx, t, l, svcNS, true, "planner", "dv")
	caller := startPod(ctx, t, l, agentPod(svcNS, "planner", "planner", "n1"), true)
	for _, v := range []struct{ name, version, node string }{{"dv-v1", "v1", "n2"}, {"dv-v2", "v2", "n2"}} {
		p := agentPod(svcNS, v.name, "dv", v.node)
		p.Labels = map[string]string{"app": "dv", "version": v.version}
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: echoPort, Protocol: corev1.ProtocolTCP}}
		startPod(ctx, t, l, p, true)
	}
	createService(ctx, t, l, "data-validator", map[string]string{"app": "dv"}, intstr.FromString("http"))
	createService(ctx, t, l, "data-validator-v1", map[string]string{"app": "dv", "version": "v1"}, intstr.FromString("http"))
	createService(ctx, t, l, "data-validator-v2", map[string]string{"app": "dv", "version": "v2"}, intstr.FromString("http"))
	for svc, n := range map[string]int{"agents/data-validator": 2, "agents/data-validator-v1": 1, "agents/data-validator-v2": 1} {
		waitEndpoints(ctx, t, l, 1, svc, n)
	}

	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		t.Fatal(err)
	}
	route := func(w1, w2 int) {
		t.Helper()
		applyHTTPRoute(ctx, t, dyn, svcNS, "dv-canary", fmt.Sprintf(`
parentRefs: [{group: "", kind: Service, name: data-validator, port: %[1]d}]
rules:
- matches: [{headers: [{name: x-variant, value: b}]}]
  backendRefs: [{name: data-validator-v2, port: %[1]d}]
- backendRefs:
  - {name: data-validator-v1, port: %[1]d, weight: %[2]d}
  - {name: data-validator-v2, port: %[1]d, weight: %[3]d}
`, echoPort, w1, w2))
	}
	route(90, 10)
	waitRouteWeights(ctx, t, l, "90/10")
	waitRouteStatus(ctx, t, dyn, httpRouteGVR, svcNS, "dv-canary")

	to := fmt.Sprintf("http://data-validator:%d/", echoPort)
	split := func(n int, header string) (v1, v2 int) {
		t.Helper()
		for done := 0; done < n; done += 2000 {
			batch := min(2000, n-done)
			u := fmt.Sprintf("http://127.0.0.1:8080/calls?n=%d&to=%s", batch, neturl.QueryEscape(to))
			if header != "" {
				u += "&header=" + neturl.QueryEscape(header)
			}
			code, body, err := caller.HTTPGetWithin(ctx, u, callsTimeout)
			if err != nil || code != 200 {
				t.Fatalf("calls: %d %s %v", code, body, err)
			}
			var res meshlab.CallsResult
			if err := json.Unmarshal(body, &res); err != nil {
				t.Fatalf("calls: %v: %s", err, body)
			}
			if res.Error != "" || res.Status[200] != batch {
				t.Fatalf("calls: %s; want %d answers of 200", body, batch)
			}
			v1 += res.By["dv-v1"]
			v2 += res.By["dv-v2"]
		}
		return v1, v2
	}
	const n = 10000
	v1, v2 := split(n, "")
	share := 100 * float64(v2) / n
	t.Logf("canary 90/10 over %d requests: v1 %d, v2 %d (%.2f %% to v2)", n, v1, v2, share)
	if v1+v2 != n || share < 8 || share > 12 {
		t.Errorf("canary 90/10: v2 got %.2f %% of %d requests (v1 %d, v2 %d), want 10 ± 2 points", share, n, v1, v2)
	}
	if v1, v2 := split(200, "x-variant:b"); v1 != 0 || v2 != 200 {
		t.Errorf("A/B header: v1 %d, v2 %d; want all 200 on v2", v1, v2)
	}

	changed := time.Now()
	route(50, 50)
	took := waitRouteWeights(ctx, t, l, "50/50")
	for node, d := range took {
		t.Logf("TIMING weights 90/10 -> 50/50: in n%d's tunnel after %s", node, d.Sub(changed).Round(time.Millisecond))
	}
	v1, v2 = split(2000, "")
	share = 100 * float64(v2) / 2000
	t.Logf("after the change, 2000 requests: v1 %d, v2 %d (%.1f %% to v2)", v1, v2, share)
	if share < 45 || share > 55 {
		t.Errorf("50/50: v2 got %.1f %%, want 50 ± 5 points", share)
	}
}

// applyHTTPRoute creates or replaces the HTTPRoute ns/name with spec (YAML).
func applyHTTPRoute(ctx context.Context, t *testing.T, dyn dynamic.Interface, ns, name, spec string) {
	t.Helper()
	applySpec(ctx, t, dyn, httpRouteGVR, "gateway.networking.k8s.io/v1", "HTTPRoute", ns, name, spec)
}

// applySpec creates or replaces the object ns/name of resource gvr (of
// apiVersion and kind) with spec (YAML).
func applySpec(ctx context.Context, t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, apiVersion, kind, ns, name, spec string) {
	t.Helper()
	var s map[string]any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatalf("%s %s/%s spec: %v", kind, ns, name, err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "spec": s}}
	u.SetNamespace(ns)
	u.SetName(name)
	res := dyn.Resource(gvr).Namespace(ns)
	cur, err := res.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		u.SetResourceVersion(cur.GetResourceVersion())
		_, err = res.Update(ctx, u, metav1.UpdateOptions{})
	} else {
		_, err = res.Create(ctx, u, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("apply %s %s/%s: %v", kind, ns, name, err)
	}
}

// waitRouteWeights waits until both nodes' tunnels have the route of
// agents/data-validator whose weighted rule splits want ("90/10") and
// returns when each had it.
func waitRouteWeights(ctx context.Context, t *testing.T, l *lab.Lab, want string) map[int]time.Time {
	t.Helper()
	seen := map[int]time.Time{}
	waitFor(t, "both nodes' tunnels route agents/data-validator "+want, func() (bool, string) {
		var state []string
		for _, node := range []int{1, 2} {
			if _, ok := seen[node]; ok {
				continue
			}
			c, err := l.ZtunnelConfig(ctx, node)
			if err != nil {
				return false, err.Error()
			}
			got := ""
			for _, s := range c.Services {
				if s.Key() != "agents/data-validator" {
					continue
				}
				for _, r := range s.Routes {
					if len(r.Backends) == 2 {
						got = fmt.Sprintf("%d/%d", r.Backends[0].Weight, r.Backends[1].Weight)
					}
				}
			}
			if got == want {
				seen[node] = time.Now()
			}
			state = append(state, fmt.Sprintf("n%d: %q", node, got))
		}
		return len(seen) == 2, strings.Join(state, ", ")
	})
	return seen
}

// waitRouteStatus waits until the route ns/name (an HTTPRoute or
// GRPCRoute: gvr) says Accepted and ResolvedRefs for the mesh's
// controller.
func waitRouteStatus(ctx context.Context, t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	waitFor(t, gvr.Resource+" "+ns+"/"+name+" Accepted and ResolvedRefs", func() (bool, string) {
		u, err := dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		parents, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
		for _, p := range parents {
			pm, _ := p.(map[string]any)
			if pm["controllerName"] != "agentmesh.io/mesh" {
				continue
			}
			conds, _, _ := unstructured.NestedSlice(pm, "conditions")
			ok := map[string]bool{}
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				ok[fmt.Sprint(cm["type"])] = cm["status"] == "True"
			}
			return ok["Accepted"] && ok["ResolvedRefs"], fmt.Sprint(conds)
		}
		return false, fmt.Sprintf("no parent status of agentmesh.io/mesh: %v", parents)
	})
}

// TestHTTPRouteRetryLab: one of three replicas fails 30 % of requests
// with 503 before reading the body; round robin (a TrafficPolicy) keeps
// sending it its share, as peak-EWMA would not. With the route's retry
// (codes 503), the agent's GETs and POSTs succeed (>= 99.9 %) and the
// retries stay within the budget (20 % of requests plus 10/s); the
// replicas count every attempt. Without the route's retry, a POST that
// reached the failing replica and failed is not tried again: the replicas
// count exactly the POSTs sent, and the caller sees the failures.
func TestHTTPRouteRetryLab(t *testing.T) {
	tl := newTrafficLab(t, func(i int) []string {
		if i == 0 {
			return []string{"--fail-rate=0.3", "--fail-status=503"}
		}
		return nil
	})
	ctx, l := tl.ctx, tl.l
	tl.policy("loadBalancer: {algorithm: RoundRobin}", func(tp *meshconfig.TrafficPolicy) bool { return tp.LoadBalancer != nil })
	route := func(retry string) {
		t.Helper()
		applyHTTPRoute(ctx, t, tl.dyn, svcNS, "dv-retry", fmt.Sprintf(`
parentRefs: [{group: "", kind: Service, name: data-validator, port: %[1]d}]
rules:
- backendRefs: [{name: data-validator, port: %[1]d}]
%[2]s`, echoPort, retry))
	}
	attempts := func() int64 {
		t.Helper()
		var n int64
		for _, p := range tl.replicas {
			code, body, err := p.HTTPGet(ctx, "http://127.0.0.1:8080/stats")
			if err != nil || code != 200 {
				t.Fatalf("%s /stats: %d %s %v", p.Name, code, body, err)
			}
			var st meshlab.FaultStats
			if err := json.Unmarshal(body, &st); err != nil {
				t.Fatal(err)
			}
			n += st.Requests
		}
		return n
	}
	to := fmt.Sprintf("http://data-validator:%d/", echoPort)
	run := func(method string, n int) meshlab.CallsResult {
		t.Helper()
		u := fmt.Sprintf("http://127.0.0.1:8080/calls?n=%d&method=%s&to=%s", n, method, neturl.QueryEscape(to))
		code, body, err := tl.caller.HTTPGetWithin(ctx, u, callsTimeout)
		if err != nil || code != 200 {
			t.Fatalf("calls: %d %s %v", code, body, err)
		}
		var res meshlab.CallsResult
		if err := json.Unmarshal(body, &res); err != nil || res.Error != "" {
			t.Fatalf("calls: %v: %s", err, body)
		}
		return res
	}
	waitRoute := func(what string, ok func(*meshconfig.Route) bool) {
		t.Helper()
		waitFor(t, what+" in n1's tunnel", func() (bool, string) {
			c, err := l.ZtunnelConfig(ctx, 1)
			if err != nil {
				return false, err.Error()
			}
			for _, s := range c.Services {
				if s.Key() == "agents/data-validator" && len(s.Routes) == 1 && ok(&s.Routes[0]) {
					return true, ""
				}
			}
			return false, "not yet"
		})
	}

	route("  retry: {codes: [503], attempts: 2, backoff: 10ms}")
	waitRoute("the route's retry", func(r *meshconfig.Route) bool { return r.Retry != nil })
	const n = 3000
	before := attempts()
	start := time.Now()
	var ok int
	for _, method := range []string{"GET", "POST"} {
		res := run(method, n/2)
		ok += res.Status[200]
		t.Logf("with the route's retry, %d %ss: %v by %v", n/2, method, res.Status, res.By)
	}
	took := time.Since(start)
	tries := attempts() - before
	series, err := l.ZtunnelSeries(ctx, 1, "agentmesh_traffic_events_total")
	if err != nil {
		t.Fatal(err)
	}
	var retries, exhausted float64
	for s, v := range series {
		switch {
		case strings.Contains(s, `event="retry"`) && strings.Contains(s, `service="agents/data-validator"`):
			retries += v
		case strings.Contains(s, `event="retry_budget_exhausted"`):
			exhausted += v
		}
	}
	budget := 0.2*n + 10*math.Max(10, took.Seconds())
	t.Logf("with retries: %d of %d succeeded (%.2f %%), the replicas got %d tries, the tunnel counted %v retries (budget %.0f over %s), %v refused by the budget",
		ok, n, 100*float64(ok)/n, tries, retries, budget, took.Round(time.Millisecond), exhausted)
	if float64(ok) < 0.999*n {
		t.Errorf("with the route's retry %d of %d requests succeeded, want >= 99.9 %%", ok, n)
	}
	if retries < 100 || float64(tries) != n+retries || retries > budget {
		t.Errorf("the replicas got %d tries for %d requests with %v retries (budget %.0f): want about a tenth retried, requests + retries tries, within the budget", tries, n, retries, budget)
	}

	route("")
	waitRoute("the route without retry", func(r *meshconfig.Route) bool { return r.Retry == nil })
	before = attempts()
	res := run("POST", 1000)
	tries = attempts() - before
	t.Logf("without the route's retry, 1000 POSTs: %v, the replicas got %d tries", res.Status, tries)
	if tries != 1000 || res.Status[503] < 50 || res.Status[200]+res.Status[503] != 1000 {
		t.Errorf("without the route's retry: %v and %d tries for 1000 POSTs; want the failed POSTs (about a tenth) answered 503 and none tried again", res.Status, tries)
	}
}
