package view

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

var enabled = map[string]string{DataplaneLabel: DataplaneEnabled}

// pod makes a running pod; mod adjusts it.
func pod(namespace, name, node, ip string, mod ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec:   corev1.PodSpec{NodeName: node, ServiceAccountName: "sa-" + name},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	for _, m := range mod {
		m(p)
	}
	return p
}

func wl(namespace, name, node string, enrolled bool, ips ...string) meshconfig.Workload {
	w := meshconfig.Workload{UID: "uid-" + name, Name: name, WorkloadName: name, Namespace: namespace, ServiceAccount: "sa-" + name,
		Node: node, Enrolled: enrolled, Authz: &policy.Target{MTLSMode: policy.MTLSPermissive, Default: policy.ActionAllow}}
	for _, ip := range ips {
		w.IPs = append(w.IPs, netip.MustParseAddr(ip))
	}
	return w
}

// compute runs objs through a fake clientset and the Watcher's informers.
func compute(t *testing.T, objs ...runtime.Object) *Snapshot {
	t.Helper()
	w, err := NewWatcher(fake.NewClientset(objs...), fakeDynamic(t), Options{TrustDomain: "td.test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan *Snapshot, 1)
	sink := sinkFuncs{snapshot: func(s *Snapshot) {
		select {
		case got <- s:
		default:
		}
	}}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, sink) }()
	defer func() { cancel(); <-done }()
	select {
	case s := <-got:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot within 10s")
		return nil
	}
}

func TestWorkloads(t *testing.T) {
	tests := []struct {
		name string
		objs []runtime.Object
		want []meshconfig.Workload
	}{
		{
			name: "enrolled namespace",
			objs: []runtime.Object{ns("a", enabled), pod("a", "p1", "n1", "10.0.0.1")},
			want: []meshconfig.Workload{wl("a", "p1", "n1", true, "10.0.0.1")},
		},
		{
			name: "namespace without label",
			objs: []runtime.Object{ns("a", nil), pod("a", "p1", "n1", "10.0.0.1")},
			want: []meshconfig.Workload{wl("a", "p1", "n1", false, "10.0.0.1")},
		},
		{
			name: "namespace labelled disabled",
			objs: []runtime.Object{ns("a", map[string]string{DataplaneLabel: "disabled"}), pod("a", "p1", "n1", "10.0.0.1")},
			want: []meshconfig.Workload{wl("a", "p1", "n1", false, "10.0.0.1")},
		},
		{
			name: "pod opts out",
			objs: []runtime.Object{ns("a", enabled), pod("a", "p1", "n1", "10.0.0.1", func(p *corev1.Pod) {
				p.Labels = map[string]string{DataplaneLabel: DataplaneOff}
			})},
			want: []meshconfig.Workload{func() meshconfig.Workload {
				w := wl("a", "p1", "n1", false, "10.0.0.1")
				w.Labels = map[string]string{DataplaneLabel: DataplaneOff}
				return w
			}()},
		},
		{
			name: "left out: finished, host network, unscheduled",
			objs: []runtime.Object{ns("a", enabled),
				pod("a", "done", "n1", "10.0.0.2", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
				pod("a", "failed", "n1", "10.0.0.3", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
				pod("a", "host", "n1", "192.0.2.1", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
				pod("a", "pending", "", "10.0.0.4"),
				pod("a", "ok", "n2", "10.0.0.5"),
			},
			want: []meshconfig.Workload{wl("a", "ok", "n2", true, "10.0.0.5")},
		},
		{
			// Its node's agentd must know before the pod's containers
			// start whether to capture it (the CNI gate).
			name: "scheduled, no address yet: a workload without IPs",
			objs: []runtime.Object{ns("a", enabled), ns("b", nil),
				pod("a", "noip", "n1", ""), pod("b", "off", "n1", "")},
			want: []meshconfig.Workload{wl("a", "noip", "n1", true), wl("b", "off", "n1", false)},
		},
		{
			name: "dual stack, default service account, pods on all nodes, sorted by uid",
			objs: []runtime.Object{ns("a", enabled), ns("b", nil),
				pod("b", "z", "n2", "10.0.0.9"),
				pod("a", "m", "n1", "10.0.0.1", func(p *corev1.Pod) {
					p.Spec.ServiceAccountName = ""
					p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::1"})
				}),
			},
			want: []meshconfig.Workload{
				func() meshconfig.Workload {
					w := wl("a", "m", "n1", true, "10.0.0.1", "fd00::1")
					w.ServiceAccount = "default"
					return w
				}(),
				wl("b", "z", "n2", false, "10.0.0.9"),
			},
		},
		{
			name: "address reused: the newer pod keeps it",
			objs: []runtime.Object{ns("a", enabled),
				pod("a", "old", "n1", "10.0.0.1"),
				pod("a", "new", "n1", "10.0.0.1", func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(time.Unix(2000, 0)) }),
			},
			want: []meshconfig.Workload{wl("a", "new", "n1", true, "10.0.0.1")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := compute(t, tt.objs...)
			if diff := cmp.Diff(tt.want, got.Workloads, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("workloads (-want +got):\n%s", diff)
			}
			if got.TrustDomain != "td.test" {
				t.Errorf("trust domain %q", got.TrustDomain)
			}
			c := &meshconfig.Config{TrustDomain: got.TrustDomain, Workloads: got.Workloads, Services: got.Services}
			if err := c.Validate(); err != nil {
				t.Errorf("computed view is invalid: %v", err)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func svc(namespace, name string, mod ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP, AppProtocol: ptr("http")}}}}
	for _, m := range mod {
		m(s)
	}
	return s
}

func slice(namespace, name, service string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		Endpoints:   eps,
	}
}

func ep(ip, podName string, ready *bool) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	if podName != "" {
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: podName, UID: types.UID("uid-" + podName)}
	}
	return e
}

// TestServices: Services with their VIPs, ports and the endpoints of their
// slices merged per address (ready wins); an endpoint whose pod is gone is
// left out, a host-network pod's names no workload; an ExternalName
// Service is there by its name only.
func TestServices(t *testing.T) {
	got := compute(t,
		pod("b", "p1", "n1", "10.0.0.1"), pod("b", "p2", "n2", "10.0.0.2"),
		pod("b", "host", "n1", "192.0.2.1", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		svc("b", "web"),
		svc("a", "named", func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromString("http") }),
		svc("a", "headless", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }),
		svc("a", "ext", func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "db.example.com", "", nil
		}),
		slice("b", "web-1", "web", ep("10.0.0.2", "p2", ptr(false)), ep("10.0.0.1", "p1", nil)),
		slice("b", "web-2", "web", ep("10.0.0.2", "p2", ptr(true)), ep("not-an-ip", "", nil),
			ep("10.0.0.9", "gone", ptr(true)), ep("192.0.2.1", "host", ptr(true))),
		slice("a", "named-1", "named", ep("10.0.0.3", "", ptr(true))),
	)
	port := meshconfig.ServicePort{Name: "http", Port: 80, TargetPort: 8080, Protocol: "TCP", AppProtocol: "http"}
	named := port
	named.TargetPort = 0
	vip := []netip.Addr{netip.MustParseAddr("10.96.0.10")}
	eport := map[string]uint16{"http": 8080}
	want := []meshconfig.Service{
		{Name: "ext", Namespace: "a", ExternalName: "db.example.com"},
		{Name: "headless", Namespace: "a", Ports: []meshconfig.ServicePort{port}},
		{Name: "named", Namespace: "a", VIPs: vip, Ports: []meshconfig.ServicePort{named},
			Endpoints: []meshconfig.Endpoint{{IPs: []netip.Addr{netip.MustParseAddr("10.0.0.3")}, Ready: true, Ports: eport}}},
		{Name: "web", Namespace: "b", VIPs: vip, Ports: []meshconfig.ServicePort{port}, Endpoints: []meshconfig.Endpoint{
			{WorkloadUID: "uid-p1", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Ready: true, Ports: eport},
			{WorkloadUID: "uid-p2", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, Ready: true, Ports: eport},
			{IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Ready: true, Ports: eport},
		}},
	}
	if diff := cmp.Diff(want, got.Services, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
}

// TestDeterministic: the same objects listed in any order give equal views.
func TestDeterministic(t *testing.T) {
	in := Inputs{TrustDomain: "td",
		Namespaces: []*corev1.Namespace{ns("a", enabled)},
		Pods:       []*corev1.Pod{pod("a", "p1", "n1", "10.0.0.1"), pod("a", "p2", "n2", "10.0.0.2"), pod("a", "p3", "n1", "10.0.0.3")},
		Services:   []*corev1.Service{svc("a", "s1"), svc("a", "s2")},
		Slices:     []*EndpointSlice{slice("a", "s1-a", "s1", ep("10.0.0.1", "p1", nil)), slice("a", "s1-b", "s1", ep("10.0.0.3", "p3", nil))},
	}
	want := Compute(in)
	rev := in
	rev.Pods = []*corev1.Pod{in.Pods[2], in.Pods[0], in.Pods[1]}
	rev.Services = []*corev1.Service{in.Services[1], in.Services[0]}
	rev.Slices = []*EndpointSlice{in.Slices[1], in.Slices[0]}
	if diff := cmp.Diff(want, Compute(rev), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("order changed the view (-first +second):\n%s", diff)
	}
}

// TestWatcherFollowsChanges: a burst of changes makes one new snapshot
// that reflects all of them, and PodsOnNode follows the cache.
func TestWatcherFollowsChanges(t *testing.T) {
	client := fake.NewClientset(ns("a", enabled))
	snaps := make(chan *Snapshot, 16)
	w, err := NewWatcher(client, fakeDynamic(t), Options{TrustDomain: "td", Logger: slog.New(slog.DiscardHandler), Debounce: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, sinkFuncs{snapshot: func(s *Snapshot) { snaps <- s }}) }()
	t.Cleanup(func() { cancel(); <-done })
	if s := <-snaps; len(s.Workloads) != 0 {
		t.Fatalf("first snapshot has %d workloads, want 0", len(s.Workloads))
	}
	for i, name := range []string{"p1", "p2", "p3"} {
		p := pod("a", name, "n1", netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}).String())
		if _, err := client.CoreV1().Pods("a").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-snaps:
			if len(s.Workloads) == 3 {
				if n := len(w.PodsOnNode("n1")); n != 3 {
					t.Errorf("PodsOnNode(n1) = %d pods, want 3", n)
				}
				return
			}
		case <-deadline:
			t.Fatal("no snapshot with 3 workloads within 10s")
		}
	}
}

// TestWatcherLoneChangeNotDelayed: a change that follows a quiet spell goes
// out at once, not after the debounce (here a minute: the test would time
// out).
func TestWatcherLoneChangeNotDelayed(t *testing.T) {
	client := fake.NewClientset(ns("a", enabled))
	snaps := make(chan *Snapshot, 16)
	w, err := NewWatcher(client, fakeDynamic(t), Options{TrustDomain: "td", Logger: slog.New(slog.DiscardHandler),
		Debounce: time.Minute, MaxDelay: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, sinkFuncs{snapshot: func(s *Snapshot) { snaps <- s }}) }()
	t.Cleanup(func() { cancel(); <-done })
	<-snaps
	if _, err := client.CoreV1().Pods("a").Create(ctx, pod("a", "p1", "n1", "10.0.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-snaps:
			if len(s.Workloads) == 1 {
				return
			}
		case <-deadline:
			t.Fatal("a lone change waited for the debounce")
		}
	}
}

// TestAppProtocolsAnnotation: agentmesh.io/app-protocols sets a port's
// protocol by name or number over its appProtocol; malformed entries and
// entries naming no port are Warnings on the Service and change nothing.
func TestAppProtocolsAnnotation(t *testing.T) {
	s := svc("a", "tools", func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports,
			corev1.ServicePort{Name: "grpc", Port: 9000, Protocol: corev1.ProtocolTCP, AppProtocol: ptr("grpc")},
			corev1.ServicePort{Port: 9100, Protocol: corev1.ProtocolTCP})
		s.Annotations = map[string]string{v1alpha1.AppProtocolsAnnotation: " http = agentmesh.io/mcp, 9000=tcp,9100=agentmesh.io/a2a, nope=http, garbage,=x"}
	})
	ms, ws := serviceOf(s, nil, nil)
	got := map[uint16]string{}
	for _, p := range ms.Ports {
		got[p.Port] = p.AppProtocol
	}
	want := map[uint16]string{80: "agentmesh.io/mcp", 9000: "tcp", 9100: "agentmesh.io/a2a"}
	if !maps.Equal(got, want) {
		t.Errorf("ports' protocols %v, want %v", got, want)
	}
	if len(ws) != 2 || !strings.Contains(ws[0].Message, `"garbage"`) || !strings.Contains(ws[0].Message, `"=x"`) ||
		!strings.Contains(ws[1].Message, `"nope"`) || ws[0].Object.Kind != "Service" || ws[0].Object.Name != "tools" {
		t.Errorf("warnings %+v, want one for the malformed entries and one for the unknown port, on the Service", ws)
	}
	// Through Compute: the warnings come after the namespaces' and pods'.
	snap := Compute(Inputs{TrustDomain: "td", Namespaces: []*corev1.Namespace{nsAnnotated("a", map[string]string{v1alpha1.MTLSModeAnnotation: "bogus"})},
		Services: []*corev1.Service{s}})
	if len(snap.Warnings) != 3 || snap.Warnings[0].Object.Kind != "Namespace" || snap.Warnings[2].Object.Kind != "Service" {
		t.Errorf("snapshot warnings %+v, want the namespace's then the service's two", snap.Warnings)
	}
}

// TestWorkloadName: what runs a pod, stable across rollouts.
func TestWorkloadName(t *testing.T) {
	owned := func(kind, name string, controller bool) metav1.OwnerReference {
		return metav1.OwnerReference{Kind: kind, Name: name, Controller: ptr(controller)}
	}
	for _, tc := range []struct {
		name   string
		owners []metav1.OwnerReference
		labels map[string]string
		want   string
	}{
		{"deployment", []metav1.OwnerReference{owned("ReplicaSet", "web-5d9c7b8f6", true)}, map[string]string{"pod-template-hash": "5d9c7b8f6"}, "web"},
		{"deployment with dashes", []metav1.OwnerReference{owned("ReplicaSet", "data-validator-v2-7f8b", true)}, map[string]string{"pod-template-hash": "7f8b"}, "data-validator-v2"},
		{"bare replicaset", []metav1.OwnerReference{owned("ReplicaSet", "rs-abc", true)}, nil, "rs-abc"},
		{"hash that is not the suffix", []metav1.OwnerReference{owned("ReplicaSet", "web-5d9c", true)}, map[string]string{"pod-template-hash": "zzz"}, "web-5d9c"},
		{"statefulset", []metav1.OwnerReference{owned("StatefulSet", "db", true)}, nil, "db"},
		{"daemonset", []metav1.OwnerReference{owned("DaemonSet", "agentd", true)}, nil, "agentd"},
		{"job", []metav1.OwnerReference{owned("Job", "batch-1", true)}, nil, "batch-1"},
		{"only a non-controller owner", []metav1.OwnerReference{owned("ConfigMap", "x", false)}, nil, "p1"},
		{"bare pod", nil, nil, "p1"},
	} {
		p := pod("a", "p1", "n1", "10.0.0.1", func(p *corev1.Pod) { p.OwnerReferences, p.Labels = tc.owners, tc.labels })
		if got := workloadName(p); got != tc.want {
			t.Errorf("%s: workloadName = %q, want %q", tc.name, got, tc.want)
		}
	}
}
