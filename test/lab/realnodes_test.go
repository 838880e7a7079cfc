package lab

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab/realnode"
)

// echoIn sends msg to addr's echo from inside the named netns.
func echoIn(netns string, addr netip.AddrPort, msg string) (string, error) {
	var got []byte
	err := doInNetns(netns, func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		c.(*net.TCPConn).CloseWrite()
		got, err = io.ReadAll(c)
		return err
	})
	return string(got), err
}

// lookupIn resolves name's addresses by asking server, with sockets made
// inside the named netns (the resolver's goroutines run on other threads,
// so each dial enters the netns itself).
func lookupIn(ctx context.Context, netns string, server netip.AddrPort, name string) ([]string, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var c net.Conn
		err := doInNetns(netns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, server.String())
			return err
		})
		return c, err
	}}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return r.LookupHost(ctx, name)
}

// TestRealNode: a Kubernetes-mode lab with one fake and one real node. The
// real kubelet registers and becomes Ready, kube-scheduler binds a Pod to
// it, the kubelet runs the Pod from the lab's image through containerd,
// a fake node reaches the Pod's app over the wire, whose log the
// apiserver reads from the kubelet (kubectl logs), a DaemonSet pod runs
// there with the node's bpffs mounted as the chart does, the real node
// reaches a Service VIP of it through kube-proxy and resolves its name
// through the cluster DNS (CoreDNS behind kube-dns); after Close the
// host is as before (sysctls, fixed directories, nft tables) and nothing
// of the lab is left (cgroups in every hierarchy, the state dir).
func TestRealNode(t *testing.T) {
	requireLab(t)
	bin := RequireModuleBins(t, append(RealNodeBinaries(), KubeBinPaths()...)...)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	l, err := New(ctx, Options{Nodes: 2, RealNodes: 1, Kube: true, BinDir: bin, Logger: testutil.TLogger(t, slog.LevelInfo)})
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			l.Close()
		}
	})
	t.Logf("lab with a real node ready in %v", time.Since(start).Round(time.Millisecond))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default", Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"kubernetes.io/hostname": nodeName(2)},
			Containers: []corev1.Container{{Name: "echo", Image: LabImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/usr/local/bin/meshlab", "app", "echo", "--listen", ":8080"}}},
		},
	}
	start = time.Now()
	if _, err := l.Client().CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip netip.Addr
	for !ip.IsValid() {
		p, err := l.Client().CoreV1().Pods("default").Get(ctx, "echo", metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == nodeName(2) {
			ip, _ = netip.ParseAddr(p.Status.PodIP)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod not running on %s: %v %+v; kubelet log:\n%s", nodeName(2), err, p.Status, logTail(filepath.Join(l.realNodeDir(2), "kubelet.log"), 30))
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("pod running on the real node at %s in %v", ip, time.Since(start).Round(time.Millisecond))
	if !podPrefixV4(2).Contains(ip) {
		t.Errorf("pod IP %s outside %s", ip, podPrefixV4(2))
	}
	if got, err := echoIn(l.nodeNetns(1), netip.AddrPortFrom(ip, 8080), "from n1"); got != "from n1" {
		t.Errorf("echo from the fake node = %q, %v", got, err)
	}
	// kubectl logs: the apiserver reads them from the real kubelet.
	const want = "echo listening on"
	for {
		b, err := l.Client().CoreV1().Pods("default").GetLogs("echo", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err == nil && strings.Contains(string(b), want) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod logs through the apiserver: %q, %v; want a line with %q", b, err, want)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// A DaemonSet (kube-controller-manager's daemonset-controller) runs on
	// the real node with the host network and its bpffs mounted as the
	// chart mounts it (HostToContainer needs a shared mount).
	propagation := corev1.MountPropagationHostToContainer
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "node-agent", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "node-agent"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "node-agent"}},
				Spec: corev1.PodSpec{
					HostNetwork:  true,
					NodeSelector: map[string]string{"kubernetes.io/hostname": nodeName(2)},
					Containers: []corev1.Container{{Name: "pause", Image: LabImage, ImagePullPolicy: corev1.PullNever,
						VolumeMounts: []corev1.VolumeMount{{Name: "bpffs", MountPath: "/sys/fs/bpf", MountPropagation: &propagation}}}},
					Volumes: []corev1.Volume{{Name: "bpffs", VolumeSource: corev1.VolumeSource{
						HostPath: &corev1.HostPathVolumeSource{Path: l.RealNodeBPFFS(2)}}}},
				},
			},
		},
	}
	if _, err := l.Client().AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		d, err := l.Client().AppsV1().DaemonSets("default").Get(ctx, "node-agent", metav1.GetOptions{})
		if err == nil && d.Status.NumberReady == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("DaemonSet not ready on the real node: %v %+v", err, d.Status)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// kube-proxy on the real node: its Service VIP answers there.
	svc, err := l.Client().CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80)
	vctx, vcancel := context.WithTimeout(ctx, time.Minute)
	defer vcancel()
	for {
		got, err := echoIn(l.nodeNetns(2), vip, "via kube-proxy")
		if got == "via kube-proxy" {
			break
		}
		select {
		case <-vctx.Done():
			t.Fatalf("Service %s from the real node: %q, %v; kube-proxy log:\n%s", vip, got, err, logTail(filepath.Join(l.realNodeDir(2), "kube-proxy.log"), 30))
		case <-time.After(200 * time.Millisecond):
		}
	}
	// The cluster DNS: the real node asks the kube-dns VIP (kube-proxy
	// sends it to CoreDNS in the wire netns) for the Service's name.
	name := "echo.default.svc." + ClusterDomain
	for {
		addrs, err := lookupIn(vctx, l.nodeNetns(2), netip.AddrPortFrom(ClusterDNSIPv4, 53), name)
		if len(addrs) == 1 && addrs[0] == svc.Spec.ClusterIP {
			break
		}
		select {
		case <-vctx.Done():
			t.Fatalf("%s from the real node via %s: %v, %v (want %s); coredns log:\n%s", name, ClusterDNSIPv4, addrs, err,
				svc.Spec.ClusterIP, logTail(filepath.Join(l.state, "coredns.log"), 30))
		case <-time.After(200 * time.Millisecond):
		}
	}

	closed = true
	if err := l.Close(); err != nil { // it checks the host is as before
		t.Errorf("close: %v", err)
	}
	checkRealNodesGone(t, l)
}

// TestRealNodeDown: meshlab down after a crash (nothing of the lab
// closed, a pod running on the real node) ends the kubelet, containerd,
// its shims and the pod, restores the host from the state it saved, and
// leaves nothing of the lab.
func TestRealNodeDown(t *testing.T) {
	requireLab(t)
	bin := RequireModuleBins(t, append(RealNodeBinaries(), KubeBinPaths()...)...)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	l, err := New(ctx, Options{Nodes: 1, RealNodes: 1, Kube: true, BinDir: bin, Logger: testutil.TLogger(t, slog.LevelInfo)})
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orphan", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "echo", Image: LabImage, ImagePullPolicy: corev1.PullNever,
			Command: []string{"/usr/local/bin/meshlab", "app", "echo", "--listen", ":8080"}}}},
	}
	if _, err := l.Client().CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := l.Client().CoreV1().Pods("default").Get(ctx, "orphan", metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod not running: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// The lab holds the HostLock: nothing else changes the host now.
	before := l.RealNodesHost()
	during, err := realnode.ReadHost()
	if err != nil {
		t.Fatal(err)
	}
	if before.Diff(during) == "" {
		t.Fatal("the real node changed nothing on the host: this test would not see a missing restore")
	}
	if err := DownLab(nil, l.ID()); err != nil { // it checks the host is as before
		t.Fatalf("down: %v", err)
	}
	after, err := realnode.ReadHost()
	if err != nil {
		t.Fatal(err)
	}
	if d := before.Diff(after); d != "" {
		t.Errorf("host after meshlab down: %s", d)
	}
	checkRealNodesGone(t, l)
}

// checkRealNodesGone asserts nothing of l is left: cgroups in every
// hierarchy, the state dir, the rest of what Leftovers knows.
func checkRealNodesGone(t *testing.T, l *Lab) {
	t.Helper()
	for _, h := range realnode.CgroupHierarchies {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, l.ID())); err == nil {
			t.Errorf("cgroup %s/%s left behind", h, l.ID())
		}
	}
	if _, err := os.Stat(l.StateDir()); err == nil {
		t.Errorf("state dir %s left behind", l.StateDir())
	}
	checkGone(t, l.ID())
}

// TestCrashedRealNodesRefused: a lab about to start real nodes refuses
// while another lab's saved host state is there (a crashed lab, whose
// kubelets may still be changing the host), and names meshlab down; its
// own state and labs without real nodes do not count.
func TestCrashedRealNodesRefused(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"amlab-aaaaaa", "amlab-bbbbbb"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := crashedRealNodes(root, "amlab-aaaaaa"); err != nil {
		t.Fatalf("no saved host state: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "amlab-aaaaaa", realHostFile), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := crashedRealNodes(root, "amlab-aaaaaa"); err != nil {
		t.Fatalf("only its own saved host state: %v", err)
	}
	err := crashedRealNodes(root, "amlab-bbbbbb")
	if err == nil || !strings.Contains(err.Error(), "amlab-aaaaaa") || !strings.Contains(err.Error(), "meshlab down") {
		t.Fatalf("another lab's saved host state: %v, want an error naming amlab-aaaaaa and meshlab down", err)
	}
}
