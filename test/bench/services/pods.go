package services

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/test/bench/benchkube"
	"github.com/agentmesh/agentmesh/test/lab"
)

// Names of what the benchmark makes in the lab.
const (
	meshNS      = "svc-bench"        // labelled for the mesh
	directNS    = "svc-bench-direct" // not labelled: its pods stay outside the mesh
	serviceName = "bench-echo"       // in meshNS, selecting the mesh server
	serverApp   = "bench-server"     // label app= of the mesh server
	echoPort    = 9000               // every pod's bench-server
)

// servicesKey is the Service as ztunnel names it (access log, admin).
const servicesKey = meshNS + "/" + serviceName

// setup is what the rows run between.
type setup struct {
	directClient, directServer *lab.Pod
	meshClient, meshServer     *lab.Pod
	vip                        netip.Addr
}

// makeSetup creates the two namespaces, a client pod on n1 and a server
// pod on n2 in each, and the Service in front of the mesh server; it
// returns once the mesh knows every pod and n1's ztunnel routes the VIP
// to the server. The lab's Close removes all of it.
func makeSetup(ctx context.Context, l *lab.Lab) (*setup, error) {
	if _, err := l.CreateNamespace(ctx, directNS, nil); err != nil {
		return nil, err
	}
	if _, err := l.CreateNamespace(ctx, meshNS, map[string]string{"agentmesh.io/dataplane": "enabled"}); err != nil {
		return nil, err
	}
	pods := []*corev1.Pod{
		benchPod(directNS, "client", "n1", nil), benchPod(directNS, "server", "n2", nil),
		benchPod(meshNS, "client", "n1", nil), benchPod(meshNS, "server", "n2", map[string]string{"app": serverApp}),
	}
	for _, p := range pods {
		if err := benchkube.ServiceAccount(ctx, l, p.Namespace, p.Spec.ServiceAccountName); err != nil {
			return nil, err
		}
		if _, err := l.CreatePod(ctx, p); err != nil {
			return nil, err
		}
	}
	var got []*lab.Pod
	for _, p := range pods {
		lp, err := l.WaitMeshPod(ctx, p.Namespace, p.Name, p.Namespace == meshNS)
		if err != nil {
			return nil, err
		}
		got = append(got, lp)
	}
	s := &setup{directClient: got[0], directServer: got[1], meshClient: got[2], meshServer: got[3]}
	for _, p := range []*lab.Pod{s.directClient, s.meshClient} {
		if err := reuseTimeWait(p); err != nil {
			return nil, err
		}
	}
	svc, err := l.CreateService(ctx, meshNS, serviceName, map[string]string{"app": serverApp},
		corev1.ServicePort{Name: "echo", Port: echoPort, TargetPort: intstr.FromInt32(echoPort), Protocol: corev1.ProtocolTCP})
	if err != nil {
		return nil, err
	}
	if s.vip, err = netip.ParseAddr(svc.Spec.ClusterIP); err != nil {
		return nil, fmt.Errorf("service %s cluster ip %q: %w", servicesKey, svc.Spec.ClusterIP, err)
	}
	return s, benchkube.WaitEndpoint(ctx, l, servicesKey, s.meshServer)
}

// benchPod is pod ns/name on node running the echo server on echoPort as
// service account "bench-<name>", Ready once it listens. Client pods run
// it too (unused): a pod needs a process.
func benchPod(ns, name, node string, labels map[string]string) *corev1.Pod {
	c := corev1.Container{Name: "bench", Image: "meshlab",
		Command: []string{"meshlab", "bench-server", "--listen", ":" + strconv.Itoa(echoPort)},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(echoPort)}},
			PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "bench-" + name, Containers: []corev1.Container{c}}}
}

// twReuse is the sysctl, per network namespace, that lets a new outgoing
// connection take a local port still in TIME_WAIT once a second has
// passed. The client closes first, so each connection leaves its port in
// TIME_WAIT for 60s: without reuse the ephemeral range (28k ports) caps a
// run at about 28k connections, and a fast row would fail on it.
const twReuse = "/proc/sys/net/ipv4/tcp_tw_reuse"

// reuseTimeWait sets twReuse to 1 in client pod p's netns, as load
// generators do.
func reuseTimeWait(p *lab.Pod) error {
	err := netns.DoPath(p.NetnsPath(), func() error { return os.WriteFile(twReuse, []byte("1"), 0) })
	if err != nil {
		return fmt.Errorf("pod %s/%s: set %s: %w", p.Namespace, p.Name, twReuse, err)
	}
	return nil
}
