package kubelet

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// harness runs one Kubelet on a fake clientset and a fake runtime.
type harness struct {
	t      *testing.T
	client kubernetes.Interface
	rt     *fakeRuntime
}

func startKubelet(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, client: fake.NewClientset(), rt: newFakeRuntime()}
	k, err := New(Options{Node: "n1", Client: h.client, Runtime: h.rt,
		Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("fd00:18::1")},
		PodCIDRs:  []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("fd00:19:1::/64")},
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Heartbeat: 200 * time.Millisecond, MaxGrace: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := k.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		k.mu.Lock()
		defer k.mu.Unlock()
		if len(k.workers) != 0 {
			t.Errorf("%d pod workers still running after Run returned", len(k.workers))
		}
	})
	select {
	case <-k.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("kubelet not ready")
	}
	return h
}

// eventually polls cond for up to 10s.
func (h *harness) eventually(what string, cond func() (bool, string)) {
	h.t.Helper()
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
	}
	h.t.Fatalf("timed out waiting for %s; last: %s", what, last)
}

// pod gets the pod or returns nil.
func (h *harness) pod(name string) *corev1.Pod {
	p, err := h.client.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return p
}

// createPod creates a pod bound to n1 running `meshlab app echo`, with a
// readiness probe.
func (h *harness) createPod(name string, policy corev1.RestartPolicy, probe *corev1.Probe) *corev1.Pod {
	h.t.Helper()
	return h.createPodWith(name, policy, func(c *corev1.Container) { c.ReadinessProbe = probe })
}

// createPodWith is createPod with its container set up by mod.
func (h *harness) createPodWith(name string, policy corev1.RestartPolicy, mod func(*corev1.Container)) *corev1.Pod {
	h.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{NodeName: "n1", RestartPolicy: policy, TerminationGracePeriodSeconds: ptr.To(int64(30)),
			Containers: []corev1.Container{{Name: "app", Image: "meshlab", Command: []string{"/bin/true"},
				Args: []string{"--listen", ":$(PORT)"},
				Env: []corev1.EnvVar{{Name: "PORT", Value: "8080"},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}}}}}}
	mod(&p.Spec.Containers[0])
	out, err := h.client.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func tcpProbe() *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}
}

func podCond(p *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

func TestRegistersNodeAndLease(t *testing.T) {
	h := startKubelet(t)
	n, err := h.client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"198.19.1.0/24", "fd00:19:1::/64"}; !slices.Equal(n.Spec.PodCIDRs, want) {
		t.Errorf("podCIDRs %v, want %v", n.Spec.PodCIDRs, want)
	}
	var ips []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ips = append(ips, a.Address)
		}
	}
	if want := []string{"198.18.0.1", "fd00:18::1"}; !slices.Equal(ips, want) {
		t.Errorf("internal IPs %v, want %v", ips, want)
	}
	if len(n.Status.Conditions) != 1 || n.Status.Conditions[0].Type != corev1.NodeReady ||
		n.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("conditions %+v, want Ready=True", n.Status.Conditions)
	}
	var first time.Time
	h.eventually("lease renewed", func() (bool, string) {
		l, err := h.client.CoordinationV1().Leases(leaseNamespace).Get(context.Background(), "n1", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if first.IsZero() {
			first = l.Spec.RenewTime.Time
		}
		return l.Spec.RenewTime.After(first), l.Spec.RenewTime.String()
	})
}

func TestPodLifecycle(t *testing.T) {
	h := startKubelet(t)
	h.createPod("echo", corev1.RestartPolicyAlways, tcpProbe())
	h.eventually("pod ready", func() (bool, string) {
		p := h.pod("echo")
		return p != nil && podCond(p, corev1.PodReady) == corev1.ConditionTrue, fmt.Sprint(p.Status)
	})
	p := h.pod("echo")
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP != "198.19.1.2" || p.Status.HostIP != "198.18.0.1" ||
		len(p.Status.PodIPs) != 2 || p.Status.PodIPs[1].IP != "fd00:19:1::2" {
		t.Errorf("status %+v", p.Status)
	}
	for _, c := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady} {
		if podCond(p, c) != corev1.ConditionTrue {
			t.Errorf("condition %s not True: %+v", c, p.Status.Conditions)
		}
	}
	cs := p.Status.ContainerStatuses
	if len(cs) != 1 || !cs[0].Ready || cs[0].State.Running == nil {
		t.Errorf("container statuses %+v", cs)
	}
	sb := h.rt.sandbox("uid-echo")
	proc := sb.last()
	if want := []string{"/bin/true", "--listen", ":8080"}; !slices.Equal(proc.args, want) {
		t.Errorf("args %q, want %q", proc.args, want)
	}
	if !slices.Contains(proc.env, "POD_IP=198.19.1.2") || !slices.Contains(proc.env, "PORT=8080") {
		t.Errorf("env %q lacks POD_IP or PORT", proc.env)
	}

	h.rt.setListening(false)
	h.eventually("not ready after probe fails", func() (bool, string) {
		p := h.pod("echo")
		return podCond(p, corev1.PodReady) == corev1.ConditionFalse, fmt.Sprint(p.Status.Conditions)
	})
	h.rt.setListening(true)

	proc.exit(1)
	h.eventually("restarted", func() (bool, string) {
		p := h.pod("echo")
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].RestartCount == 1 && cs[0].Ready && cs[0].LastTerminationState.Terminated != nil &&
			cs[0].LastTerminationState.Terminated.ExitCode == 1, fmt.Sprint(cs)
	})

	// Deletion as the apiserver does it: deletionTimestamp set, object kept.
	p = h.pod("echo")
	p.DeletionTimestamp, p.DeletionGracePeriodSeconds = ptr.To(metav1.Now()), ptr.To(int64(30))
	if _, err := h.client.CoreV1().Pods("default").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("pod object deleted", func() (bool, string) { return h.pod("echo") == nil, "still there" })
	if !sb.isRemoved() {
		t.Error("sandbox not removed")
	}
	last := sb.last()
	if got := last.gotSignals(); len(got) == 0 || got[0] != syscall.SIGTERM {
		t.Errorf("signals %v, want SIGTERM first", got)
	}
}

func TestRestartPolicyNever(t *testing.T) {
	h := startKubelet(t)
	for _, tc := range []struct {
		name  string
		code  int
		phase corev1.PodPhase
	}{{"ok", 0, corev1.PodSucceeded}, {"bad", 3, corev1.PodFailed}} {
		h.createPod(tc.name, corev1.RestartPolicyNever, nil)
		h.eventually(tc.name+" running", func() (bool, string) {
			p := h.pod(tc.name)
			return p != nil && p.Status.Phase == corev1.PodRunning && PodReadyForTest(p), fmt.Sprint(p.Status.Phase)
		})
		h.rt.sandbox("uid-" + tc.name).last().exit(tc.code)
		h.eventually(tc.name+" "+string(tc.phase), func() (bool, string) {
			p := h.pod(tc.name)
			cs := p.Status.ContainerStatuses
			return p.Status.Phase == tc.phase && len(cs) == 1 && cs[0].State.Terminated != nil &&
				cs[0].State.Terminated.ExitCode == int32(tc.code) && cs[0].RestartCount == 0, fmt.Sprint(p.Status)
		})
	}
}

// PodReadyForTest is the pod's Ready condition.
func PodReadyForTest(p *corev1.Pod) bool { return podCond(p, corev1.PodReady) == corev1.ConditionTrue }

func TestPodDeletedByForce(t *testing.T) {
	h := startKubelet(t)
	h.createPod("forced", corev1.RestartPolicyAlways, nil)
	h.eventually("running", func() (bool, string) {
		sb := h.rt.sandbox("uid-forced")
		return sb != nil && sb.last() != nil, "no process"
	})
	if err := h.client.CoreV1().Pods("default").Delete(context.Background(), "forced", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("sandbox removed", func() (bool, string) { return h.rt.sandbox("uid-forced").isRemoved(), "" })
}

// TestPreStopSleep: a preStop sleep hook keeps the process running (no
// signal) for its seconds, within the grace period (the harness caps it
// at 300ms), before SIGTERM; an exec hook is not run and does not delay.
func TestPreStopSleep(t *testing.T) {
	h := startKubelet(t)
	for _, tc := range []struct {
		name  string
		hook  corev1.LifecycleHandler
		delay time.Duration // at least this long between deletion and SIGTERM
	}{
		{"sleeper", corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 30}}, 300 * time.Millisecond},
		{"execer", corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/true"}}}, 0},
	} {
		h.createPodWith(tc.name, corev1.RestartPolicyAlways, func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PreStop: &tc.hook}
		})
		var proc *fakeProc
		h.eventually(tc.name+" running", func() (bool, string) {
			sb := h.rt.sandbox("uid-" + tc.name)
			if sb == nil || sb.last() == nil {
				return false, "no process"
			}
			proc = sb.last()
			return true, ""
		})
		deleted := time.Now()
		// The fake clientset's UpdateStatus writes the whole object and
		// checks no resourceVersion: a status the kubelet writes from its
		// copy just after this update takes the deletion back (CI saw the
		// execer never terminated). Mark it again until the kubelet has
		// it, as the API server's graceful deletion would persist.
		h.eventually(tc.name+" pod object deleted", func() (bool, string) {
			p := h.pod(tc.name)
			if p == nil {
				return true, ""
			}
			if p.DeletionTimestamp == nil {
				p.DeletionTimestamp, p.DeletionGracePeriodSeconds = ptr.To(metav1.Now()), ptr.To(int64(30))
				if _, err := h.client.CoreV1().Pods("default").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
					return false, err.Error()
				}
			}
			return false, "still there"
		})
		if got := proc.gotSignals(); len(got) == 0 || got[0] != syscall.SIGTERM {
			t.Errorf("%s: signals %v, want SIGTERM first", tc.name, got)
		} else if waited := proc.firstSignal().Sub(deleted); waited < tc.delay {
			t.Errorf("%s: SIGTERM %s after the deletion, want the hook's %s first", tc.name, waited, tc.delay)
		}
	}
}
