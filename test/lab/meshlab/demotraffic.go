package meshlab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/test/lab"
)

// The traffic part of the agents demo: a second version of
// data-validator ships behind an HTTPRoute at 10 %, then 50 %; then,
// with both versions plain replicas under a TrafficPolicy, v2 starts
// failing, is ejected, recovers and gets traffic again.

var (
	demoHTTPRouteGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	demoTrafficGVR   = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "trafficpolicies"}
)

const (
	// canaryCalls are the messages planner sends per canary step.
	canaryCalls = 200
	// dvEjection is the demo's baseEjectionTime.
	dvEjection = 5 * time.Second
)

// runTrafficDemo is the demo's traffic part, on the agents lab.
func runTrafficDemo(ctx context.Context, l *lab.Lab, pods map[string]*lab.Pod, w io.Writer) error {
	fmt.Fprintf(w, "\n=== traffic management: a canary, then an ejection ===\n")
	v2, err := startValidatorV2(ctx, l)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "data-validator-v2 started (n%d, labels app=data-validator, version=v2), beside v1; Services data-validator-v1 and -v2 select one version each\n", v2.Node)
	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	planner := pods["planner"]
	send := func(n int) (split, error) {
		r, err := a2aCalls(ctx, l, planner, "http://data-validator:"+agentPortS+A2APath, "order", n, "")
		return splitOf(r), err
	}

	// 1. The canary: 90/10, then 50/50.
	for i, weights := range [][2]int{{90, 10}, {50, 50}} {
		spec := canaryRoute(weights[0], weights[1])
		if i == 0 {
			fmt.Fprintf(w, "\nHTTPRoute %s/dv-canary (parent: the Service data-validator):\n%s", agenticNS, indent(strings.TrimRight(spec, "\n"))+"\n")
		} else {
			fmt.Fprintf(w, "\nthe route's weights changed to %d/%d\n", weights[0], weights[1])
		}
		changed := time.Now()
		if err := applyDemoObject(ctx, dyn, demoHTTPRouteGVR, "gateway.networking.k8s.io/v1", "HTTPRoute", "dv-canary", spec); err != nil {
			return err
		}
		want := fmt.Sprintf("%d/%d", weights[0], weights[1])
		var took []string
		for _, node := range []int{1, 2} {
			if err := waitFor(ctx, 30*time.Second, fmt.Sprintf("n%d's ztunnel routing data-validator %s", node, want), func() (bool, string) {
				got, err := routeWeights(ctx, l, node)
				return got == want, fmt.Sprint(got, err)
			}); err != nil {
				return err
			}
			took = append(took, fmt.Sprintf("n%d after %s", node, time.Since(changed).Round(time.Millisecond)))
		}
		fmt.Fprintf(w, "  in force in every node's tunnel: %s\n", strings.Join(took, ", "))
		s, err := send(canaryCalls)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  planner sends %d A2A messages to data-validator: v1 answered %d, v2 answered %d (%.1f %%), %d failed\n",
			canaryCalls, s.v1, s.v2, 100*float64(s.v2)/canaryCalls, s.failed)
	}

	// 2. Outlier ejection: both versions plain replicas.
	if err := dyn.Resource(demoHTTPRouteGVR).Namespace(agenticNS).Delete(ctx, "dv-canary", metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete route: %w", err)
	}
	policy := fmt.Sprintf(`targetRefs: [{group: "", kind: Service, name: data-validator}]
loadBalancer: {algorithm: RoundRobin}
outlierDetection: {consecutiveFailures: 3, baseEjectionTime: %s, maxEjectedPercent: 50}
`, dvEjection)
	fmt.Fprintf(w, "\nthe route deleted: v1 and v2 are two replicas of data-validator. TrafficPolicy %s/dv-resilience:\n%s\n", agenticNS, indent(strings.TrimRight(policy, "\n")))
	if err := applyDemoObject(ctx, dyn, demoTrafficGVR, "agentmesh.io/v1alpha1", "TrafficPolicy", "dv-resilience", policy); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "n1's ztunnel with dv-resilience and no route", func() (bool, string) {
		svcs, err := l.ZtunnelServices(ctx, 1, agenticNS+"/data-validator")
		ok := err == nil && len(svcs) == 1 && len(svcs[0].Routes) == 0 && svcs[0].Traffic != nil && svcs[0].Traffic.Name == agenticNS+"/dv-resilience"
		return ok, fmt.Sprint(svcs, err)
	}); err != nil {
		return err
	}
	if code, body, err := v2.HTTPPost(ctx, "http://127.0.0.1:"+agentPortS+"/fault?fail=1&status=503"); err != nil || code != 200 {
		return fmt.Errorf("tell v2 to fail: %d %s %w", code, body, err)
	}
	fmt.Fprintf(w, "data-validator-v2 told to answer every request 503 (POST /fault on its own port)\n")
	start := time.Now()
	s, err := send(20)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  planner sends 20 messages: v1 answered %d, v2 answered %d, %d failed (v2's 503s before it was ejected)\n", s.v1, s.v2, s.failed)
	ejected, err := lab.WaitLogLine(ctx, l.DaemonLog(1, "ztunnel"), "endpoint ejected", func(m lab.LogLine) bool {
		return m.Str("service") == agenticNS+"/data-validator"
	})
	if err != nil {
		return fmt.Errorf("n1's ejection line: %w", err)
	}
	at, _ := time.Parse(time.RFC3339Nano, ejected.Str("time"))
	fmt.Fprintf(w, "  n1's ztunnel logged at t=%.2fs: endpoint ejected: %s of %s (policy %s)\n",
		at.Sub(start).Seconds(), ejected.Str("endpoint"), ejected.Str("service"), ejected.Str("policy"))
	out, err := serviceEndpoints(ctx, l, 1, agenticNS+"/data-validator")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n  meshctl service endpoints %s/data-validator (n1's view):\n%s\n", agenticNS, indent(indent(out)))

	if code, body, err := v2.HTTPPost(ctx, "http://127.0.0.1:"+agentPortS+"/fault?fail=0"); err != nil || code != 200 {
		return fmt.Errorf("heal v2: %d %s %w", code, body, err)
	}
	fmt.Fprintf(w, "\ndata-validator-v2 healed; planner sends a message every 250 ms until v2 answers one\n")
	var back time.Duration
	if err := waitFor(ctx, 30*time.Second, "v2 answering again", func() (bool, string) {
		time.Sleep(250 * time.Millisecond)
		s, err := send(1)
		back = time.Since(at)
		return err == nil && s.v2 == 1, fmt.Sprint(s, err)
	}); err != nil {
		return err
	}
	fmt.Fprintf(w, "  v2 answered again %.1fs after its ejection (baseEjectionTime %s, then one probe request)\n", back.Seconds(), dvEjection)
	s, err = send(20)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  the next 20 messages: v1 answered %d, v2 answered %d, %d failed\n", s.v1, s.v2, s.failed)
	return nil
}

// split counts which version answered A2A calls.
type split struct{ v1, v2, failed int }

func splitOf(r []A2ACallResult) split {
	var s split
	for _, c := range r {
		switch {
		case !c.OK:
			s.failed++
		case strings.HasPrefix(c.Text, "data-validator-v2:"):
			s.v2++
		default:
			s.v1++
		}
	}
	return s
}

// canaryRoute is the HTTPRoute's spec with weights v1/v2.
func canaryRoute(v1, v2 int) string {
	return fmt.Sprintf(`parentRefs: [{group: "", kind: Service, name: data-validator, port: %[1]s}]
rules:
- backendRefs:
  - {name: data-validator-v1, port: %[1]s, weight: %[2]d}
  - {name: data-validator-v2, port: %[1]s, weight: %[3]d}
`, agentPortS, v1, v2)
}

// startValidatorV2 starts the second version of data-validator and the
// Services of each version, and waits until n1's tunnel routes them.
func startValidatorV2(ctx context.Context, l *lab.Lab) (*lab.Pod, error) {
	port, _ := strconv.Atoi(agentPortS)
	c := corev1.Container{Name: "agent", Image: "meshlab", Command: []string{"meshlab", "app", "a2a-server", "--name", "data-validator-v2",
		"--listen", ":" + agentPortS, "--mcp-to", "http://billing:" + agentPortS + MCPPath, "--mcp-tool", "charge"},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}},
			PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "data-validator-v2", Namespace: agenticNS, Labels: map[string]string{"app": "data-validator", "version": "v2"}},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "data-validator", Containers: []corev1.Container{c}}}
	if _, err := l.CreatePod(ctx, pod); err != nil {
		return nil, err
	}
	p, err := l.WaitMeshPod(ctx, agenticNS, pod.Name, true)
	if err != nil {
		return nil, err
	}
	proto := "agentmesh.io/a2a"
	for _, v := range []string{"v1", "v2"} {
		if _, err := l.CreateService(ctx, agenticNS, "data-validator-"+v, map[string]string{"app": "data-validator", "version": v},
			corev1.ServicePort{Name: "http", Port: int32(port), TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP, AppProtocol: &proto}); err != nil {
			return nil, err
		}
	}
	for key, n := range map[string]int{"data-validator": 2, "data-validator-v1": 1, "data-validator-v2": 1} {
		if err := waitFor(ctx, 30*time.Second, "n1's ztunnel routing "+key, func() (bool, string) {
			svcs, err := l.ZtunnelServices(ctx, 1, agenticNS+"/"+key)
			ready := 0
			if err == nil && len(svcs) == 1 {
				for _, e := range svcs[0].Endpoints {
					if e.Ready {
						ready++
					}
				}
			}
			return ready == n, fmt.Sprint(svcs, err)
		}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// applyDemoObject creates or replaces the object name in the agents
// namespace with spec (YAML).
func applyDemoObject(ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, apiVersion, kind, name, spec string) error {
	var s map[string]any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		return fmt.Errorf("%s %s: %w", kind, name, err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "spec": s}}
	u.SetNamespace(agenticNS)
	u.SetName(name)
	rc := dyn.Resource(gvr).Namespace(agenticNS)
	old, err := rc.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		u.SetResourceVersion(old.GetResourceVersion())
		_, err = rc.Update(ctx, u, metav1.UpdateOptions{})
	} else {
		_, err = rc.Create(ctx, u, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("apply %s %s: %w", kind, name, err)
	}
	return nil
}

// routeWeights is "w1/w2" of the two-backend route of data-validator in
// node's tunnel, "" when it has none.
func routeWeights(ctx context.Context, l *lab.Lab, node int) (string, error) {
	svcs, err := l.ZtunnelServices(ctx, node, agenticNS+"/data-validator")
	if err != nil || len(svcs) != 1 {
		return "", err
	}
	for _, r := range svcs[0].Routes {
		if len(r.Backends) == 2 {
			return fmt.Sprintf("%d/%d", r.Backends[0].Weight, r.Backends[1].Weight), nil
		}
	}
	return "", nil
}

// serviceEndpoints runs meshctl service endpoints against node's tunnel.
func serviceEndpoints(ctx context.Context, l *lab.Lab, node int, service string) (string, error) {
	admin := "http://" + netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), mesh.AdminPort).String()
	cmd := exec.CommandContext(ctx, l.Bin("meshctl"), "service", "endpoints", service, "--ztunnel", admin, "--ztunnel-netns", l.NodeNetnsPath(node))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("meshctl service endpoints: %w: %s", err, out.String())
	}
	return strings.TrimRight(out.String(), "\n"), nil
}
