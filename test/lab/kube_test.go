package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// kubeBins returns bin/kube of the module (or $KUBECP_BIN_DIR), skipping
// (failing with CI=true) when `make kube` has not built it.
func kubeBins(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBECP_BIN_DIR")
	if dir == "" {
		root, err := ModuleRoot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "bin", "kube")
	}
	for _, b := range kubecp.Binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("kube binaries missing (run make kube): %v", err)
			}
			t.Skipf("kube binaries missing (run make kube): %v", err)
		}
	}
	return dir
}

// newKubeLab builds a Kubernetes-mode lab without the mesh.
func newKubeLab(t *testing.T, nodes int) *Lab {
	t.Helper()
	requireLab(t)
	kube := kubeBins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := New(ctx, Options{Nodes: nodes, Kube: true, BinDir: binaries(t), KubeBinDir: kube,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatalf("new kube lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
		checkGone(t, l.ID())
	})
	return l
}

// echoPod is a pod on node running an echo server on :8080 with a
// tcpSocket readiness probe. With wrapped, a shell runs the echo server in
// the background and itself sleeps, so killing the echo server leaves the
// container running with a failing probe.
func echoPod(l *Lab, name, node string, wrapped bool) *corev1.Pod {
	c := corev1.Container{Name: "echo", Image: "meshlab",
		Command: []string{"meshlab", "app", "echo", "--listen", ":8080"},
		Ports:   []corev1.ContainerPort{{Name: "echo", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("echo")}},
			PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}}
	if wrapped {
		c.Command = []string{"sh", "-c", `"$0" app echo --listen :8080 & exec sleep 1000000`, l.Bin("meshlab")}
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo", Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{c}}}
}

func TestKubeModePods(t *testing.T) {
	l := newKubeLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := l.Client()
	checkNodesReady(ctx, t, l)
	if _, err := l.CreateNamespace(ctx, "demo", map[string]string{"agentmesh.io/dataplane": "enabled"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*corev1.Pod{echoPod(l, "echo-1", "n1", false), echoPod(l, "echo-2", "n2", true)} {
		if _, err := l.CreatePod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.CreateService(ctx, "demo", "echo", map[string]string{"app": "echo"},
		corev1.ServicePort{Name: "echo", Port: 8080, TargetPort: intstr.FromInt32(8080)}); err != nil {
		t.Fatal(err)
	}
	p1, p2 := readyPod(ctx, t, l, "echo-1", 1), readyPod(ctx, t, l, "echo-2", 2)
	lp1, lp2 := l.KubePod("demo", "echo-1"), l.KubePod("demo", "echo-2")
	checkPodToken(ctx, t, l, "echo-2", "n2")
	checkPodEtc(ctx, t, p1, lp1)

	for _, dst := range []netip.Addr{lp2.IPv4(), lp2.IPv6()} {
		kubeSend(ctx, t, lp1, netip.AddrPortFrom(dst, 8080))
	}
	waitSlice(ctx, t, l, "both endpoints ready", map[string]bool{p1.Status.PodIP: true, p2.Status.PodIP: true})

	killEcho(t, lp2)
	if err := l.WaitPod(ctx, "demo", "echo-2", "not ready", func(p *corev1.Pod) bool { return p != nil && !PodReady(p) }); err != nil {
		t.Fatal(err)
	}
	waitSlice(ctx, t, l, "echo-2 not ready", map[string]bool{p1.Status.PodIP: true, p2.Status.PodIP: false})

	restarted(ctx, t, l, p1)
	if err := cs.CoreV1().Pods("demo").Delete(ctx, "echo-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitPod(ctx, "demo", "echo-1", "gone", func(p *corev1.Pod) bool { return p == nil }); err != nil {
		t.Fatal(err)
	}
	if l.KubePod("demo", "echo-1") != nil {
		t.Error("lab still has pod echo-1 after its deletion")
	}
	for _, path := range []string{lp1.NetnsPath(), lp1.CgroupPath(), l.podFilesDir(lp1)} {
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s still exists after pod deletion", path)
		}
	}
	waitSlice(ctx, t, l, "echo-1 removed", map[string]bool{p2.Status.PodIP: false})
}

// checkPodEtc: the pod's container and a process run in the pod later
// read the kubelet's resolv.conf (cluster DNS, search path, ndots) and
// hosts file at /etc, in a mount namespace of their own; the host's files
// are untouched.
func checkPodEtc(ctx context.Context, t *testing.T, p *corev1.Pod, lp *Pod) {
	t.Helper()
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := "search demo.svc.cluster.local svc.cluster.local cluster.local\n" +
		"nameserver " + ClusterDNSIPv4.String() + "\nnameserver " + ClusterDNSIPv6.String() + "\noptions ndots:5\n"
	pid := containerPID(t, p)
	got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/resolv.conf", pid))
	if err != nil || string(got) != want {
		t.Errorf("container's /etc/resolv.conf = %q (%v), want %q", got, err, want)
	}
	out, err := lp.Run(ctx, "cat", "/etc/resolv.conf", "/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	hostsLine := lp.IPv4().String() + "\t" + p.Name + "\n"
	if !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), hostsLine) {
		t.Errorf("a process run in the pod reads\n%s\nwant resolv.conf %q and hosts line %q", out, want, hostsLine)
	}
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	theirs, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err1 != nil || err2 != nil || self == theirs {
		t.Errorf("container's mount namespace %s (%v), the lab's %s (%v): want its own", theirs, err2, self, err1)
	}
	if now, err := os.ReadFile("/etc/resolv.conf"); err != nil || string(now) != string(hostResolv) {
		t.Errorf("host's /etc/resolv.conf changed to %q (%v)", now, err)
	}
}

// restarted kills the container process of p (restartPolicy Always) and
// waits until the kubelet has restarted it and it is ready again.
func restarted(ctx context.Context, t *testing.T, l *Lab, p *corev1.Pod) {
	t.Helper()
	if err := syscall.Kill(containerPID(t, p), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var cs corev1.ContainerStatus
	err := l.WaitPod(ctx, p.Namespace, p.Name, "restarted and ready", func(p *corev1.Pod) bool {
		if p == nil || len(p.Status.ContainerStatuses) != 1 {
			return false
		}
		cs = p.Status.ContainerStatuses[0]
		return cs.RestartCount == 1 && PodReady(p)
	})
	if err != nil {
		t.Fatalf("%v: %+v", err, cs)
	}
	if last := cs.LastTerminationState.Terminated; last == nil || last.ExitCode != 128+int32(syscall.SIGKILL) {
		t.Errorf("last termination %+v, want exit code 137", last)
	}
}

// checkPodToken asserts that a token bound to pod demo/name reviews as
// the pod's service account on node.
func checkPodToken(ctx context.Context, t *testing.T, l *Lab, name, node string) {
	t.Helper()
	tok, err := l.PodToken(ctx, "demo", name, "", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := l.Client().AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tok}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := rev.Status.User
	if !rev.Status.Authenticated || u.Username != "system:serviceaccount:demo:default" ||
		!slices.Equal(u.Extra["authentication.kubernetes.io/pod-name"], authenticationv1.ExtraValue{name}) ||
		!slices.Equal(u.Extra["authentication.kubernetes.io/node-name"], authenticationv1.ExtraValue{node}) {
		t.Errorf("token review of %s's token: %+v", name, rev.Status)
	}
}

// checkNodesReady asserts every node registered and is Ready.
func checkNodesReady(ctx context.Context, t *testing.T, l *Lab) {
	t.Helper()
	nodes, err := l.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		names = append(names, n.Name)
		if len(n.Status.Conditions) == 0 || n.Status.Conditions[0].Status != corev1.ConditionTrue {
			t.Errorf("node %s not ready: %+v", n.Name, n.Status.Conditions)
		}
	}
	if want := []string{"n1", "n2"}; !slices.Equal(names, want) {
		t.Errorf("nodes %v, want %v", names, want)
	}
}

// readyPod waits for pod demo/name to be Ready and checks what its kubelet
// reported against the lab pod backing it: node, IPs, cgroup, process.
func readyPod(ctx context.Context, t *testing.T, l *Lab, name string, node int) *corev1.Pod {
	t.Helper()
	p, err := l.WaitPodReady(ctx, "demo", name)
	if err != nil {
		t.Fatalf("%v\n%s", err, logTail(filepath.Join(l.StateDir(), "demo-"+name+"-echo.log"), 10))
	}
	lp := l.KubePod("demo", name)
	if lp == nil || lp.Node != node || lp.UID != string(p.UID) {
		t.Fatalf("lab pod for %s: %+v", name, lp)
	}
	want := []corev1.PodIP{{IP: lp.IPv4().String()}, {IP: lp.IPv6().String()}}
	if !slices.Equal(p.Status.PodIPs, want) || p.Status.PodIP != want[0].IP || p.Status.HostIP != nodeIPv4(node).String() {
		t.Errorf("%s: podIPs %v podIP %s hostIP %s, want %v on %s", name, p.Status.PodIPs, p.Status.PodIP,
			p.Status.HostIP, want, nodeIPv4(node))
	}
	if got, want := filepath.Base(lp.CgroupPath()), "pod"+string(p.UID); got != want {
		t.Errorf("%s: cgroup %s, want %s", name, got, want)
	}
	pid := containerPID(t, p)
	checkInCgroup(t, pid, lp.CgroupPath())
	return p
}

// containerPID is the PID in the pod's first container ID (amlab://PID).
func containerPID(t *testing.T, p *corev1.Pod) int {
	t.Helper()
	if len(p.Status.ContainerStatuses) != 1 {
		t.Fatalf("%s: container statuses %+v", p.Name, p.Status.ContainerStatuses)
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "amlab://"))
	if err != nil {
		t.Fatalf("%s: container id %q", p.Name, p.Status.ContainerStatuses[0].ContainerID)
	}
	return pid
}

// kubeSend runs `meshlab app send` in p to addr and checks the echo.
func kubeSend(ctx context.Context, t *testing.T, p *Pod, addr netip.AddrPort) {
	t.Helper()
	out, err := p.Run(ctx, p.lab.Bin("meshlab"), "app", "send", "--to", addr.String(), "--payload", "kube-"+addr.String())
	if err != nil {
		t.Fatalf("%s -> %s: %v (%s)", p.Name, addr, err, out)
	}
	var res struct {
		EchoOK bool `json:"echo_ok"`
	}
	if err := json.Unmarshal(out, &res); err != nil || !res.EchoOK {
		t.Errorf("%s -> %s: %s (%v)", p.Name, addr, out, err)
	}
}

// killEcho SIGKILLs the echo server in p (the lab started it; found by its
// command line among the pod cgroup's processes).
func killEcho(t *testing.T, p *Pod) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.CgroupPath(), "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmd), "app\x00echo") && !strings.HasPrefix(string(cmd), "sh\x00") {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no echo process in %s (procs %q)", p.CgroupPath(), b)
}

// waitSlice waits until the EndpointSlices of Service demo/echo hold
// exactly the addresses in want, each with the given readiness.
func waitSlice(ctx context.Context, t *testing.T, l *Lab, what string, want map[string]bool) {
	t.Helper()
	var got map[string]bool
	err := l.kubeWait(ctx, "endpointslice: "+what, func() (bool, error) {
		list, err := l.Client().DiscoveryV1().EndpointSlices("demo").List(ctx,
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=echo"})
		if err != nil {
			return false, err
		}
		got = map[string]bool{}
		for _, s := range list.Items {
			for _, e := range s.Endpoints {
				for _, a := range e.Addresses {
					got[a] = e.Conditions.Ready != nil && *e.Conditions.Ready
				}
			}
		}
		return fmt.Sprint(got) == fmt.Sprint(want), nil
	})
	if err != nil {
		t.Fatalf("%v: endpoints %v, want %v", err, got, want)
	}
}

func TestKubeModeDownCleansCrashedLab(t *testing.T) {
	l := newKubeLab(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := l.CreatePod(ctx, echoPod(l, "orphan", "", false)); err == nil {
		t.Fatal("pod in missing namespace demo created")
	}
	p := echoPod(l, "orphan", "", false)
	p.Namespace = "default"
	if _, err := l.CreatePod(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitPodReady(ctx, "default", "orphan"); err != nil {
		t.Fatal(err)
	}
	l.kube.mu.Lock()
	cp := slices.Clone(l.kube.procs)
	l.kube.mu.Unlock()
	if len(cp) != len(kubecp.Binaries) {
		t.Fatalf("control plane processes %d, want %d", len(cp), len(kubecp.Binaries))
	}
	if err := DownLab(nil, l.ID()); err != nil {
		t.Fatalf("down: %v", err)
	}
	for _, p := range cp {
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("%s (pid %d) survived Down", p.Name, p.PID)
		}
	}
	checkGone(t, l.ID())
}
