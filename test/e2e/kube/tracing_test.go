package kube

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/test/lab"
)

// TestTracingLab: a call planner -> data-validator -> billing by Service
// names, each hop proxied per request and decided by L7 policy, is one
// trace in Jaeger (built from source, receiving the tunnels' OTLP): the
// source tunnel's client span under the app's own span (its traceparent),
// the destination tunnel's server span under it, then the next hop's
// client span under that server span (the agent passed the context on)
// and its server span, from both nodes' tunnels.
func TestTracingLab(t *testing.T) {
	l := newLab(t, 2, func(o *lab.Options) {
		o.ZtunnelArgs = append(o.ZtunnelArgs, "--http-per-request", "--otlp-endpoint="+lab.JaegerOTLP().String(), "--trace-sampling=0")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := l.StartJaeger(ctx); err != nil {
		t.Fatal(err)
	}
	namespace(ctx, t, l, svcNS, true, "planner", "dv", "billing")
	planner := startPod(ctx, t, l, agentPod(svcNS, "planner", "planner", "n1"), true)
	for _, a := range []struct{ name, sa, app, node string }{{"dv-0", "dv", "dv", "n2"}, {"billing-0", "billing", "billing", "n1"}} {
		p := agentPod(svcNS, a.name, a.sa, a.node)
		p.Labels = map[string]string{"app": a.app}
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: echoPort, Protocol: corev1.ProtocolTCP}}
		startPod(ctx, t, l, p, true)
	}
	createService(ctx, t, l, "data-validator", map[string]string{"app": "dv"}, intstr.FromString("http"))
	createService(ctx, t, l, "billing", map[string]string{"app": "billing"}, intstr.FromString("http"))
	waitEndpoints(ctx, t, l, 1, svcNS+"/data-validator", 1)
	waitEndpoints(ctx, t, l, 2, svcNS+"/billing", 1)
	pol := newPolicies(t, l)
	pol.apply(ctx, svcNS, "chain", `
podSelector: {matchExpressions: [{key: app, operator: In, values: [dv, billing]}]}
action: Allow
rules:
- from: [{serviceAccounts: [planner, dv]}]
  http: {methods: [GET]}
`)
	inner := fmt.Sprintf("http://billing:%d/", echoPort)
	outer := fmt.Sprintf("http://data-validator:%d/call?to=%s", echoPort, neturl.QueryEscape(inner))
	url := "http://127.0.0.1:8080/call?to=" + neturl.QueryEscape(outer)

	var spans []lab.JaegerSpan
	var traceID, appSpan string
	waitFor(t, "the chain's trace in Jaeger with four tunnel spans", func() (bool, string) {
		traceID, appSpan = randHex(16), randHex(8)
		h := http.Header{"Traceparent": {"00-" + traceID + "-" + appSpan + "-01"}}
		code, body, err := planner.HTTPGetWith(ctx, url, h)
		if err != nil || code != 200 || !strings.Contains(string(body), `"agent":"billing-0"`) {
			return false, fmt.Sprintf("chain call: %d %s %v", code, body, err)
		}
		// Spans are batched: wait for this trace's a little.
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			spans, err = l.JaegerTrace(ctx, traceID)
			if err == nil && len(spans) >= 4 {
				return true, ""
			}
			time.Sleep(500 * time.Millisecond)
		}
		return false, fmt.Sprintf("trace %s: %d spans, %v", traceID, len(spans), err)
	})
	byID := map[string]lab.JaegerSpan{}
	for _, s := range spans {
		byID[s.SpanID] = s
		t.Logf("span %s %s kind=%s parent=%s workload=%s", s.SpanID, s.OperationName, s.Tag("span.kind"), s.Parent(), s.Tag("agentmesh.source.workload"))
	}
	// Walk the chain from the app's span.
	want := []struct{ kind, service string }{
		{"client", svcNS + "/data-validator"}, {"server", ""}, {"client", svcNS + "/billing"}, {"server", ""},
	}
	parent := appSpan
	for i, w := range want {
		var next *lab.JaegerSpan
		for _, s := range spans {
			if s.Parent() == parent && s.Tag("span.kind") == w.kind {
				next = &s
				break
			}
		}
		if next == nil {
			t.Fatalf("hop %d: no %s span under %s in trace %s", i, w.kind, parent, traceID)
		}
		if w.service != "" && next.Tag("agentmesh.destination.service") != w.service {
			t.Errorf("hop %d: %s span for service %q, want %s", i, w.kind, next.Tag("agentmesh.destination.service"), w.service)
		}
		if next.Tag("http.response.status_code") != "200" {
			t.Errorf("hop %d: status %q", i, next.Tag("http.response.status_code"))
		}
		parent = next.SpanID
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
