package view

import (
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probePorts are the pod's ports the kubelet probes, sorted, each once:
// the httpGet, tcpSocket and grpc handlers of the readiness, liveness and
// startup probes of its containers and sidecars (init containers with
// restartPolicy Always, the only init containers the kubelet probes). A
// named port is looked up in the probing container's own ports, as the
// kubelet does; a probe the kubelet could not resolve, or whose host is
// not one of ips (the pod's addresses), reaches no port of the pod and is
// left out. Nil when nothing is probed.
func probePorts(p *corev1.Pod, ips []netip.Addr) []uint16 {
	var out []uint16
	for i := range p.Spec.InitContainers {
		if c := &p.Spec.InitContainers[i]; isSidecar(c) {
			out = append(out, containerProbePorts(c, ips)...)
		}
	}
	for i := range p.Spec.Containers {
		out = append(out, containerProbePorts(&p.Spec.Containers[i], ips)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// isSidecar reports whether init container c runs alongside the others
// (restartPolicy Always).
func isSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// containerProbePorts are the ports c's probes reach in the pod.
func containerProbePorts(c *corev1.Container, ips []netip.Addr) []uint16 {
	var out []uint16
	for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
		if pr == nil {
			continue
		}
		if port, ok := handlerPort(c, &pr.ProbeHandler, ips); ok {
			out = append(out, port)
		}
	}
	return out
}

// handlerPort is the pod port a probe handler connects to; ok is false
// for exec probes, unresolvable ports and other hosts.
func handlerPort(c *corev1.Container, h *corev1.ProbeHandler, ips []netip.Addr) (uint16, bool) {
	switch {
	case h.HTTPGet != nil && podHost(h.HTTPGet.Host, ips):
		return resolvePort(c, h.HTTPGet.Port)
	case h.TCPSocket != nil && podHost(h.TCPSocket.Host, ips):
		return resolvePort(c, h.TCPSocket.Port)
	case h.GRPC != nil:
		return validPort(int(h.GRPC.Port))
	}
	return 0, false
}

// podHost reports whether a probe's host is the pod: unset (the kubelet
// then dials the pod's IP) or one of its addresses.
func podHost(host string, ips []netip.Addr) bool {
	if host == "" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && slices.Contains(ips, a.Unmap())
}

// resolvePort resolves a probe port as the kubelet does: a number, or the
// name of one of c's ports (failing that, a number written as a string).
func resolvePort(c *corev1.Container, port intstr.IntOrString) (uint16, bool) {
	if port.Type == intstr.Int {
		return validPort(port.IntValue())
	}
	for _, cp := range c.Ports {
		if cp.Name == port.StrVal {
			return validPort(int(cp.ContainerPort))
		}
	}
	n, err := strconv.Atoi(port.StrVal)
	if err != nil {
		return 0, false
	}
	return validPort(n)
}

func validPort(n int) (uint16, bool) {
	if n < 1 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}
