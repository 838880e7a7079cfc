package kube

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// grpcPort is where the lab's agents serve the gRPC health service.
const grpcPort = 8081

// TestGRPCRouteLab: a GRPCRoute whose parent is the Service
// data-validator (GAMMA) routes a grpc-go client's calls, each on its own
// HTTP/2 stream of one connection: grpc.health.v1.Health/List goes to
// data-validator-v2 only, calls with the metadata x-variant: b too, and
// the rest are split 80/20 between v1 and v2 (within ±4 points over
// 2000 calls). The route's status says Accepted and ResolvedRefs.
func TestGRPCRouteLab(t *testing.T) {
	l := newLab(t, 2, func(o *lab.Options) { o.ZtunnelArgs = append(o.ZtunnelArgs, "--http-per-request") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	namespace(ctx, t, l, svcNS, true, "planner", "dv")
	caller := startPod(ctx, t, l, agentPod(svcNS, "planner", "planner", "n1"), true)
	for _, v := range []string{"v1", "v2"} {
		name := "dv-" + v
		p := agentPod(svcNS, name, "dv", "n2")
		p.Labels = map[string]string{"app": "dv", "version": v}
		p.Spec.Containers[0].Command = append(p.Spec.Containers[0].Command, "--grpc-health", fmt.Sprintf(":%d", grpcPort))
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "grpc", ContainerPort: grpcPort, Protocol: corev1.ProtocolTCP}}
		startPod(ctx, t, l, p, true)
	}
	grpcProto := "grpc"
	for name, selector := range map[string]map[string]string{
		"data-validator":    {"app": "dv"},
		"data-validator-v1": {"app": "dv", "version": "v1"},
		"data-validator-v2": {"app": "dv", "version": "v2"},
	} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: svcNS},
			Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Name: "grpc", Port: grpcPort,
				TargetPort: intstr.FromString("grpc"), Protocol: corev1.ProtocolTCP, AppProtocol: &grpcProto}}}}
		if _, err := l.Client().CoreV1().Services(svcNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for svc, n := range map[string]int{"agents/data-validator": 2, "agents/data-validator-v1": 1, "agents/data-validator-v2": 1} {
		waitEndpoints(ctx, t, l, 1, svc, n)
	}
	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		t.Fatal(err)
	}
	applySpec(ctx, t, dyn, grpcRouteGVR, "gateway.networking.k8s.io/v1", "GRPCRoute", svcNS, "dv-grpc", fmt.Sprintf(`
parentRefs: [{group: "", kind: Service, name: data-validator, port: %[1]d}]
rules:
- matches: [{method: {service: grpc.health.v1.Health, method: List}}]
  backendRefs: [{name: data-validator-v2, port: %[1]d}]
- matches: [{headers: [{name: x-variant, value: b}]}]
  backendRefs: [{name: data-validator-v2, port: %[1]d}]
- backendRefs:
  - {name: data-validator-v1, port: %[1]d, weight: 80}
  - {name: data-validator-v2, port: %[1]d, weight: 20}
`, grpcPort))
	waitRouteWeights(ctx, t, l, "80/20")
	waitRouteStatus(ctx, t, dyn, grpcRouteGVR, svcNS, "dv-grpc")

	to := fmt.Sprintf("data-validator:%d", grpcPort)
	call := func(n int, method, md string) meshlab.GRPCCallResult {
		t.Helper()
		args := []string{l.Bin("meshlab"), "app", "grpc-call", "--to", to, "--method", method, "--n", fmt.Sprint(n)}
		if md != "" {
			args = append(args, "--metadata", md)
		}
		r := runLines[meshlab.GRPCCallResult](ctx, t, caller, args...)
		if len(r) != 1 || r[0].Calls != n || r[0].Codes["OK"] != n {
			t.Fatalf("grpc-call %s x%d %s: %+v, want %d OK", method, n, md, r, n)
		}
		return r[0]
	}
	const n = 2000
	r := call(n, "Check", "")
	share := 100 * float64(r.By["dv-v2"]) / n
	t.Logf("GRPCRoute 80/20 over %d Check calls on one connection: %v (%.2f %% to v2)", n, r.By, share)
	if r.By["dv-v1"]+r.By["dv-v2"] != n || share < 16 || share > 24 {
		t.Errorf("80/20: v2 answered %.2f %% of %d calls (%v), want 20 ± 4 points", share, n, r.By)
	}
	if r := call(200, "List", ""); r.By["dv-v2"] != 200 {
		t.Errorf("Health/List by method match: %v, want all 200 on dv-v2", r.By)
	}
	if r := call(200, "Check", "x-variant=b"); r.By["dv-v2"] != 200 {
		t.Errorf("Check with x-variant: b: %v, want all 200 on dv-v2", r.By)
	}
}
