package kubelet

import (
	"fmt"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func tcpOn(port int32, failures int32) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}},
		PeriodSeconds: 1, FailureThreshold: failures, SuccessThreshold: 1, TimeoutSeconds: 1}
}

// containerState is the pod's first container status, or a zero one.
func containerState(p *corev1.Pod) corev1.ContainerStatus {
	if p == nil || len(p.Status.ContainerStatuses) == 0 {
		return corev1.ContainerStatus{}
	}
	return p.Status.ContainerStatuses[0]
}

// TestStartupAndLivenessProbes: while the startup probe fails the
// container is neither started nor ready and no other probe runs; after
// failureThreshold failures it is killed and restarted. Once the startup
// probe passes, readiness decides Ready, and a failing liveness probe gets
// the container killed (SIGTERM first) and restarted under the pod's
// restartPolicy.
func TestStartupAndLivenessProbes(t *testing.T) {
	h := startKubelet(t)
	const startPort, readyPort, livePort = 8081, 8080, 8082
	h.rt.setDown(startPort, true)
	h.createPodWith("probed", corev1.RestartPolicyAlways, func(c *corev1.Container) {
		c.StartupProbe, c.ReadinessProbe, c.LivenessProbe = tcpOn(startPort, 2), tcpOn(readyPort, 1), tcpOn(livePort, 1)
	})
	h.eventually("restarted for a failing startup probe", func() (bool, string) {
		cs := containerState(h.pod("probed"))
		return cs.RestartCount >= 1 && cs.LastTerminationState.Terminated != nil, fmt.Sprint(cs)
	})
	if cs := containerState(h.pod("probed")); cs.Ready || (cs.Started != nil && *cs.Started) {
		t.Errorf("container started or ready while its startup probe fails: %+v", cs)
	}
	if n := h.rt.dialed(readyPort) + h.rt.dialed(livePort); n != 0 {
		t.Errorf("readiness or liveness probed %d times before the startup probe passed", n)
	}

	h.rt.setDown(startPort, false)
	h.eventually("started and ready", func() (bool, string) {
		cs := containerState(h.pod("probed"))
		return cs.Ready && cs.Started != nil && *cs.Started, fmt.Sprint(cs)
	})
	restarts := containerState(h.pod("probed")).RestartCount
	proc := h.rt.sandbox("uid-probed").last()
	h.rt.setDown(livePort, true)
	h.eventually("restarted for a failing liveness probe", func() (bool, string) {
		cs := containerState(h.pod("probed"))
		return cs.RestartCount == restarts+1, fmt.Sprint(cs)
	})
	if got := proc.gotSignals(); len(got) == 0 || got[0] != syscall.SIGTERM {
		t.Errorf("killed with %v, want SIGTERM first", got)
	}
	h.rt.setDown(livePort, false)
	h.eventually("ready again", func() (bool, string) {
		cs := containerState(h.pod("probed"))
		return cs.Ready, fmt.Sprint(cs)
	})
}
