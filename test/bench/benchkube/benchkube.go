// Package benchkube holds what the benchmarks that run on a
// Kubernetes-mode lab share (packages services and l7): running a client
// in a pod and reading its JSON line, service accounts, waiting for a
// node's tunnel to route a Service, and percentiles. It cannot live in
// package bench, which imports them.
package benchkube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/test/lab"
)

// RunJSON runs args in pod p for at most limit and decodes the last line
// of its stdout into v. args[1:3] name the client in errors (the
// subcommand and its mode).
func RunJSON(ctx context.Context, p *lab.Pod, limit time.Duration, v any, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	what := strings.Join(args[1:min(3, len(args))], " ")
	out, err := p.Run(ctx, args...)
	if err != nil {
		return fmt.Errorf("run %s: %w: %s", what, err, bytes.TrimSpace(out))
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	last := lines[len(lines)-1]
	if len(last) == 0 {
		return fmt.Errorf("run %s: client printed nothing", what)
	}
	if err := json.Unmarshal(last, v); err != nil {
		return fmt.Errorf("decode %s output %q: %w", what, last, err)
	}
	return nil
}

// ServiceAccount creates service account ns/name.
func ServiceAccount(ctx context.Context, l *lab.Lab, ns, name string) error {
	_, err := l.Client().CoreV1().ServiceAccounts(ns).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create service account %s/%s: %w", ns, name, err)
	}
	return nil
}

// WaitEndpoint waits (at most 30 s) until n1's ztunnel routes service
// (namespace/name) to exactly one ready endpoint, server, over the mesh.
func WaitEndpoint(ctx context.Context, l *lab.Lab, service string, server *lab.Pod) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	want := server.Namespace + "/" + server.Name
	last := "not asked yet"
	for {
		svcs, err := l.ZtunnelServices(ctx, 1, service)
		switch {
		case err != nil:
			last = err.Error()
		case len(svcs) != 1 || len(svcs[0].Endpoints) != 1:
			last = fmt.Sprintf("%+v", svcs)
		default:
			e := svcs[0].Endpoints[0]
			if e.Ready && e.Mesh && e.Workload == want {
				return nil
			}
			last = fmt.Sprintf("endpoint %+v", e)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("n1's ztunnel does not route %s to %s: %w (last: %s)", service, want, context.Cause(ctx), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample such that at least p percent of
// the samples are less than or equal to it. sorted must be in ascending
// order. It returns 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}
