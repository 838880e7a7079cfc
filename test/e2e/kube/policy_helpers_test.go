package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/test/lab"
)

var policyGVR = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "agentpolicies"}

// policies is the AgentPolicy API of a lab.
type policies struct {
	t   *testing.T
	dyn dynamic.Interface
}

func newPolicies(t *testing.T, l *lab.Lab) *policies {
	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &policies{t: t, dyn: dyn}
}

// apply creates or replaces the AgentPolicy ns/name with spec (YAML).
func (p *policies) apply(ctx context.Context, ns, name, spec string) {
	p.t.Helper()
	applySpec(ctx, p.t, p.dyn, policyGVR, "agentmesh.io/v1alpha1", "AgentPolicy", ns, name, spec)
}

func (p *policies) delete(ctx context.Context, ns, name string) {
	p.t.Helper()
	if err := p.dyn.Resource(policyGVR).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		p.t.Fatalf("delete policy %s/%s: %v", ns, name, err)
	}
}

// accepted waits for the policy's Accepted condition and returns its
// status and reason.
func (p *policies) accepted(ctx context.Context, ns, name string) (status, reason string) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		u, err := p.dyn.Resource(policyGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			p.t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Accepted" && m["observedGeneration"] == u.GetGeneration() {
				return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"])
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("policy %s/%s: no Accepted condition for generation %d: %v", ns, name, u.GetGeneration(), conds)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// annotateNamespace sets (value != "") or removes an annotation.
func annotateNamespace(ctx context.Context, t *testing.T, l *lab.Lab, ns, key, value string) {
	t.Helper()
	v := "null"
	if value != "" {
		v = strconv.Quote(value)
	}
	patch := fmt.Sprintf(`{"metadata": {"annotations": {%q: %s}}}`, key, v)
	if _, err := l.Client().CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("annotate namespace %s: %v", ns, err)
	}
}

// portsPod is an echo pod listening on several ports.
func portsPod(ns, name, sa, node string, labels map[string]string, ports ...int) *corev1.Pod {
	pod := echoPod(ns, name, sa, node, labels)
	var listen []string
	for _, p := range ports {
		listen = append(listen, ":"+strconv.Itoa(p))
	}
	pod.Spec.Containers[0].Command = []string{"meshlab", "app", "echo", "--listen", strings.Join(listen, ",")}
	return pod
}

// sendTo is send to any port: nil when the echo came back.
func sendTo(ctx context.Context, l *lab.Lab, p *lab.Pod, to netip.AddrPort) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := p.Run(sctx, l.Bin("meshlab"), "app", "send", "--to", to.String(), "--payload", "policy-"+p.Name, "--timeout", "3s")
	if err != nil {
		return fmt.Errorf("%s -> %s: %w (%s)", p.Name, to, err, strings.TrimSpace(string(out)))
	}
	var res struct {
		EchoOK bool `json:"echo_ok"`
	}
	if err := json.Unmarshal(out, &res); err != nil || !res.EchoOK {
		return fmt.Errorf("%s -> %s: no echo: %s (%v)", p.Name, to, out, err)
	}
	return nil
}

// until retries sendTo until its outcome is want (true: the echo came
// back) and returns how long that took; it fails the test after 30s.
func until(ctx context.Context, t *testing.T, l *lab.Lab, p *lab.Pod, to netip.AddrPort, want bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := sendTo(ctx, l, p, to)
		if (err == nil) == want {
			return time.Since(start)
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%s -> %s: still %v after 30s, want allowed=%v", p.Name, to, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// denyLine waits for n's ztunnel log line msg about a connection from
// src to port and returns it.
func denyLine(ctx context.Context, t *testing.T, l *lab.Lab, node int, msg string, src netip.Addr, port int) lab.LogLine {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	line, err := lab.WaitLogLine(wctx, l.DaemonLog(node, "ztunnel"), msg, func(ll lab.LogLine) bool {
		a, _ := netip.ParseAddrPort(ll.Str("src_addr"))
		return a.Addr().Unmap() == src && fmt.Sprint(ll["port"]) == strconv.Itoa(port)
	})
	if err != nil {
		dumpLog(t, l.DaemonLog(node, "ztunnel"))
		t.Fatalf("n%d: %v", node, err)
	}
	return line
}

// meshctl runs `meshctl policy check` from inside node's netns, where
// both the controller and that node's ztunnel admin endpoint are
// reachable, and returns its output.
func meshctl(ctx context.Context, t *testing.T, l *lab.Lab, node int, from, to string, port int) string {
	t.Helper()
	ns := l.NodeNetnsPath(node)
	cmd := exec.CommandContext(ctx, l.Bin("meshctl"), "policy", "check", "--from", from, "--to", to, "--port", strconv.Itoa(port),
		"--controller", lab.ControllerAdminURL(0), "--controller-netns", ns, "--ztunnel-netns", ns)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("meshctl policy check --from %s --to %s --port %d: %v\n%s", from, to, port, err, out)
	}
	return string(out)
}
