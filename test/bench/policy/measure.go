package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/test/lab"
)

const (
	benchNS    = "policy-bench"
	targetPort = 8080
)

var policyGVR = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "agentpolicies"}

// Result holds one duration per round, each measured from the API call
// (create or delete) being sent.
type Result struct {
	Nodes, Rounds int
	// Create: the create call's round trip.
	Create []time.Duration
	// Informer: a plain informer saw the new policy (the watch floor).
	Informer []time.Duration
	// First and Every: the first node's / every node's target refused.
	First, Every []time.Duration
	// Restored: every node's target reachable again after the delete.
	Restored []time.Duration
}

// run is one Measure's state.
type run struct {
	o       Options
	l       *lab.Lab
	dyn     dynamic.Interface
	client  *lab.Pod
	targets []netip.AddrPort
	seen    *watchFloor
	res     *Result
}

// Measure starts the lab, times every round and removes the lab again.
func Measure(ctx context.Context, o Options) (res *Result, err error) {
	if o, err = o.withDefaults(); err != nil {
		return nil, err
	}
	o.Logger.Info("starting kubernetes-mode lab", "nodes", o.Nodes)
	l, err := lab.New(ctx, lab.Options{Nodes: o.Nodes, BinDir: o.BinDir, KubeBinDir: o.kubeBinDir(), Kube: true,
		StartMesh: true, ReadyTimeout: 45 * time.Second, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("policy bench lab: %w", err)
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	r := &run{o: o, l: l, dyn: dyn, res: &Result{Nodes: o.Nodes, Rounds: o.Rounds}}
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	seen, stop, err := startWatchFloor(ctx, dyn)
	if err != nil {
		return nil, err
	}
	defer stop()
	r.seen = seen
	for i := range o.Rounds {
		if err := r.round(ctx, i); err != nil {
			return r.res, fmt.Errorf("round %d: %w", i, err)
		}
	}
	return r.res, nil
}

// setup makes the namespace, a client pod on n1 and a target pod per node,
// and checks every target answers.
func (r *run) setup(ctx context.Context) error {
	if _, err := r.l.CreateNamespace(ctx, benchNS, map[string]string{"agentmesh.io/dataplane": "enabled"}); err != nil {
		return err
	}
	client, err := r.startPod(ctx, "client", 1, nil)
	if err != nil {
		return err
	}
	r.client = client
	for i := 1; i <= r.o.Nodes; i++ {
		p, err := r.startPod(ctx, fmt.Sprintf("target-n%d", i), i, map[string]string{"app": "policy-target"})
		if err != nil {
			return err
		}
		r.targets = append(r.targets, netip.AddrPortFrom(p.IPv4(), targetPort))
	}
	_, err = r.every(ctx, true, time.Now())
	return err
}

func (r *run) startPod(ctx context.Context, name string, node int, labels map[string]string) (*lab.Pod, error) {
	c := corev1.Container{Name: "echo", Image: "meshlab",
		Command: []string{"meshlab", "app", "echo", "--listen", fmt.Sprintf(":%d", targetPort)},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(targetPort)}},
			PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS, Labels: labels},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("n%d", node), Containers: []corev1.Container{c}}}
	if _, err := r.l.CreatePod(ctx, pod); err != nil {
		return nil, err
	}
	return r.l.WaitMeshPod(ctx, benchNS, name, true)
}

// round applies a Deny policy and deletes it again, timing both.
func (r *run) round(ctx context.Context, i int) error {
	name := fmt.Sprintf("deny-%d", i)
	pol := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "agentmesh.io/v1alpha1", "kind": "AgentPolicy",
		"metadata": map[string]any{"name": name, "namespace": benchNS},
		"spec": map[string]any{
			"podSelector": map[string]any{"matchLabels": map[string]any{"app": "policy-target"}},
			"action":      "Deny",
			"rules":       []any{map[string]any{"ports": []any{map[string]any{"port": int64(targetPort)}}}},
		},
	}}
	res := r.dyn.Resource(policyGVR).Namespace(benchNS)
	sent := time.Now()
	if _, err := res.Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create policy: %w", err)
	}
	r.res.Create = append(r.res.Create, time.Since(sent))
	times, err := r.every(ctx, false, sent)
	if err != nil {
		return fmt.Errorf("wait for enforcement: %w", err)
	}
	r.res.First = append(r.res.First, minOf(times))
	r.res.Every = append(r.res.Every, maxOf(times))
	seen, err := r.seen.wait(ctx, name)
	if err != nil {
		return err
	}
	r.res.Informer = append(r.res.Informer, seen.Sub(sent))
	sent = time.Now()
	if err := res.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete policy: %w", err)
	}
	times, err = r.every(ctx, true, sent)
	if err != nil {
		return fmt.Errorf("wait for the policy to be lifted: %w", err)
	}
	r.res.Restored = append(r.res.Restored, maxOf(times))
	r.o.Logger.Info("round done", "round", i, "every_node_ms", maxOf(r.res.Every[i:]).Milliseconds())
	return nil
}

// every probes every target in parallel until each shows want and
// returns the per-target times since start; 30s bound.
func (r *run) every(ctx context.Context, want bool, start time.Time) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, 30*time.Second, fmt.Errorf("targets not allowed=%v after 30s", want))
	defer cancel()
	out := make([]time.Duration, len(r.targets))
	errs := make([]error, len(r.targets))
	var wg sync.WaitGroup
	for i, dst := range r.targets {
		wg.Go(func() { out[i], errs[i] = waitFor(ctx, r.client.NetnsPath(), dst, want, start, r.o.ProbeEvery) })
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func minOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds[1:] {
		m = min(m, d)
	}
	return m
}

func maxOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds[1:] {
		m = max(m, d)
	}
	return m
}
