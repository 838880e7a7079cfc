package kube

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const onlyBuyer = `
podSelector: {matchLabels: {app: seller}}
action: Allow
rules:
- from: [{serviceAccounts: [buyer]}]
  ports: [{port: 8080}]
`

const denyAll = `
podSelector: {matchLabels: {app: seller}}
action: Deny
rules:
- ports: [{port: 1, endPort: 65535}]
`

// TestKubeletProbes: the node's kubelet probes a pod's startup (grpc),
// readiness (httpGet, named port) and liveness (tcpSocket) ports through
// the mesh, and an AgentPolicy or STRICT mTLS on the pod does not stop
// them: a pod rolled out under an Allow policy for another caller becomes
// Ready and joins its Service's EndpointSlice, and stays so (never
// NotReady, never restarted) as a Deny-all policy and then STRICT are
// added; a new pod under both starts as well. Other plaintext from the
// node's address, to a port no probe names, is still refused.
func TestKubeletProbes(t *testing.T) {
	l := newLab(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "shop", true, "seller", "buyer")
	buyer := startPod(ctx, t, l, agentPod("shop", "buyer", "buyer", "n1"), true)
	seller := map[string]string{"app": "seller"}
	if _, err := l.CreateService(ctx, "shop", "seller", seller,
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}); err != nil {
		t.Fatal(err)
	}
	pol := newPolicies(t, l)
	pol.apply(ctx, "shop", "only-buyer", onlyBuyer)
	if st, reason := pol.accepted(ctx, "shop", "only-buyer"); st != "True" {
		t.Fatalf("only-buyer Accepted = %s/%s", st, reason)
	}
	watch := watchReady(t, l, "shop", "seller-1", "seller")
	start := time.Now()
	s1 := startPod(ctx, t, l, probedPod("shop", "seller-1", "seller", "n1", seller), true)
	waitEndpointReady(ctx, t, l, "shop", "seller", s1.IPv4().String())
	t.Logf("seller-1 Ready and a ready endpoint %s after its creation under only-buyer", time.Since(start).Round(time.Millisecond))
	pod, err := l.Client().CoreV1().Pods("shop").Get(ctx, "seller-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	watch.arm(pod)
	url := func(port int) string { return "http://" + netip.AddrPortFrom(s1.IPv4(), uint16(port)).String() + "/" }

	t.Run("Allow only buyer", func(t *testing.T) {
		probesAdmitted(ctx, t, l, 1, start, s1.IPv4(), map[int]int{startPort: 1, readyPort: 2, livePort: 2})
		nodeRefused(ctx, t, l, 1, start, netip.AddrPortFrom(s1.IPv4(), unprobedPort), "no-allow-match", "shop/only-buyer")
		if !reaches(ctx, t, l, 1, buyer, url(readyPort)) {
			t.Errorf("buyer -> seller:%d refused under only-buyer", readyPort)
		}
		if reaches(ctx, t, l, 1, buyer, url(unprobedPort)) {
			t.Errorf("buyer -> seller:%d allowed, only-buyer allows %d only", unprobedPort, readyPort)
		}
	})
	t.Run("Deny all", func(t *testing.T) {
		applied := time.Now()
		pol.apply(ctx, "shop", "deny-all", denyAll)
		enforced := nodeRefused(ctx, t, l, 1, applied, netip.AddrPortFrom(s1.IPv4(), unprobedPort), "deny-rule", "shop/deny-all")
		probesAdmitted(ctx, t, l, 1, enforced, s1.IPv4(), map[int]int{readyPort: 3, livePort: 3})
		if reaches(ctx, t, l, 1, buyer, url(readyPort)) {
			t.Errorf("buyer -> seller:%d allowed under deny-all", readyPort)
		}
	})
	t.Run("STRICT", func(t *testing.T) {
		applied := time.Now()
		annotateNamespace(ctx, t, l, "shop", mtlsMode, "STRICT")
		enforced := nodeRefused(ctx, t, l, 1, applied, netip.AddrPortFrom(s1.IPv4(), unprobedPort), "plaintext-strict", "")
		probesAdmitted(ctx, t, l, 1, enforced, s1.IPv4(), map[int]int{readyPort: 3, livePort: 3})
	})
	if lapses := watch.disarm(); len(lapses) > 0 {
		t.Errorf("seller-1 left Ready or its endpoints under the policies:\n%v", lapses)
	}
	t.Run("new pod under Deny-all and STRICT", func(t *testing.T) {
		start := time.Now()
		s2 := startPod(ctx, t, l, probedPod("shop", "seller-2", "seller", "n1", seller), true)
		waitEndpointReady(ctx, t, l, "shop", "seller", s2.IPv4().String())
		t.Logf("seller-2 Ready and a ready endpoint after %s", time.Since(start).Round(time.Millisecond))
		probesAdmitted(ctx, t, l, 1, start, s2.IPv4(), map[int]int{startPort: 1, readyPort: 2, livePort: 2})
		nodeRefused(ctx, t, l, 1, start, netip.AddrPortFrom(s2.IPv4(), unprobedPort), "plaintext-strict", "")
		p, err := l.Client().CoreV1().Pods("shop").Get(ctx, "seller-2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n := restartCount(p); n != 0 {
			t.Errorf("seller-2 restarted %d times", n)
		}
	})
	if t.Failed() {
		dumpLog(t, l.DaemonLog(1, "ztunnel"))
	}
}
