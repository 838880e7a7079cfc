package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	neturl "net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// webManifest is what a user would apply: an enrolled namespace, a
// Deployment of three agents that learn their pod's name through the
// downward API (env fieldRef, expanded in args), and a dual-stack Service.
const webManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: web
  labels:
    agentmesh.io/dataplane: enabled
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: agent
        image: meshlab
        command: [meshlab, app, http, --name, $(POD_NAME), --listen, ":8080"]
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef: {fieldPath: metadata.name}
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
        lifecycle:
          # Stay in service until the endpoint's removal has reached
          # every node's tunnel: a connection the tunnel opens in that
          # window would sit in a closed listener's queue and be reset
          # (the same race as kube-proxy's without a mesh).
          preStop:
            sleep: {seconds: 2}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: web
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: caller
  namespace: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: caller}
  template:
    metadata:
      labels: {app: caller}
    spec:
      containers:
      - name: agent
        image: meshlab
        command: [meshlab, app, http, --name, $(POD_NAME), --listen, ":8080"]
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef: {fieldPath: metadata.name}
---
apiVersion: agentmesh.io/v1alpha1
kind: AgentPolicy
metadata:
  name: only-caller
  namespace: web
spec:
  podSelector: {matchLabels: {app: web}}
  action: Allow
  rules:
  - from: [{podSelector: {matchLabels: {app: caller}}}]
    ports: [{port: 8080}]
`

// TestKubectlWorkflow drives a lab the way a Kubernetes user would, with
// kubectl from the host: apply a Deployment, a Service, a caller and an
// AgentPolicy letting only the caller in, wait for them, scale down,
// restart the rollout. The controllers and kube-scheduler do the work; the
// EndpointSlices of both families and every node's ztunnel follow every
// step, and the caller's calls to the Service by name (through the mesh's
// DNS and VIP, over mTLS) go on without a failure during the rollout.
func TestKubectlWorkflow(t *testing.T) {
	l, kc := newKubectlLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if out := kc.must(ctx, "get", "nodes", "--no-headers"); strings.Count(out, " Ready ") != 2 {
		t.Errorf("kubectl get nodes: want 2 Ready nodes:\n%s", out)
	}
	kc.apply(ctx, webManifest)
	start := time.Now()
	kc.must(ctx, "-n", "web", "wait", "--for=condition=Available", "deployment/web", "--timeout=60s")
	t.Logf("TIMING apply -> deployment Available: %s", time.Since(start).Round(time.Millisecond))
	pods := readyPods(ctx, t, l, kc, 3)
	checkDualStackService(ctx, t, kc)
	waitSlices(ctx, t, l, pods)
	waitMeshEndpoints(ctx, t, l, pods)
	caller := callerPod(ctx, t, l, kc)
	for _, name := range []string{"web", "web.web", "web.web.svc.cluster.local"} {
		if r := callByName(ctx, caller, "http://"+name+"/"); r.Error != "" || r.Status != 200 {
			t.Errorf("caller -> %s: %+v", name, r)
		}
	}

	kc.must(ctx, "-n", "web", "scale", "deployment/web", "--replicas=1")
	waitFor(t, "scaled to one pod", func() (bool, string) {
		p := kc.pods(ctx, "web", "app=web")
		return len(p) == 1, fmt.Sprintf("%d pods", len(p))
	})
	pods = readyPods(ctx, t, l, kc, 1)
	waitSlices(ctx, t, l, pods)
	waitMeshEndpoints(ctx, t, l, pods)

	old := pods[0].Name
	calls := startCalls(ctx, caller, "http://web/")
	kc.must(ctx, "-n", "web", "rollout", "restart", "deployment/web")
	kc.must(ctx, "-n", "web", "rollout", "status", "deployment/web", "--timeout=60s")
	pods = readyPods(ctx, t, l, kc, 1)
	if pods[0].Name == old {
		t.Errorf("pod %s still there after the rollout restart", old)
	}
	waitSlices(ctx, t, l, pods)
	waitMeshEndpoints(ctx, t, l, pods)
	waitFor(t, "a call answered by the new pod", func() (bool, string) {
		return calls.answered(pods[0].Name), "not yet"
	})
	ok, failed, answered := calls.stop()
	t.Logf("calls by name during the rollout restart: %d ok, %d failed; answered by %v", ok, len(failed), answered)
	for _, f := range failed {
		t.Errorf("call failed during the rollout: %+v", f)
	}
	if len(failed) > 0 {
		dumpLines(t, l.DaemonLog(caller.Node, "ztunnel"), `"level":"WARN"`, `"result":"`)
	}
	if ok == 0 || !answered[old] || !answered[pods[0].Name] {
		t.Errorf("calls during the rollout answered by %v, want both %s and %s", answered, old, pods[0].Name)
	}
	// The mesh carried them: the caller node's lines name the Service, mTLS.
	logs, err := l.AccessLogs(caller.Node)
	if err != nil {
		t.Fatal(err)
	}
	mtls, sniffed := 0, 0
	var unsniffed []lab.AccessLog
	for _, a := range logs {
		// mTLS, or the same-node path for a replica on the caller's node.
		if a.Direction == "outbound" && a.DstService == "web/web" && (a.MTLS || a.Protocol == "local") && a.DstIdentity == "spiffe://cluster.local/ns/web/sa/default" {
			mtls++
			// The port declares nothing: the calls' request lines
			// told.
			if a.BytesSent == 0 && (a.AppProtocolBy == "timeout" || a.AppProtocolBy == "inconclusive") {
				// The call calls.stop cut short between its connect
				// and its request: nothing to sniff, and not a call.
				mtls--
				continue
			}
			if a.AppProtocol == "http1" && a.AppProtocolBy == "sniffed" {
				sniffed++
			} else {
				unsniffed = append(unsniffed, a)
			}
		}
	}
	if mtls < ok {
		t.Errorf("%d mTLS or same-node outbound lines to web/web on the caller's node, want at least the %d calls", mtls, ok)
	}
	if sniffed != mtls {
		t.Errorf("%d of %d outbound lines to web/web say app_protocol http1 (sniffed); the others: %+v", sniffed, mtls, unsniffed)
	}
	checkWorkloadMetrics(ctx, t, l, caller, mtls)
	checkAppProtocolsAnnotation(ctx, t, l, kc, caller)
}

// checkWorkloadMetrics: the caller's node counted the calls to web/web
// under the Deployments' names (stable across the rollout restart, which
// replaced web's pods), as the source reporter.
func checkWorkloadMetrics(ctx context.Context, t *testing.T, l *lab.Lab, caller *lab.Pod, lines int) {
	t.Helper()
	series, err := l.ZtunnelSeries(ctx, caller.Node, "agentmesh_tcp_connections_closed_total")
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for labels, v := range series {
		if strings.Contains(labels, `reporter="source"`) && strings.Contains(labels, `destination_service="web/web"`) {
			if !strings.Contains(labels, `source_workload="caller"`) || !strings.Contains(labels, `destination_workload="web"`) {
				t.Errorf("series {%s}: want source_workload caller and destination_workload web (the Deployments)", labels)
			}
			total += v
		}
	}
	if total < float64(lines) {
		t.Errorf("agentmesh_tcp_connections_closed_total to web/web from the source: %v, want at least the %d access lines", total, lines)
	}
	// meshctl stat reads the same series from every node's ztunnel.
	args := []string{"stat", "--by", "edge", "--interval", "200ms", "-o", "json"}
	for node := 1; node <= l.Nodes(); node++ {
		args = append(args, "--metrics", l.NodeNetnsPath(node)+"="+fmt.Sprintf("http://127.0.0.1:%d/metrics", mesh.MetricsPort))
	}
	out, err := exec.CommandContext(ctx, l.Bin("meshctl"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("meshctl %v: %v\n%s", args, err, out)
	}
	var rows []struct {
		From, To, Security string
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("meshctl stat -o json: %v\n%s", err, out)
	}
	if !slices.ContainsFunc(rows, func(r struct{ From, To, Security string }) bool {
		return r.From == "web/caller" && r.To == "web/web" && strings.Contains(r.Security, "mutual_tls")
	}) {
		t.Errorf("meshctl stat --by edge: no web/caller -> web/web edge over mutual_tls:\n%s", out)
	}
}

// checkAppProtocolsAnnotation declares web's port MCP with the
// agentmesh.io/app-protocols annotation (plus a malformed entry and one
// for a port web does not have): every node's ztunnel gets the port's new
// protocol, the next call is recorded as declared mcp, and the Service
// gets a Warning event for the two bad entries.
func checkAppProtocolsAnnotation(ctx context.Context, t *testing.T, l *lab.Lab, kc *kubectl, caller *lab.Pod) {
	t.Helper()
	kc.must(ctx, "-n", "web", "annotate", "service/web", "agentmesh.io/app-protocols=http=agentmesh.io/mcp,9999=tcp,garbage")
	for node := 1; node <= l.Nodes(); node++ {
		waitFor(t, fmt.Sprintf("n%d's ztunnel has web/web's port as agentmesh.io/mcp", node), func() (bool, string) {
			svcs, err := l.ZtunnelServices(ctx, node, "web/web")
			if err != nil {
				return false, err.Error()
			}
			return len(svcs[0].Ports) == 1 && svcs[0].Ports[0].AppProtocol == "agentmesh.io/mcp", fmt.Sprintf("%+v", svcs[0].Ports)
		})
	}
	since := time.Now()
	if r := callByName(ctx, caller, "http://web/"); r.Error != "" || r.Status != 200 {
		t.Fatalf("caller -> web after the annotation: %+v", r)
	}
	waitFor(t, "the call's access line, declared mcp", func() (bool, string) {
		logs, err := l.AccessLogs(caller.Node)
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, a := range logs {
			if a.Direction == "outbound" && a.DstService == "web/web" && !a.Time.Before(since) {
				if a.AppProtocol == "mcp" && a.AppProtocolBy == "declared" {
					return true, ""
				}
				seen = append(seen, a.AppProtocol+"/"+a.AppProtocolBy)
			}
		}
		return false, fmt.Sprintf("lines since: %v", seen)
	})
	waitFor(t, "a Warning event on service/web for the bad entries", func() (bool, string) {
		out, err := kc.run(ctx, "", "-n", "web", "get", "events", "--field-selector", "involvedObject.kind=Service,involvedObject.name=web,type=Warning", "-o", "jsonpath={.items[*].message}")
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(out, `"garbage"`) && strings.Contains(out, `"9999"`), out
	})
}

// dumpLines logs the lines of path that contain any of subs, but not the
// access lines that say ok.
func dumpLines(t *testing.T, path string, subs ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Log(err)
		return
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, `"result":"ok"`) {
			continue
		}
		for _, s := range subs {
			if strings.Contains(line, s) {
				t.Log(line)
				break
			}
		}
	}
}

// waitMeshEndpoints waits until every node's ztunnel routes Service
// web/web to exactly pods, all ready.
func waitMeshEndpoints(ctx context.Context, t *testing.T, l *lab.Lab, pods []corev1.Pod) {
	t.Helper()
	var want []string
	for _, p := range pods {
		want = append(want, "web/"+p.Name)
	}
	slices.Sort(want)
	for node := 1; node <= l.Nodes(); node++ {
		waitFor(t, fmt.Sprintf("n%d's ztunnel routes web/web to %v", node, want), func() (bool, string) {
			svcs, err := l.ZtunnelServices(ctx, node, "web/web")
			if err != nil {
				return false, err.Error()
			}
			var got []string
			for _, e := range svcs[0].Endpoints {
				if e.Ready && e.Mesh {
					got = append(got, e.Workload)
				}
			}
			slices.Sort(got)
			return slices.Equal(got, want) && len(got) == len(svcs[0].Endpoints), fmt.Sprintf("%+v", svcs[0].Endpoints)
		})
	}
}

// callerPod is the caller Deployment's pod, Ready.
func callerPod(ctx context.Context, t *testing.T, l *lab.Lab, kc *kubectl) *lab.Pod {
	t.Helper()
	kc.must(ctx, "-n", "web", "wait", "--for=condition=Available", "deployment/caller", "--timeout=60s")
	ps := kc.pods(ctx, "web", "app=caller")
	if len(ps) != 1 {
		t.Fatalf("%d caller pods", len(ps))
	}
	p, err := l.WaitMeshPod(ctx, "web", ps[0].Name, true)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// callByName asks the caller's agent to GET url (a fresh connection).
func callByName(ctx context.Context, caller *lab.Pod, url string) meshlab.CallResult {
	var r meshlab.CallResult
	_, body, err := caller.HTTPGet(ctx, "http://127.0.0.1:8080/call?to="+neturl.QueryEscape(url))
	if err != nil {
		return meshlab.CallResult{Error: err.Error()}
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return meshlab.CallResult{Error: fmt.Sprintf("decode %q: %v", body, err)}
	}
	return r
}

// calls is a caller making one call every 50ms until stopped.
type calls struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex // guards the fields below
	ok     int
	failed []meshlab.CallResult
	by     map[string]bool // agents that answered
}

// answered reports whether agent answered a call yet.
func (c *calls) answered(agent string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[agent]
}

func startCalls(ctx context.Context, caller *lab.Pod, url string) *calls {
	ctx, cancel := context.WithCancel(ctx)
	c := &calls{cancel: cancel, done: make(chan struct{}), by: map[string]bool{}}
	go func() {
		defer close(c.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			r := callByName(ctx, caller, url)
			if ctx.Err() != nil {
				return // cut short by stop, not a failure
			}
			var reply struct {
				Agent string `json:"agent"`
			}
			c.mu.Lock()
			if r.Error != "" || r.Status != 200 || json.Unmarshal(r.Reply, &reply) != nil {
				c.failed = append(c.failed, r)
			} else {
				c.ok++
				c.by[reply.Agent] = true
			}
			c.mu.Unlock()
		}
	}()
	return c
}

// stop ends the calls and returns what they saw.
func (c *calls) stop() (ok int, failed []meshlab.CallResult, answeredBy map[string]bool) {
	c.cancel()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok, c.failed, c.by
}

// readyPods checks the Deployment's pods as kubectl lists them: n of
// them, each bound to a node, Ready, and running an agent that got its
// pod's name through the downward API (in its command line and in what
// it answers).
func readyPods(ctx context.Context, t *testing.T, l *lab.Lab, kc *kubectl, n int) []corev1.Pod {
	t.Helper()
	// Replaced pods leave after their preStop sleep and grace.
	waitFor(t, fmt.Sprintf("%d web pods", n), func() (bool, string) {
		p := kc.pods(ctx, "web", "app=web")
		return len(p) == n, fmt.Sprintf("%d pods", len(p))
	})
	kc.must(ctx, "-n", "web", "wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=60s")
	pods := kc.pods(ctx, "web", "app=web")
	if len(pods) != n {
		t.Fatalf("%d pods, want %d", len(pods), n)
	}
	for _, p := range pods {
		if p.Spec.NodeName == "" || p.Status.PodIP == "" {
			t.Errorf("pod %s: node %q, ip %q", p.Name, p.Spec.NodeName, p.Status.PodIP)
		}
		checkPodName(ctx, t, l, p)
	}
	return pods
}

// checkPodName: $(POD_NAME) in the container's args became the pod's
// name, and the agent answers with it.
func checkPodName(ctx context.Context, t *testing.T, l *lab.Lab, p corev1.Pod) {
	t.Helper()
	if len(p.Status.ContainerStatuses) != 1 {
		t.Fatalf("pod %s: container statuses %+v", p.Name, p.Status.ContainerStatuses)
	}
	pid := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "amlab://")
	cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
	if err != nil || !slices.Contains(strings.Split(string(cmdline), "\x00"), p.Name) {
		t.Errorf("pod %s: container args %q (%v), want the pod's name in them", p.Name, cmdline, err)
	}
	lp := l.KubePod(p.Namespace, p.Name)
	if lp == nil {
		t.Fatalf("no sandbox for pod %s", p.Name)
	}
	_, body, err := lp.HTTPGet(ctx, "http://127.0.0.1:8080/")
	var reply struct {
		Agent string `json:"agent"`
	}
	if err != nil || json.Unmarshal(body, &reply) != nil || reply.Agent != p.Name {
		t.Errorf("pod %s's agent answers %q (%v), want its name", p.Name, body, err)
	}
}

// checkDualStackService: the Service got a ClusterIP of each family.
func checkDualStackService(ctx context.Context, t *testing.T, kc *kubectl) {
	t.Helper()
	out := kc.must(ctx, "-n", "web", "get", "service", "web", "-o", "jsonpath={.spec.clusterIPs}")
	var ips []string
	if err := json.Unmarshal([]byte(out), &ips); err != nil || len(ips) != 2 {
		t.Fatalf("service web clusterIPs %s (%v), want an IPv4 and an IPv6 address", out, err)
	}
	a, err1 := netip.ParseAddr(ips[0])
	b, err2 := netip.ParseAddr(ips[1])
	if err1 != nil || err2 != nil || !a.Is4() || !b.Is6() {
		t.Errorf("service web clusterIPs %v, want IPv4 then IPv6", ips)
	}
}

// waitSlices waits until the Service's EndpointSlices hold exactly the
// pods' addresses, ready, in an IPv4 and an IPv6 slice.
func waitSlices(ctx context.Context, t *testing.T, l *lab.Lab, pods []corev1.Pod) {
	t.Helper()
	want := map[discoveryv1.AddressType][]string{}
	for _, p := range pods {
		for _, ip := range p.Status.PodIPs {
			fam := discoveryv1.AddressTypeIPv4
			if netip.MustParseAddr(ip.IP).Is6() {
				fam = discoveryv1.AddressTypeIPv6
			}
			want[fam] = append(want[fam], ip.IP)
		}
	}
	for _, ips := range want {
		slices.Sort(ips)
	}
	if len(want[discoveryv1.AddressTypeIPv4]) != len(pods) || len(want[discoveryv1.AddressTypeIPv6]) != len(pods) {
		t.Fatalf("pods' addresses %v: want an IPv4 and an IPv6 address each", want)
	}
	waitFor(t, "endpointslices of both families follow the pods", func() (bool, string) {
		got, err := endpoints(ctx, l, "web", "web")
		if err != nil {
			return false, err.Error()
		}
		for _, ips := range got {
			slices.Sort(ips)
		}
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("got %v, want %v", got, want)
	})
}
