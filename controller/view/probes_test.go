package view

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func httpProbe(port intstr.IntOrString) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: port}}}
}

func tcpProbe(port intstr.IntOrString) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: port}}}
}

func grpcProbe(port int32) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: port}}}
}

func withHost(pr *corev1.Probe, host string) *corev1.Probe {
	if pr.HTTPGet != nil {
		pr.HTTPGet.Host = host
	}
	if pr.TCPSocket != nil {
		pr.TCPSocket.Host = host
	}
	return pr
}

// ctr is a container with named ports ("name", port, ...) and probes.
func ctr(ready, live, start *corev1.Probe, ports ...any) corev1.Container {
	c := corev1.Container{Name: "c", ReadinessProbe: ready, LivenessProbe: live, StartupProbe: start}
	for i := 0; i+1 < len(ports); i += 2 {
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: ports[i].(string), ContainerPort: int32(ports[i+1].(int))})
	}
	return c
}

func sidecar(c corev1.Container) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	c.RestartPolicy = &always
	return c
}

var (
	num  = intstr.FromInt32
	name = intstr.FromString
)

func TestProbePorts(t *testing.T) {
	podIP := netip.MustParseAddr("10.0.0.1")
	for _, tc := range []struct {
		name       string
		containers []corev1.Container
		inits      []corev1.Container
		want       []uint16
	}{
		{"no probes", []corev1.Container{ctr(nil, nil, nil)}, nil, nil},
		{"readiness httpGet, numeric", []corev1.Container{ctr(httpProbe(num(8080)), nil, nil)}, nil, []uint16{8080}},
		{"readiness httpGet, named", []corev1.Container{ctr(httpProbe(name("http")), nil, nil, "http", 8080)}, nil, []uint16{8080}},
		{"liveness tcpSocket, numeric", []corev1.Container{ctr(nil, tcpProbe(num(5432)), nil)}, nil, []uint16{5432}},
		{"liveness tcpSocket, named", []corev1.Container{ctr(nil, tcpProbe(name("db")), nil, "http", 8080, "db", 5432)}, nil, []uint16{5432}},
		{"startup grpc", []corev1.Container{ctr(nil, nil, grpcProbe(9000))}, nil, []uint16{9000}},
		{"all three, sorted", []corev1.Container{ctr(httpProbe(num(8080)), tcpProbe(num(8081)), grpcProbe(7000))}, nil,
			[]uint16{7000, 8080, 8081}},
		{"one port probed thrice is listed once", []corev1.Container{ctr(httpProbe(name("http")), tcpProbe(num(8080)), httpProbe(num(8080)), "http", 8080)}, nil,
			[]uint16{8080}},
		{"every container", []corev1.Container{ctr(httpProbe(num(8080)), nil, nil), ctr(nil, tcpProbe(name("admin")), nil, "admin", 9901)}, nil,
			[]uint16{8080, 9901}},
		{"a name resolves in the probing container only", []corev1.Container{ctr(nil, nil, nil, "http", 8080), ctr(httpProbe(name("http")), nil, nil)}, nil, nil},
		{"unknown port name", []corev1.Container{ctr(httpProbe(name("nope")), nil, nil, "http", 8080)}, nil, nil},
		{"number written as a string", []corev1.Container{ctr(tcpProbe(name("8443")), nil, nil)}, nil, []uint16{8443}},
		{"port out of range", []corev1.Container{ctr(httpProbe(num(0)), tcpProbe(num(70000)), grpcProbe(-1))}, nil, nil},
		{"exec probes reach no port", []corev1.Container{ctr(&corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}, nil, nil)}, nil, nil},
		{"host is the pod's address", []corev1.Container{ctr(withHost(httpProbe(num(8080)), "10.0.0.1"), nil, nil)}, nil, []uint16{8080}},
		{"host is elsewhere", []corev1.Container{ctr(withHost(httpProbe(num(8080)), "192.0.2.7"), withHost(tcpProbe(num(8081)), "db.example"), nil)}, nil, nil},
		{"sidecar init container", []corev1.Container{ctr(nil, nil, nil)}, []corev1.Container{sidecar(ctr(httpProbe(name("metrics")), nil, nil, "metrics", 15090))},
			[]uint16{15090}},
		{"plain init container is not probed", []corev1.Container{ctr(nil, nil, nil)}, []corev1.Container{ctr(httpProbe(num(8080)), nil, nil)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pod("a", "p", "n1", podIP.String(), func(p *corev1.Pod) {
				p.Spec.Containers, p.Spec.InitContainers = tc.containers, tc.inits
			})
			if got := probePorts(p, []netip.Addr{podIP}); !slices.Equal(got, tc.want) {
				t.Errorf("probePorts = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAuthzProbePorts: the probe ports reach the workload's Authz (which
// goes to its own node only), whatever the policies.
func TestAuthzProbePorts(t *testing.T) {
	s := Compute(Inputs{TrustDomain: "td",
		Namespaces: []*corev1.Namespace{nsAnnotated("a", nil)},
		Pods: []*corev1.Pod{
			pod("a", "probed", "n1", "10.0.0.1", func(p *corev1.Pod) {
				p.Spec.Containers = []corev1.Container{ctr(httpProbe(name("http")), tcpProbe(num(8081)), nil, "http", 8080)}
			}),
			pod("a", "plain", "n1", "10.0.0.2"),
		},
	})
	if got := byName(s, "probed").Authz.ProbePorts; !slices.Equal(got, []uint16{8080, 8081}) {
		t.Errorf("probed: ProbePorts = %v, want [8080 8081]", got)
	}
	if got := byName(s, "plain").Authz.ProbePorts; got != nil {
		t.Errorf("plain: ProbePorts = %v, want none", got)
	}
}
