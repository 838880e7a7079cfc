// Package install installs AgentMesh the way users do, on real parts: helm
// (make helm, the CLI of the Helm Go SDK) installs the chart from
// deploy/charts/agentmesh into a lab whose node is a real kubelet with
// containerd, runc, the CNI bridge and kube-proxy (lab.Options.RealNodes),
// with the image make image builds; the sample agents run as pods of the
// lab's image (make lab-image). It needs root and make kube containerd
// coredns helm image lab-image; with CI=true a missing prerequisite fails.
package install

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

func TestMain(m *testing.M) {
	os.Exit(lab.RunTestMain(m, true, func(lab.TestBinaries) {}))
}

// node is the lab's one node, a real one.
const node = 1

// agentsNS is the sample agents' namespace, enrolled in the mesh.
const agentsNS = "agents"

var policyGVR = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "agentpolicies"}

// TestHelmInstall: helm install of the chart on a lab whose node is real
// runs the controller Deployment and the node DaemonSets from make image's
// image with the chart's RBAC and nothing else; two agent pods then call
// each other through the mesh by their Service's name, over HBONE and mTLS
// with their SPIFFE identities (the chart's sameNodeFastPath=false: both
// are on the one node), the callee sees the caller's pod address, and an
// AgentPolicy that allows another caller only refuses the call until it
// allows this one. After the lab is gone, the host is as before.
func TestHelmInstall(t *testing.T) {
	l, ctx, closeLab := installedLab(t, "")

	// Two agents in an enrolled namespace, each with its ServiceAccount.
	start := time.Now()
	if _, err := l.CreateNamespace(ctx, agentsNS, map[string]string{"agentmesh.io/dataplane": "enabled"}); err != nil {
		t.Fatal(err)
	}
	caller := startAgent(ctx, t, l, "caller")
	callee := startAgent(ctx, t, l, "callee")
	if _, err := l.Client().CoreV1().Services(agentsNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "callee", Namespace: agentsNS},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "callee"},
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyPreferDualStack),
			Ports:          []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEnrolled(ctx, t, l, caller, callee)
	t.Logf("agents running and enrolled in %v: caller %s, callee %s", time.Since(start).Round(time.Millisecond), caller.Status.PodIP, callee.Status.PodIP)

	// caller -> callee by the Service's name, through the mesh, over IPv4
	// and IPv6: the callee sees the caller's pod address of that family.
	calleeURL := "http://callee." + agentsNS + ".svc.cluster.local:8080/"
	for _, network := range []string{"tcp4", "tcp6"} {
		start = time.Now()
		res := waitCall(ctx, t, l, caller, calleeURL, network, func(r meshlab.CallResult) bool { return r.Status == http.StatusOK })
		t.Logf("first %s call through the mesh answered after %v: %s", network, time.Since(start).Round(time.Millisecond), res.Reply)
		var reply meshlab.AgentReply
		if err := json.Unmarshal(res.Reply, &reply); err != nil || reply.Agent != "callee" {
			t.Fatalf("reply %s: %v, want callee's", res.Reply, err)
		}
		want := podIP(t, caller, network == "tcp6")
		if peer, err := netip.ParseAddrPort(reply.Remote); err != nil || peer.Addr().Unmap() != want {
			t.Errorf("%s: callee saw the call from %s, want the caller's pod address %s", network, reply.Remote, want)
		}
	}
	// Over HBONE and mTLS, with both SPIFFE identities: the node's
	// ztunnel logged the inbound side so.
	a := waitAccess(ctx, t, l, func(a lab.AccessLog) bool {
		return a.Direction == "inbound" && a.SrcIdentity == spiffeID("caller") && a.DstIdentity == spiffeID("callee")
	})
	if !a.MTLS || a.Protocol != "hbone" {
		t.Errorf("inbound access line: mtls %v protocol %q, want mTLS over hbone: %+v", a.MTLS, a.Protocol, a)
	}
	if _, body, err := l.NodeHTTPGet(ctx, node, fmt.Sprintf("http://%s:15020/metrics", l.NodeIPv4(node))); err != nil ||
		!bytes.Contains(body, []byte(`destination_workload="callee"`)) || !bytes.Contains(body, []byte(`security="mutual_tls"`)) {
		t.Errorf("ztunnel metrics have no mutual_tls series for callee (err %v)", err)
	}

	// An AgentPolicy that allows only another ServiceAccount refuses the
	// caller; allowing the caller too lets it through again.
	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		t.Fatal(err)
	}
	applyPolicy(ctx, t, dyn, "callee-callers", "other")
	start = time.Now()
	res := waitCall(ctx, t, l, caller, calleeURL, "tcp4", func(r meshlab.CallResult) bool { return r.Status != http.StatusOK })
	t.Logf("policy allowing only sa/other: the call is refused after %v (%s)", time.Since(start).Round(time.Millisecond), res.Error)
	waitAccess(ctx, t, l, func(a lab.AccessLog) bool {
		return a.Direction == "inbound" && a.SrcIdentity == spiffeID("caller") && a.Authz != ""
	})
	applyPolicy(ctx, t, dyn, "callee-callers", "other", "caller")
	start = time.Now()
	waitCall(ctx, t, l, caller, calleeURL, "tcp4", func(r meshlab.CallResult) bool { return r.Status == http.StatusOK })
	t.Logf("policy allowing sa/caller too: the call answers again after %v", time.Since(start).Round(time.Millisecond))

	// The CNI gate captured both agents before their containers started.
	r, err := containerLogs(l, "agentmesh-system", "agentd")
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(r)
	for _, p := range []*corev1.Pod{caller, callee} {
		if !slices.ContainsFunc(strings.Split(string(logs), "\n"), func(line string) bool {
			return strings.Contains(line, `"msg":"CNI gate: pod captured before its containers start"`) && strings.Contains(line, `"pod":"`+agentsNS+"/"+p.Name+`"`)
		}) {
			t.Errorf("agentd did not log that the CNI gate captured %s", p.Name)
		}
	}

	// helm uninstall takes the plugin out of the node's network with
	// agentd: a new pod starts on the node without the mesh.
	start = time.Now()
	out := helm(ctx, t, l, "uninstall", "agentmesh", "--namespace", "agentmesh-system", "--wait", "--timeout", "5m")
	t.Logf("helm uninstall --wait: %v\n%s", time.Since(start).Round(time.Millisecond), out)
	waitChained(ctx, t, l, false)
	if _, err := l.CreateNamespace(ctx, "plain", nil); err != nil {
		t.Fatal(err)
	}
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "after-uninstall", Namespace: "plain"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "app", Image: lab.LabImage,
			ImagePullPolicy: corev1.PullNever, Command: []string{"/usr/local/bin/meshlab", "app", "pause"}}}}}
	if _, err := l.Client().CoreV1().Pods("plain").Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := l.Client().CoreV1().Pods("plain").Get(ctx, plain.Name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("a pod created after helm uninstall did not start: %v %+v", err, p.Status)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("a pod created after helm uninstall runs, %v after the uninstall began", time.Since(start).Round(time.Millisecond))

	closeLab()
}

// installedLab starts a lab whose one node is real and helm installs the
// chart there with extra values (YAML under node.ztunnel, may be ""),
// waiting until the mesh's pods are ready. closeLab closes the lab (it
// restores the host and checks it) and checks it left nothing; a failed
// test dumps the mesh's container logs first.
func installedLab(t *testing.T, ztunnelValues string) (l *lab.Lab, ctx context.Context, closeLab func()) {
	t.Helper()
	bins := append(append(lab.RealNodeBinaries(), lab.KubeBinPaths()...), "helm")
	bin := lab.RequireModuleBins(t, bins...)
	images, _ := filepath.Glob(filepath.Join(bin, "image", "agentmesh-*.tar"))
	if len(images) != 1 {
		msg := fmt.Sprintf("want one image tarball in %s/image (make image), found %v", bin, images)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	root, err := lab.ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	t.Cleanup(cancel)

	start := time.Now()
	l, err = lab.New(ctx, lab.Options{Nodes: 1, RealNodes: 1, Kube: true, BinDir: bin, RealNodeImages: images,
		Logger: testutil.TLogger(t, slog.LevelInfo)})
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			if t.Failed() {
				dumpPodLogs(t, l)
			}
			l.Close()
		}
	})
	t.Logf("lab %s with a real node up in %v", l.ID(), time.Since(start).Round(time.Millisecond))

	// helm install, as a user runs it: the chart's defaults, but for this
	// node's host paths (its bpffs, cgroup and hand-off socket directory
	// are its own, below the lab's state and cgroup) and the image, which
	// is imported, not pulled.
	values := fmt.Sprintf(`image: {pullPolicy: Never}
node:
  hostPaths: {bpffs: %q, cgroupRoot: %q, run: %q}
  cni: {binDir: %q, confDir: %q}
  ztunnel: {sameNodeFastPath: false%s}
`, l.RealNodeBPFFS(node), l.RealNodeCgroup(node), l.RealNodeRunDir(node), l.RealNodeCNIBinDir(node), l.RealNodeCNIConfDir(node), ztunnelValues)
	start = time.Now()
	out := helm(ctx, t, l, "install", "agentmesh", filepath.Join(root, "deploy", "charts", "agentmesh"),
		"--namespace", "agentmesh-system", "--create-namespace", "--values", writeValues(t, values), "--wait", "--timeout", "5m")
	t.Logf("helm install --wait: %v\n%s", time.Since(start).Round(time.Millisecond), out)
	waitMeshPods(ctx, t, l)
	t.Logf("the mesh's pods ready %v after helm install began", time.Since(start).Round(time.Millisecond))
	waitChained(ctx, t, l, true)
	t.Logf("agentd chained the CNI gate into the node's network %v after helm install began", time.Since(start).Round(time.Millisecond))
	return l, ctx, func() {
		t.Helper()
		if t.Failed() {
			dumpPodLogs(t, l)
		}
		closed = true
		if err := l.Close(); err != nil { // it restores the host and checks it
			t.Fatalf("close: %v", err)
		}
		for _, d := range []string{l.StateDir(), l.RealNodeBPFFS(node)} {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("%s left behind (%v)", d, err)
			}
		}
	}
}

// helm runs make helm's helm against the lab (its own cache and config
// directories) and returns its output; an error fails the test.
func helm(ctx context.Context, t *testing.T, l *lab.Lab, args ...string) []byte {
	t.Helper()
	bin := lab.RequireModuleBins(t, "helm")
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "helm"), append(args, "--kubeconfig", l.HostKubeconfig())...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", args[0], err, out)
	}
	return out
}

// writeValues writes a values file and returns its path.
func writeValues(t *testing.T, values string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// waitChained waits until the node's CNI network has the AgentMesh plugin
// at the end of its chain (want) or not at all.
func waitChained(ctx context.Context, t *testing.T, l *lab.Lab, want bool) {
	t.Helper()
	conf := filepath.Join(l.RealNodeCNIConfDir(node), "10-lab.conflist")
	var types []string
	for {
		types = nil
		var c struct {
			Plugins []struct {
				Type string `json:"type"`
			} `json:"plugins"`
		}
		if b, err := os.ReadFile(conf); err == nil && json.Unmarshal(b, &c) == nil {
			for _, p := range c.Plugins {
				types = append(types, p.Type)
			}
		}
		n := strings.Count(strings.Join(types, ","), "agentmesh-cni")
		if want && n == 1 && types[len(types)-1] == "agentmesh-cni" || !want && n == 0 && len(types) > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node's CNI chain %v, want the AgentMesh plugin chained: %v", types, want)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// strictNamespace creates namespace name enrolled in the mesh and STRICT:
// its pods refuse plaintext (kubelet probes aside).
func strictNamespace(ctx context.Context, t *testing.T, l *lab.Lab, name string) {
	t.Helper()
	if _, err := l.CreateNamespace(ctx, name, map[string]string{"agentmesh.io/dataplane": "enabled"}); err != nil {
		t.Fatal(err)
	}
	ns, err := l.Client().CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Annotations = map[string]string{v1alpha1.MTLSModeAnnotation: "STRICT"}
	if _, err := l.Client().CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// podIP is p's IPv4 or IPv6 address.
func podIP(t *testing.T, p *corev1.Pod, v6 bool) netip.Addr {
	t.Helper()
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is6() == v6 {
			return a
		}
	}
	t.Fatalf("pod %s has no address of that family: %v", p.Name, p.Status.PodIPs)
	return netip.Addr{}
}

func spiffeID(sa string) string { return "spiffe://cluster.local/ns/" + agentsNS + "/sa/" + sa }

// waitMeshPods waits until the controller's and the node component's
// containers are ready (helm --wait can return before the DaemonSet
// controller made the node's pod) and checks they run the image make
// image built.
func waitMeshPods(ctx context.Context, t *testing.T, l *lab.Lab) {
	t.Helper()
	for {
		pods, err := l.Client().CoreV1().Pods("agentmesh-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := map[string]int{}
		for _, p := range pods.Items {
			if !lab.PodReady(&p) {
				continue
			}
			for _, c := range p.Spec.Containers {
				if !strings.Contains(c.Image, "/agentmesh/agentmesh:") {
					t.Fatalf("pod %s runs %s", p.Name, c.Image)
				}
				ready[c.Name]++
			}
		}
		if ready["controller"] >= 1 && ready["agentd"] == 1 && ready["ztunnel"] == 1 {
			t.Logf("ready containers: %v", ready)
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ready containers %v, want the controller, and agentd and ztunnel on the node", ready)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// startAgent creates ServiceAccount and Pod name (app http) on the node
// and waits until the pod is Ready.
func startAgent(ctx context.Context, t *testing.T, l *lab.Lab, name string) *corev1.Pod {
	t.Helper()
	cs := l.Client().CoreV1()
	if _, err := cs.ServiceAccounts(agentsNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: agentsNS, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{ServiceAccountName: name,
			Containers: []corev1.Container{{Name: "agent", Image: lab.LabImage, ImagePullPolicy: corev1.PullNever,
				Command:        []string{"/usr/local/bin/meshlab", "app", "http", "--name", name, "--listen", ":8080"},
				Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
			}}},
	}
	if _, err := cs.Pods(agentsNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := cs.Pods(agentsNS).Get(ctx, name, metav1.GetOptions{})
		if err == nil && lab.PodReady(p) {
			return p
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent %s not ready: %v", name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitEnrolled waits until the node's ztunnel has set up every pod.
func waitEnrolled(ctx context.Context, t *testing.T, l *lab.Lab, pods ...*corev1.Pod) {
	t.Helper()
	for {
		have, err := l.ZtunnelPods(ctx, node)
		missing := 0
		for _, p := range pods {
			if !have[string(p.UID)] {
				missing++
			}
		}
		if err == nil && missing == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ztunnel has not set up %d of the agents: %v", missing, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitCall asks caller's app, from the node, to call to over network
// (tcp4 or tcp6) until done
// accepts the result, and returns it.
func waitCall(ctx context.Context, t *testing.T, l *lab.Lab, caller *corev1.Pod, to, network string, done func(meshlab.CallResult) bool) meshlab.CallResult {
	t.Helper()
	u := fmt.Sprintf("http://%s/call?to=%s&net=%s", netip.AddrPortFrom(netip.MustParseAddr(caller.Status.PodIP), 8080), url.QueryEscape(to), network)
	var last string
	for {
		code, body, err := l.NodeHTTPGet(ctx, node, u)
		var res meshlab.CallResult
		if err == nil && json.Unmarshal(body, &res) == nil && done(res) {
			return res
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		select {
		case <-ctx.Done():
			t.Fatalf("call %s from %s: last %s", to, caller.Name, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitAccess waits for an access line of the node's ztunnel (its
// container's log) that match accepts.
func waitAccess(ctx context.Context, t *testing.T, l *lab.Lab, match func(lab.AccessLog) bool) lab.AccessLog {
	t.Helper()
	var n int
	for {
		logs, err := containerLogs(l, "agentmesh-system", "ztunnel")
		if err != nil {
			t.Fatal(err)
		}
		lines, err := lab.ParseAccessLogs(logs)
		if err != nil {
			t.Fatal(err)
		}
		n = len(lines)
		for _, a := range lines {
			if match(a) {
				return a
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no matching access line among %d", n)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// containerLogs is the messages of every log of container in namespace's
// pods on the node, without the CRI log format's prefix ("TIME STREAM
// TAG ").
func containerLogs(l *lab.Lab, namespace, container string) (io.Reader, error) {
	files, err := filepath.Glob(filepath.Join(l.RealNodePodLogs(node), namespace+"_*", container, "*.log"))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		s := bufio.NewScanner(bytes.NewReader(b))
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			if f := strings.SplitN(s.Text(), " ", 4); len(f) == 4 {
				out.WriteString(f[3] + "\n")
			}
		}
	}
	return &out, nil
}

// applyPolicy creates or replaces AgentPolicy name in agentsNS: Allow
// to callee:8080 from the ServiceAccounts sas only.
func applyPolicy(ctx context.Context, t *testing.T, dyn dynamic.Interface, name string, sas ...string) {
	t.Helper()
	spec := fmt.Sprintf(`podSelector: {matchLabels: {app: callee}}
action: Allow
rules:
- from: [{serviceAccounts: [%s]}]
  ports: [{port: 8080}]
`, strings.Join(sas, ", "))
	var s map[string]any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "agentmesh.io/v1alpha1", "kind": "AgentPolicy", "spec": s}}
	u.SetNamespace(agentsNS)
	u.SetName(name)
	res := dyn.Resource(policyGVR).Namespace(agentsNS)
	cur, err := res.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		u.SetResourceVersion(cur.GetResourceVersion())
		_, err = res.Update(ctx, u, metav1.UpdateOptions{})
	} else {
		_, err = res.Create(ctx, u, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("apply AgentPolicy %s: %v", name, err)
	}
}

// dumpPodLogs logs the tail of the mesh's containers' logs (a failed
// test's evidence; the state dir goes with the lab).
func dumpPodLogs(t *testing.T, l *lab.Lab) {
	for _, c := range []string{"controller", "agentd", "ztunnel"} {
		r, err := containerLogs(l, "agentmesh-system", c)
		if err != nil {
			t.Logf("%s logs: %v", c, err)
			continue
		}
		b, _ := io.ReadAll(r)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("%s (last %d lines):\n%s", c, min(len(lines), 40), strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}
