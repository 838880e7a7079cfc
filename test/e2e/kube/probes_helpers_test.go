package kube

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/agentmesh/agentmesh/test/lab"
)

// The ports of probedPod: each probe names its own, one port none names.
const (
	readyPort    = 8080 // "http", readiness httpGet by name
	startPort    = 8081 // startup grpc
	livePort     = 8082 // liveness tcpSocket by number
	unprobedPort = 9090 // served, never probed
)

// probedPod is pod ns/name on node running `meshlab app http` on
// readyPort, livePort and unprobedPort and the gRPC health service on
// startPort, probed by all three kinds of probe. Two failures in a row
// fail a probe (one second apart): a probe the mesh refused would turn
// the pod NotReady or restart it within seconds.
func probedPod(ns, name, sa, node string, labels map[string]string) *corev1.Pod {
	probe := func(h corev1.ProbeHandler, failures int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: h, PeriodSeconds: 1, TimeoutSeconds: 5, SuccessThreshold: 1, FailureThreshold: failures}
	}
	// The lab enrolls a pod once its containers run (there is no CNI
	// plugin doing it before they start), so a probe in the pod's first
	// moments may pass outside the mesh; the startup probe, which runs
	// once, waits until the pod is surely enrolled, so the test sees it
	// admitted by ztunnel.
	startupProbe := probe(corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: startPort}}, 60)
	startupProbe.InitialDelaySeconds = 3
	c := corev1.Container{Name: "app", Image: "meshlab",
		Command: []string{"meshlab", "app", "http", "--name", name, "--grpc-health", ":" + strconv.Itoa(startPort),
			"--listen", fmt.Sprintf(":%d,:%d,:%d", readyPort, livePort, unprobedPort)},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: readyPort}, {Name: "grpc", ContainerPort: startPort},
			{Name: "live", ContainerPort: livePort}, {Name: "other", ContainerPort: unprobedPort}},
		StartupProbe:   startupProbe,
		ReadinessProbe: probe(corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}}, 2),
		LivenessProbe:  probe(corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(livePort)}}, 2),
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{c}}}
}

// agentPod is an HTTP agent (`meshlab app http`) on :8080 whose /call makes
// it call another address through the mesh.
func agentPod(ns, name, sa, node string) *corev1.Pod {
	p := echoPod(ns, name, sa, node, nil)
	p.Spec.Containers[0].Command = []string{"meshlab", "app", "http", "--name", name, "--listen", fmt.Sprintf(":%d", echoPort)}
	return p
}

// reaches makes agent (an agentPod) GET url through the mesh and reports
// whether it got an answer. The node asks agent: agent's port 8080 is
// probed, so the node reaches it whatever the policies.
func reaches(ctx context.Context, t *testing.T, l *lab.Lab, node int, agent *lab.Pod, url string) bool {
	t.Helper()
	u := fmt.Sprintf("http://%s/call?to=%s", netip.AddrPortFrom(agent.IPv4(), echoPort), url)
	code, body, err := l.NodeHTTPGet(ctx, node, u)
	switch {
	case err == nil && code == http.StatusOK:
		return true
	case err == nil && code == http.StatusBadGateway:
		return false
	}
	t.Fatalf("GET %s: %d %s %v", u, code, body, err)
	return false
}

// probesAdmitted waits until node's ztunnel logged, since since, at least
// want[port] connections from the node's pod gateway to port of dst that
// it admitted as kubelet probes, and fails the test if it decided any of
// them otherwise.
func probesAdmitted(ctx context.Context, t *testing.T, l *lab.Lab, node int, since time.Time, dst netip.Addr, want map[int]int) {
	t.Helper()
	gw := l.PodGatewayV4(node)
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs, err := l.AccessLogs(node)
		if err != nil {
			t.Fatal(err)
		}
		count := map[int]int{}
		for _, a := range logs {
			port := int(a.Dst().Port())
			if _, probed := want[port]; !probed || a.Src().Addr() != gw || a.Dst().Addr() != dst || a.Time.Before(since) {
				continue
			}
			if a.Authz != "kubelet-probe" {
				t.Fatalf("probe connection not admitted as a kubelet probe: %+v", a)
			}
			// Admitted is what counts: how the prober ends its connection
			// is its own business (a gRPC client may reset it).
			count[port]++
		}
		if enough(count, want) {
			t.Logf("kubelet probes of %s admitted since %s, by port: %v", dst, since.Format(time.TimeOnly), count)
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			dumpLog(t, l.DaemonLog(node, "ztunnel"))
			t.Fatalf("after 30s, kubelet probes of %s admitted by port %v, want at least %v", dst, count, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func enough(count, want map[int]int) bool {
	for p, n := range want {
		if count[p] < n {
			return false
		}
	}
	return true
}

// nodeRefused GETs dst from node until ztunnel refuses it with reason
// (logged at or after since, from the node's pod gateway) and returns
// the denial's time. An answer is fine until then: the policy may not be
// enforced yet.
func nodeRefused(ctx context.Context, t *testing.T, l *lab.Lab, node int, since time.Time, dst netip.AddrPort, reason, policy string) time.Time {
	t.Helper()
	gw := l.PodGatewayV4(node)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, err := l.NodeHTTPGet(ctx, node, "http://"+dst.String()+"/")
		lines, lerr := lab.LogLines(l.DaemonLog(node, "ztunnel"), "connection denied by policy")
		if lerr != nil {
			t.Fatal(lerr)
		}
		for _, ll := range lines {
			src, _ := netip.ParseAddrPort(ll.Str("src_addr"))
			at, _ := time.Parse(time.RFC3339Nano, ll.Str("time"))
			if src.Addr() == gw && ll.Str("dst_addr") == dst.String() && !at.Before(since) &&
				ll.Str("reason") == reason && ll.Str("policy") == policy {
				if err == nil {
					t.Errorf("node -> %s answered %d after ztunnel logged its denial", dst, code)
				}
				return at
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			dumpLog(t, l.DaemonLog(node, "ztunnel"))
			t.Fatalf("node -> %s: no denial (%s %s) after 30s; last GET: %d %v", dst, reason, policy, code, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readyWatch follows a pod and its Service's IPv4 EndpointSlices through
// informers and, while armed, records every state in which the pod is not
// Ready, has restarted, or its address is missing or not ready in a slice.
type readyWatch struct {
	pod, svc string

	mu       sync.Mutex // guards the fields below
	armed    bool
	ip       string
	restarts int32
	lapses   []string
}

// watchReady starts a readyWatch on pod and svc in ns, stopped when the
// test ends.
func watchReady(t *testing.T, l *lab.Lab, ns, pod, svc string) *readyWatch {
	t.Helper()
	w := &readyWatch{pod: pod, svc: svc}
	f := informers.NewSharedInformerFactoryWithOptions(l.Client(), 0, informers.WithNamespace(ns))
	_, err := f.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: w.onPod, UpdateFunc: func(_, o any) { w.onPod(o) },
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Discovery().V1().EndpointSlices().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: w.onSlice, UpdateFunc: func(_, o any) { w.onSlice(o) }, DeleteFunc: w.onSliceGone,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	f.Start(stop)
	t.Cleanup(func() { close(stop); f.Shutdown() })
	for typ, ok := range f.WaitForCacheSync(stop) {
		if !ok {
			t.Fatalf("informer %v did not sync", typ)
		}
	}
	return w
}

// arm starts recording lapses of pod p (running, Ready, in the slice).
func (w *readyWatch) arm(p *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed, w.ip, w.restarts = true, p.Status.PodIP, restartCount(p)
}

// disarm stops recording (before the pod is deleted) and returns the
// lapses recorded.
func (w *readyWatch) disarm() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	return w.lapses
}

func (w *readyWatch) lapse(format string, a ...any) {
	w.lapses = append(w.lapses, time.Now().Format(time.TimeOnly)+" "+fmt.Sprintf(format, a...))
}

func (w *readyWatch) onPod(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Name != w.pod {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.armed {
		return
	}
	if !lab.PodReady(p) {
		w.lapse("pod %s not Ready: %+v", p.Name, p.Status.Conditions)
	}
	if n := restartCount(p); n > w.restarts {
		w.lapse("pod %s restarted (%d restarts)", p.Name, n)
	}
}

func (w *readyWatch) onSlice(obj any) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelServiceName] != w.svc || s.AddressType != discoveryv1.AddressTypeIPv4 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.armed {
		return
	}
	if ready, found := endpointReady(s, w.ip); !found || !ready {
		w.lapse("endpoint %s in slice %s: present %v, ready %v", w.ip, s.Name, found, ready)
	}
}

func (w *readyWatch) onSliceGone(obj any) {
	if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] == w.svc {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.armed {
			w.lapse("slice %s deleted", s.Name)
		}
	}
}

// endpointReady finds ip in s and reports its ready condition.
func endpointReady(s *discoveryv1.EndpointSlice, ip string) (ready, found bool) {
	for _, e := range s.Endpoints {
		for _, a := range e.Addresses {
			if a == ip {
				return e.Conditions.Ready != nil && *e.Conditions.Ready, true
			}
		}
	}
	return false, false
}

func restartCount(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range p.Status.ContainerStatuses {
		n += cs.RestartCount
	}
	return n
}

// waitEndpointReady waits until svc's EndpointSlices list ip as ready.
func waitEndpointReady(ctx context.Context, t *testing.T, l *lab.Lab, ns, svc, ip string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := l.Client().DiscoveryV1().EndpointSlices(ns).List(ctx,
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
		if err != nil {
			t.Fatal(err)
		}
		var seen []string
		for i := range list.Items {
			ready, found := endpointReady(&list.Items[i], ip)
			if ready {
				return
			}
			seen = append(seen, fmt.Sprintf("%s: present %v", list.Items[i].Name, found))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not a ready endpoint of %s/%s after 30s (%s)", ip, ns, svc, strings.Join(seen, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
