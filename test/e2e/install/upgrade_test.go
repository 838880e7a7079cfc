package install

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// The load of TestHelmUpgradeUnderLoad: streams as long as upgradeStreams
// (begun before the upgrade; the chart's drain timeout here outlasts
// them) and a new connection every 20ms, until well after the upgrade.
const (
	upgradeStreams = 30 * time.Second
	upgradeDial    = 10 * time.Minute
	nextTag        = "0.1.0-next"
)

// TestHelmUpgradeUnderLoad: helm upgrade to a new image tag rolls both
// node DaemonSets on the real node while pods hold echo streams (IPv4 and
// IPv6) and open a new connection every 20ms through the mesh (over HBONE
// and mTLS: sameNodeFastPath off). agentd's pod is replaced (its capture
// stays pinned); ztunnel's gets a surge pod that takes the pods over before
// the old one drains. No new connection fails and no stream breaks.
func TestHelmUpgradeUnderLoad(t *testing.T) {
	// The drain timeout outlasts the streams, which then end on their own
	// in the old ztunnel; the grace period covers it.
	l, ctx, closeLab := installedLab(t, ", upgrade: {drainTimeout: 60s}, terminationGracePeriodSeconds: 90")
	// STRICT: a connection that is not captured (plaintext) is refused, so
	// every good one the dialer counts went through the mesh.
	strictNamespace(ctx, t, l, agentsNS)
	echo := startPod(ctx, t, l, "echo", true, "app", "echo", "--listen", ":7070")
	v4, v6 := podIP(t, echo, false), podIP(t, echo, true)
	dialer := startPod(ctx, t, l, "dialer", false, "app", "dialer", "--to", netip.AddrPortFrom(v4, 7070).String(),
		"--interval", "20ms", "--timeout", "5s", "--duration", upgradeDial.String())
	streams := []*corev1.Pod{
		startPod(ctx, t, l, "stream4", false, "app", "stream", "--to", netip.AddrPortFrom(v4, 7070).String(),
			"--interval", "50ms", "--duration", upgradeStreams.String(), "--progress"),
		startPod(ctx, t, l, "stream6", false, "app", "stream", "--to", netip.AddrPortFrom(v6, 7070).String(),
			"--interval", "50ms", "--duration", upgradeStreams.String(), "--progress"),
	}
	waitEnrolled(ctx, t, l, append([]*corev1.Pod{echo, dialer}, streams...)...)
	// The load runs through the mesh before the upgrade.
	waitLoad(ctx, t, l, dialer, streams)
	oldPods := meshPodUIDs(ctx, t, l)

	if err := l.RealNodeTagImage(ctx, "ghcr.io/agentmesh/agentmesh:0.1.0", "ghcr.io/agentmesh/agentmesh:"+nextTag); err != nil {
		t.Fatal(err)
	}
	root, err := lab.ModuleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A replaced pod's logs go with it: watch for the hand-over while the
	// upgrade runs (agentd logs it, and the old ztunnel).
	handedOver := watchLogs(ctx, t, l, "agentd", "ztunnel handed its pods over to a successor")
	start := time.Now()
	out := helm(ctx, t, l, "upgrade", "agentmesh", root+"/deploy/charts/agentmesh", "--namespace", "agentmesh-system",
		"--reuse-values", "--set", "image.tag="+nextTag, "--wait", "--timeout", "5m")
	t.Logf("helm upgrade --wait: %v\n%s", time.Since(start).Round(time.Millisecond), out)
	replaced := waitReplaced(ctx, t, l, oldPods, start)
	t.Logf("TIMING upgrade: new agentd and ztunnel pods ready, the old ones gone (the old ztunnel drained), %v after helm upgrade began", replaced.Round(time.Millisecond))
	if !handedOver() {
		t.Error("agentd never logged that a ztunnel handed its pods over to a successor")
	}
	upgraded := start.Add(replaced)
	// The streams ran to their end; the dialer goes on after the upgrade.
	waitDone(ctx, t, l, streams)
	waitDialsAfter(ctx, t, l, dialer, upgraded, 100)
	dials := meshlab.ParseDialAttempts(podOutput(t, l, dialer))
	// The dialer dials from the moment its container starts: the CNI gate
	// held the container until ztunnel served the pod, so its first
	// connection is in the mesh too. (Without the gate that raced the
	// pod's set-up: usually won here, but CI saw a first connection
	// refused; TestHelmInstall checks that the gate captured its pods.)
	if len(dials) == 0 || !dials[0].OK {
		t.Errorf("the dialer's first connection, made as its container started, failed: %+v", dials[:min(1, len(dials))])
	}
	failed, after := 0, 0
	for _, a := range dials {
		if !a.OK {
			failed++
			t.Errorf("new connection failed at %s (upgrade began %s): %s", a.At.Format("15:04:05.000"), start.Format("15:04:05.000"), a.Error)
		}
		if a.At.After(upgraded) {
			after++
		}
	}
	broken := 0
	for _, s := range streams {
		st, ok := meshlab.LastStreamStats(podOutput(t, l, s))
		if !ok || st.Error != "" || st.BrokenAt != 0 || st.Sent == 0 || st.Echoed != st.Sent {
			broken++
			t.Errorf("stream %s broke: %+v (stats found: %v)", s.Name, st, ok)
		}
	}
	t.Logf("UPGRADE under load on the real node: %d new connections from the dialer's start, %d failed (%d begun after the upgrade was over); %d streams, %d broken",
		len(dials), failed, after, len(streams), broken)
	if after == 0 {
		t.Error("no new connection began after the upgrade was over: the load ended before it")
	}
	closeLab()
}

// waitDialsAfter waits until the dialer has begun n connections after
// since.
func waitDialsAfter(ctx context.Context, t *testing.T, l *lab.Lab, dialer *corev1.Pod, since time.Time, n int) {
	t.Helper()
	for {
		got := 0
		for _, a := range meshlab.ParseDialAttempts(podOutput(t, l, dialer)) {
			if a.At.After(since) {
				got++
			}
		}
		if got >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d new connections after the upgrade, want %d", got, n)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitDone waits until the pods' containers have exited.
func waitDone(ctx context.Context, t *testing.T, l *lab.Lab, pods []*corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		for {
			cur, err := l.Client().CoreV1().Pods(agentsNS).Get(ctx, p.Name, metav1.GetOptions{})
			if err == nil && (cur.Status.Phase == corev1.PodSucceeded || cur.Status.Phase == corev1.PodFailed) {
				if cur.Status.Phase == corev1.PodFailed {
					t.Errorf("pod %s failed: %+v", p.Name, cur.Status.ContainerStatuses)
				}
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("pod %s still runs: %v", p.Name, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// startPod runs the lab image's meshlab with args as pod name in agentsNS
// (its own ServiceAccount), waits until it runs (ready, with a TCP probe
// on 7070 when serving) and returns it.
func startPod(ctx context.Context, t *testing.T, l *lab.Lab, name string, serving bool, args ...string) *corev1.Pod {
	t.Helper()
	cs := l.Client().CoreV1()
	if _, err := cs.ServiceAccounts(agentsNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := corev1.Container{Name: "app", Image: lab.LabImage, ImagePullPolicy: corev1.PullNever,
		Command: append([]string{"/usr/local/bin/meshlab"}, args...)}
	if serving {
		c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(7070)}}, PeriodSeconds: 1}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: agentsNS, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{ServiceAccountName: name, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{c}}}
	if _, err := cs.Pods(agentsNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := cs.Pods(agentsNS).Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.PodIP != "" && (lab.PodReady(p) || !serving && p.Status.Phase != corev1.PodPending) {
			return p
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s not running: %v %+v", name, err, p.Status)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitLoad waits until the dialer has made good connections and every
// stream has echoes.
func waitLoad(ctx context.Context, t *testing.T, l *lab.Lab, dialer *corev1.Pod, streams []*corev1.Pod) {
	t.Helper()
	for {
		good := 0
		for _, a := range meshlab.ParseDialAttempts(podOutput(t, l, dialer)) {
			if a.OK {
				good++
			}
		}
		up := 0
		for _, s := range streams {
			if st, ok := meshlab.LastStreamStats(podOutput(t, l, s)); ok && st.Echoed > 0 && st.Error == "" {
				up++
			}
		}
		if good >= 10 && up == len(streams) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("load not up: %d good connections, %d of %d streams echoing", good, up, len(streams))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// meshPodUIDs are the UIDs of the mesh's node pods (agentd, ztunnel).
func meshPodUIDs(ctx context.Context, t *testing.T, l *lab.Lab) map[string]bool {
	t.Helper()
	pods, err := l.Client().CoreV1().Pods("agentmesh-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, p := range pods.Items {
		if n := p.Labels["app.kubernetes.io/name"]; n == "agentmesh-node" || n == "agentmesh-ztunnel" {
			out[string(p.UID)] = true
		}
	}
	if len(out) != 2 {
		t.Fatalf("%d node pods, want agentd's and ztunnel's", len(out))
	}
	return out
}

// waitReplaced waits until the node's agentd and ztunnel pods are new ones
// of the next tag, ready, and the old ones gone (the old ztunnel once it
// drained), and returns how long after start that was.
func waitReplaced(ctx context.Context, t *testing.T, l *lab.Lab, old map[string]bool, start time.Time) time.Duration {
	t.Helper()
	for {
		pods, err := l.Client().CoreV1().Pods("agentmesh-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fresh, stale := map[string]bool{}, 0
		for _, p := range pods.Items {
			n := p.Labels["app.kubernetes.io/name"]
			if n != "agentmesh-node" && n != "agentmesh-ztunnel" {
				continue
			}
			if old[string(p.UID)] {
				stale++
				continue
			}
			if lab.PodReady(&p) && strings.HasSuffix(p.Spec.Containers[0].Image, ":"+nextTag) {
				fresh[n] = true
			}
		}
		if stale == 0 && len(fresh) == 2 {
			return time.Since(start)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node pods not replaced: %d old ones left, new ready ones %v", stale, fresh)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// watchLogs polls the logs of container in the mesh's pods for a line
// containing what until ctx ends or the returned func is called, which
// reports whether it was seen.
func watchLogs(ctx context.Context, t *testing.T, l *lab.Lab, container, what string) func() bool {
	ctx, cancel := context.WithCancel(ctx)
	seen := make(chan bool, 1)
	go func() {
		for {
			if r, err := containerLogs(l, "agentmesh-system", container); err == nil {
				if b, err := io.ReadAll(r); err == nil && strings.Contains(string(b), what) {
					seen <- true
					return
				}
			}
			select {
			case <-ctx.Done():
				seen <- false
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() bool {
		cancel()
		return <-seen
	}
}

// podOutput is what pod p's container printed so far (its log file).
func podOutput(t *testing.T, l *lab.Lab, p *corev1.Pod) []byte {
	t.Helper()
	r, err := containerLogs(l, agentsNS+"_"+p.Name, "app")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
