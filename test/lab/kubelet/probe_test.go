package kubelet

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// loopRuntime dials for real, on loopback.
type loopRuntime struct{ *fakeRuntime }

func (loopRuntime) DialNode(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func TestProbes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Check") != "yes" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/down") {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	port := int32(ap.Port())
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := int32(netip.MustParseAddrPort(closed.Addr().String()).Port())
	closed.Close()

	k := &Kubelet{opts: Options{Runtime: loopRuntime{}}, log: slog.New(slog.DiscardHandler)}
	w := &worker{k: k, log: k.log, sandbox: &fakeSandbox{ips: []netip.Addr{ap.Addr()}}}
	w.ctr.spec = &corev1.Container{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port}}}
	hdr := []corev1.HTTPHeader{{Name: "X-Check", Value: "yes"}}
	httpGet := func(path string, p intstr.IntOrString, h []corev1.HTTPHeader) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: p, HTTPHeaders: h}}
	}
	for _, tc := range []struct {
		name string
		h    corev1.ProbeHandler
		ok   bool
	}{
		{"http 200 by named port", httpGet("/healthz", intstr.FromString("http"), hdr), true},
		{"http 503", httpGet("/down", intstr.FromInt32(port), hdr), false},
		{"http headers sent", httpGet("/healthz", intstr.FromInt32(port), nil), false},
		{"http refused", httpGet("/", intstr.FromInt32(closedPort), hdr), false},
		{"unknown port name", httpGet("/", intstr.FromString("nope"), hdr), false},
		{"tcp open", corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}}, true},
		{"tcp refused", corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(closedPort)}}, false},
		{"exec unsupported", corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, false},
	} {
		err := w.runProbe(context.Background(), &corev1.Probe{ProbeHandler: tc.h, TimeoutSeconds: 1})
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestGRPCProbe: a grpc probe passes when the health service answers
// SERVING for the probe's service (default ""), and fails otherwise.
func TestGRPCProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("db", healthpb.HealthCheckResponse_NOT_SERVING)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() { srv.Stop(); <-done }()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	k := &Kubelet{opts: Options{Runtime: loopRuntime{}}, log: slog.New(slog.DiscardHandler)}
	w := &worker{k: k, log: k.log, sandbox: &fakeSandbox{ips: []netip.Addr{ap.Addr()}}}
	w.ctr.spec = &corev1.Container{}
	for _, tc := range []struct {
		name    string
		port    uint16
		service *string
		ok      bool
	}{
		{"serving", ap.Port(), nil, true},
		{"not serving", ap.Port(), ptr.To("db"), false},
		{"unknown service", ap.Port(), ptr.To("nope"), false},
		{"refused", closedPort(t), nil, false},
	} {
		pr := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: int32(tc.port), Service: tc.service}}, TimeoutSeconds: 1}
		if err := w.runProbe(context.Background(), pr); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String()).Port()
}

func TestProbeThresholds(t *testing.T) {
	k := &Kubelet{opts: Options{Runtime: newFakeRuntime()}, log: slog.New(slog.DiscardHandler)}
	rt := k.opts.Runtime.(*fakeRuntime)
	w := &worker{k: k, log: k.log, sandbox: &fakeSandbox{ips: []netip.Addr{netip.MustParseAddr("198.19.1.2")}}}
	w.ctr.spec = &corev1.Container{ReadinessProbe: &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}},
		SuccessThreshold: 2, FailureThreshold: 3, PeriodSeconds: 1}}
	w.ctr.started = true
	w.ctr.probes = newProbers(w.ctr.spec, time.Now(), true)
	steps := []struct {
		up, ready bool
	}{
		{true, false}, {true, true}, // two successes to become ready
		{false, true}, {false, true}, {true, true}, // a success resets the failure count
		{false, true}, {false, true}, {false, false}, // three failures in a row
		{true, false}, {true, true},
	}
	for i, s := range steps {
		rt.setListening(s.up)
		w.probe(context.Background(), w.ctr.probes[0])
		if w.ctr.ready != s.ready {
			t.Fatalf("step %d (up=%v): ready %v, want %v", i, s.up, w.ctr.ready, s.ready)
		}
	}
}
