package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
	"github.com/agentmesh/agentmesh/test/lab/traffic"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
)

// svcNS is the namespace of the Service tests.
const svcNS = "agents"

// TestServiceVIP: connections from a mesh pod to a Service's ClusterIP
// are balanced over its endpoints and carried over mTLS to each with the
// endpoint's identity (no plaintext on the wire); 3000 connections spread
// within ±15% of even, and an endpoint made slow gets clearly less; an
// endpoint whose app is killed under a steady stream of new connections
// costs no connection (failover) and is no longer chosen once not ready; a
// Service whose endpoints all refuse, and one without endpoints, are
// refused fast with a line naming the service.
func TestServiceVIP(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	namespace(ctx, t, l, svcNS, true, "planner", "dv")
	cli := startPod(ctx, t, l, echoPod(svcNS, "planner", "planner", "n1", nil), true)
	var dvs []*lab.Pod
	for i := range 3 {
		p := namedEchoPod(svcNS, fmt.Sprintf("dv-%d", i), "dv", "n2", map[string]string{"app": "dv"})
		p.Spec.RestartPolicy = corev1.RestartPolicyNever // a killed app stays dead: its endpoint goes not ready
		dvs = append(dvs, startPod(ctx, t, l, p, true))
	}
	svc := createService(ctx, t, l, "data-validator", map[string]string{"app": "dv"}, intstr.FromString("http"))
	vips := serviceVIPs(t, svc)
	waitEndpoints(ctx, t, l, 1, "agents/data-validator", 3)

	t.Run("mtls to each endpoint, nothing plain on the wire", func(t *testing.T) {
		capture, err := l.Capture(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer capture.Stop()
		payload := "secret-agent-payload"
		for _, vip := range vips {
			since := time.Now()
			mustSend(ctx, t, l, cli, vip, payload)
			a := waitServiceLog(ctx, t, l, 1, vip, since)
			if !a.MTLS || a.SrcIdentity != spiffeID(svcNS, "planner") || a.DstIdentity != spiffeID(svcNS, "dv") || a.DstService != "agents/data-validator" {
				t.Errorf("outbound to %s: mtls=%v %s -> %s service %q, want mTLS planner -> dv, service agents/data-validator",
					vip, a.MTLS, a.SrcIdentity, a.DstIdentity, a.DstService)
			}
			if !isPodAddr(dvs, a.Upstream().Addr()) || a.Upstream().Port() != echoPort {
				t.Errorf("outbound to %s went to %s, want a dv pod's :%d", vip, a.Upstream(), echoPort)
			}
		}
		// By name, as an agent calls: the pod's resolv.conf sends the
		// lookups to the mesh's DNS proxy, which answers with the VIPs.
		for _, name := range []string{"data-validator", "data-validator.agents", "data-validator.agents.svc.cluster.local"} {
			for _, network := range []string{"tcp4", "tcp6"} {
				to := fmt.Sprintf("%s:%d", name, echoPort)
				since := time.Now()
				out, err := cli.Run(ctx, l.Bin("meshlab"), "app", "send", "--to", to, "--network", network, "--payload", payload, "--timeout", "5s")
				if err != nil {
					t.Errorf("%s over %s: %v: %s", to, network, err, out)
					continue
				}
				var res meshlab.SendResult
				json.Unmarshal(out, &res) //nolint:errcheck // checked below
				vip := vips[0]
				if network == "tcp6" {
					if len(vips) < 2 {
						t.Fatalf("service has no IPv6 VIP: %v", vips)
					}
					vip = vips[1]
				}
				a := waitServiceLog(ctx, t, l, 1, vip, since)
				if !res.EchoOK || !a.MTLS || a.DstService != "agents/data-validator" || a.DstIdentity != spiffeID(svcNS, "dv") {
					t.Errorf("%s over %s: echo %v; n1 logged %s -> %s mtls=%v service %q identity %q", to, network, res.EchoOK,
						a.SrcAddr, a.DstAddr, a.MTLS, a.DstService, a.DstIdentity)
				}
			}
		}
		segs, err := capture.Stop()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range segs {
			if bytes.Contains(s.Payload, []byte(payload)) {
				t.Errorf("plaintext payload on the wire: %s -> %s", s.Src, s.Dst)
			}
		}
		t.Logf("%d segments captured on the wire, none with the payload", len(segs))
	})

	t.Run("3000 connections spread evenly", func(t *testing.T) {
		// Warm up: every endpoint gets its pooled HBONE connection first.
		burst(ctx, t, l, cli, netip.AddrPortFrom(vips[0], echoPort), 60, 20)
		before := picks(ctx, t, l, "agents/data-validator")
		res := burst(ctx, t, l, cli, netip.AddrPortFrom(vips[0], echoPort), 3000, 8)
		if res.Echoed != 3000 {
			t.Fatalf("burst: %d of 3000 echoed: %+v", res.Echoed, res.Errors)
		}
		split := delta(picks(ctx, t, l, "agents/data-validator"), before)
		t.Logf("3000 connections split %v; balancer after: %s", split, balancerState(ctx, t, l, "agents/data-validator"))
		for _, p := range dvs {
			if n := split[p.Name]; n < 850 || n > 1150 {
				t.Errorf("%s got %d of 3000, want 1000 ±15%%", p.Name, n)
			}
		}
	})

	t.Run("slow endpoint gets less", func(t *testing.T) {
		slow := dvs[0]
		// No netem here: a token bucket on the pod's link delays its
		// packets (the HBONE connect answers included) under load.
		if out, err := slow.Run(ctx, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "200kbit", "burst", "1600", "latency", "400ms"); err != nil {
			t.Fatalf("tc: %v: %s", err, out)
		}
		defer slow.Run(context.Background(), "tc", "qdisc", "del", "dev", "eth0", "root")
		before := picks(ctx, t, l, "agents/data-validator")
		res := burst(ctx, t, l, cli, netip.AddrPortFrom(vips[0], echoPort), 1500, 30)
		split := delta(picks(ctx, t, l, "agents/data-validator"), before)
		t.Logf("1500 connections with %s slow: split %v, echoed %d", slow.Name, split, res.Echoed)
		if res.Echoed != 1500 {
			t.Errorf("burst: %d of 1500 echoed: %+v", res.Echoed, res.Errors)
		}
		for _, p := range dvs[1:] {
			if split[slow.Name]*2 > split[p.Name] {
				t.Errorf("slow %s got %d, not clearly less than %s's %d", slow.Name, split[slow.Name], p.Name, split[p.Name])
			}
		}
	})

	t.Run("killed endpoint: failover, then not chosen", func(t *testing.T) {
		// New connections only: a long stream on the victim would end with it.
		ld, err := traffic.Start(ctx, l, cli, netip.AddrPortFrom(vips[0], echoPort), nil,
			traffic.Options{Interval: dialInterval, Timeout: 2 * time.Second, Duration: 3 * time.Minute, Tag: "-svc"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ld.Stop() })
		waitGood(t, ld, 20, time.Time{})
		victim := dvs[1]
		dying := time.Now()
		killApp(ctx, t, l, victim)
		killed := time.Now()
		waitFor(t, victim.Name+" not ready in n1's ztunnel", func() (bool, string) {
			e, err := endpointOf(ctx, l, "agents/data-validator", victim.Name)
			if err != nil {
				return false, err.Error()
			}
			return e == nil || !e.Ready, "still ready"
		})
		notReady := time.Now()
		before := picks(ctx, t, l, "agents/data-validator")
		waitGood(t, ld, 60, notReady)
		after := picks(ctx, t, l, "agents/data-validator")
		attempts, _ := stopLoad(t, ld)
		failed := 0
		// A connection begun before the app was gone may have reached it
		// and been cut with it: only an L7 retry could save that one.
		// Those begun after it was gone must all work.
		cut := 0
		for _, a := range attempts {
			switch {
			case a.OK:
			case a.At.Before(killed) && !a.At.Before(dying.Add(-200*time.Millisecond)):
				cut++
			default:
				failed++
				t.Errorf("connection failed: %+v", a)
			}
		}
		retried := 0
		logs, err := l.AccessLogs(1)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range logs {
			if a.DstService == "agents/data-validator" && !a.Time.Before(killed) && a.Attempts > 1 {
				retried++
			}
		}
		if failed > 0 {
			// What each ztunnel saw of the connections that were not ok.
			for _, node := range []int{1, 2} {
				dumpLines(t, l.DaemonLog(node, "ztunnel"), "data-validator", `"level":"WARN"`)
			}
		}
		t.Logf("%d connections, %d failed, %d in flight when the app died cut with it, %d failed over to another endpoint; %s not ready %s after the kill; picks of it after: %d",
			len(attempts), failed, cut, retried, victim.Name, notReady.Sub(killed).Round(time.Millisecond), after[victim.Name]-before[victim.Name])
		if n := after[victim.Name] - before[victim.Name]; n != 0 {
			t.Errorf("%s chosen %d times after it was not ready", victim.Name, n)
		}
	})

	t.Run("all endpoints refuse: fast refusal naming the service", func(t *testing.T) {
		dead := serviceVIPs(t, createService(ctx, t, l, "dead-end", map[string]string{"app": "dv"}, intstr.FromInt32(9999)))[0]
		waitEndpoints(ctx, t, l, 1, "agents/dead-end", 2)
		start := time.Now()
		err := sendTo(ctx, l, cli, netip.AddrPortFrom(dead, 9999))
		took := time.Since(start)
		if err == nil {
			t.Fatal("a connection to a service whose endpoints all refuse worked")
		}
		t.Logf("all endpoints refusing: failed after %s: %v", took.Round(time.Millisecond), err)
		if took > 5*time.Second {
			t.Errorf("refusal took %s, want within the connect budget", took)
		}
		waitServiceRefused(ctx, t, l, 1, "agents/dead-end")

		none := serviceVIPs(t, createService(ctx, t, l, "nobody", map[string]string{"app": "nobody"}, intstr.FromInt32(8080)))[0]
		waitEndpoints(ctx, t, l, 1, "agents/nobody", 0)
		start = time.Now()
		if err := sendTo(ctx, l, cli, netip.AddrPortFrom(none, 8080)); err == nil {
			t.Fatal("a connection to a service without endpoints worked")
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("no endpoint: refusal took %s, want at once", took)
		}
		waitServiceRefused(ctx, t, l, 1, "agents/nobody")
	})
}

// TestPlaintextFromMeshAddress: plaintext sent from a mesh pod's address
// (past its capture) to a PERMISSIVE pod whose only Allow rule selects
// that pod by podSelector is refused and logged as suspicious: a mesh
// pod's address proves nothing; its mTLS connection is allowed.
func TestPlaintextFromMeshAddress(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	namespace(ctx, t, l, svcNS, true, "planner", "dv")
	cli := startPod(ctx, t, l, echoPod(svcNS, "planner", "planner", "n1", map[string]string{"app": "planner"}), true)
	srv := startPod(ctx, t, l, echoPod(svcNS, "dv", "dv", "n2", map[string]string{"app": "dv"}), true)
	pol := newPolicies(t, l)
	pol.apply(ctx, svcNS, "only-planner", `
podSelector: {matchLabels: {app: dv}}
action: Allow
rules:
- from: [{podSelector: {matchLabels: {app: planner}}}]
`)
	if st, reason := pol.accepted(ctx, svcNS, "only-planner"); st != "True" {
		t.Fatalf("only-planner Accepted = %s/%s", st, reason)
	}
	dst := netip.AddrPortFrom(srv.IPv4(), echoPort)
	// Over mTLS the podSelector matches planner (its identity is verified).
	until(ctx, t, l, cli, dst, true)

	out, err := cli.Run(ctx, l.Bin("meshlab"), "app", "send", "--to", dst.String(), "--payload", "spoof", "--mark", strconv.Itoa(meshMark), "--timeout", "3s")
	if err == nil {
		t.Fatalf("plaintext from the mesh pod's address was delivered: %s", out)
	}
	sus := waitLogLine(ctx, t, l, 2, "plaintext connection from the address of a mesh pod: treated as from outside the mesh (no workload identity)",
		func(ll lab.LogLine) bool { return ll.Str("address_owner") == "agents/planner" })
	t.Logf("n2: %v", sus)
	deny := denyLine(ctx, t, l, 2, "connection denied by policy", cli.IPv4(), echoPort)
	if deny.Str("policy") != "agents/only-planner" || deny.Str("src_workload") != "" || deny.Str("reason") != "no-allow-match" || deny["mtls"] != false {
		t.Errorf("deny line %v, want plaintext without a source workload, no-allow-match of agents/only-planner", deny)
	}
	if err := sendTo(ctx, l, cli, dst); err != nil {
		t.Errorf("planner's mTLS connection after the spoofed one: %v", err)
	}
}

// meshMark is the socket mark of ztunnel's own sockets, which the capture
// lets pass (api/mesh.SocketMark).
const meshMark = mesh.SocketMark

// namedEchoPod is echoPod with its port named "http" (a Service's named
// targetPort resolves to it).
func namedEchoPod(ns, name, sa, node string, labels map[string]string) *corev1.Pod {
	p := echoPod(ns, name, sa, node, labels)
	p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: echoPort, Protocol: corev1.ProtocolTCP}}
	return p
}

// createService creates Service ns agents/name on port echoPort (and on
// target's number when that is a number other than echoPort) selecting
// selector, dual-stack when the cluster is.
func createService(ctx context.Context, t *testing.T, l *lab.Lab, name string, selector map[string]string, target intstr.IntOrString) *corev1.Service {
	t.Helper()
	port := int32(echoPort)
	if target.Type == intstr.Int && target.IntVal != echoPort {
		port = target.IntVal
	}
	dual := corev1.IPFamilyPolicyPreferDualStack
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: svcNS},
		Spec: corev1.ServiceSpec{Selector: selector, IPFamilyPolicy: &dual,
			Ports: []corev1.ServicePort{{Name: "http", Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}}},
	}
	out, err := l.Client().CoreV1().Services(svcNS).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
	return out
}

// serviceVIPs are svc's ClusterIPs, IPv4 first.
func serviceVIPs(t *testing.T, svc *corev1.Service) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, s := range svc.Spec.ClusterIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			t.Fatalf("service %s cluster ip %q: %v", svc.Name, s, err)
		}
		out = append(out, ip)
	}
	if len(out) == 0 {
		t.Fatalf("service %s has no cluster ip", svc.Name)
	}
	t.Logf("service %s: cluster ips %v", svc.Name, out)
	return out
}

// waitEndpoints waits until node's ztunnel routes service with n ready
// endpoints.
func waitEndpoints(ctx context.Context, t *testing.T, l *lab.Lab, node int, service string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("n%d routes %s to %d ready endpoints", node, service, n), func() (bool, string) {
		svcs, err := l.ZtunnelServices(ctx, node, service)
		if err != nil {
			return false, err.Error()
		}
		ready := 0
		for _, e := range svcs[0].Endpoints {
			if e.Ready {
				ready++
			}
		}
		return ready == n, fmt.Sprintf("%d ready", ready)
	})
}

// picks is how often n1's balancer chose each endpoint of service, by pod
// name.
func picks(ctx context.Context, t *testing.T, l *lab.Lab, service string) map[string]int {
	t.Helper()
	svcs, err := l.ZtunnelServices(ctx, 1, service)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range svcs[0].Endpoints {
		_, name, _ := strings.Cut(e.Workload, "/")
		out[name] = int(e.Picks)
	}
	return out
}

// balancerState is n1's EWMA and open connections per endpoint of service.
func balancerState(ctx context.Context, t *testing.T, l *lab.Lab, service string) string {
	t.Helper()
	svcs, err := l.ZtunnelServices(ctx, 1, service)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range svcs[0].Endpoints {
		fmt.Fprintf(&b, "%s ewma %.2fms open %d failures %d; ", e.Workload, e.EWMAMillis, e.Open, e.Failures)
	}
	return b.String()
}

func delta(after, before map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

// endpointOf is the endpoint of service backed by pod name in n1's
// ztunnel, nil when it has none.
func endpointOf(ctx context.Context, l *lab.Lab, service, pod string) (*debug.Endpoint, error) {
	svcs, err := l.ZtunnelServices(ctx, 1, service)
	if err != nil {
		return nil, err
	}
	for i, e := range svcs[0].Endpoints {
		if e.Workload == svcNS+"/"+pod {
			return &svcs[0].Endpoints[i], nil
		}
	}
	return nil, nil
}

// burst runs `meshlab app burst` from p: n connections, k at once, each
// echoed and closed.
func burst(ctx context.Context, t *testing.T, l *lab.Lab, p *lab.Pod, to netip.AddrPort, n, k int) meshlab.BurstResult {
	t.Helper()
	out, err := p.Run(ctx, l.Bin("meshlab"), "app", "burst", "--to", to.String(), "--conns", strconv.Itoa(n),
		"--concurrency", strconv.Itoa(k), "--timeout", "20s")
	if err != nil {
		t.Fatalf("burst: %v: %s", err, out)
	}
	var res meshlab.BurstResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("burst output %s: %v", out, err)
	}
	return res
}

// waitServiceLog waits for node's outbound access line of a connection
// to vip that began at or after since.
func waitServiceLog(ctx context.Context, t *testing.T, l *lab.Lab, node int, vip netip.Addr, since time.Time) lab.AccessLog {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	a, err := l.WaitAccessLog(wctx, node, func(a lab.AccessLog) bool {
		return a.Direction == "outbound" && a.Dst().Addr() == vip && a.Result == "ok" && !a.Time.Before(since)
	})
	if err != nil {
		dumpLog(t, l.DaemonLog(node, "ztunnel"))
		t.Fatalf("n%d outbound access log to %s: %v", node, vip, err)
	}
	return a
}

func isPodAddr(ps []*lab.Pod, a netip.Addr) bool {
	for _, p := range ps {
		if p.IPv4() == a || p.IPv6() == a {
			return true
		}
	}
	return false
}

// killApp kills the app process of pod p (SIGKILL, by the PID its
// container status names) and waits until it has exited.
func killApp(ctx context.Context, t *testing.T, l *lab.Lab, p *lab.Pod) {
	t.Helper()
	pod, err := l.Client().CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pod.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", p.Name)
	}
	id := pod.Status.ContainerStatuses[0].ContainerID
	_, pidStr, ok := strings.Cut(id, "://")
	pid, err := strconv.Atoi(pidStr)
	if !ok || err != nil || pid <= 1 {
		t.Fatalf("pod %s container id %q names no pid", p.Name, id)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s's app (pid %d): %v", p.Name, pid, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := lab.WaitExited(wctx, pid); err != nil {
		t.Fatal(err)
	}
}

// waitServiceRefused waits for node's ztunnel line saying a connection to
// service was refused.
func waitServiceRefused(ctx context.Context, t *testing.T, l *lab.Lab, node int, service string) {
	t.Helper()
	waitLogLine(ctx, t, l, node, "connection to service refused", func(ll lab.LogLine) bool { return ll.Str("service") == service })
}

// waitLogLine waits for a line msg of node's ztunnel log that match
// accepts.
func waitLogLine(ctx context.Context, t *testing.T, l *lab.Lab, node int, msg string, match func(lab.LogLine) bool) lab.LogLine {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	line, err := lab.WaitLogLine(wctx, l.DaemonLog(node, "ztunnel"), msg, match)
	if err != nil {
		dumpLog(t, l.DaemonLog(node, "ztunnel"))
		t.Fatalf("n%d: no %q line: %v", node, msg, err)
	}
	return line
}
