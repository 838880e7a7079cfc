package controlplane

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// informer is the baseline: a plain client-go Service informer in this
// process, noting when it sees each change of the target service.
type informer struct {
	marks  *marks
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startInformer watches Services in the target's namespace and returns once
// its cache has synced.
func startInformer(ctx context.Context, c kubernetes.Interface, ns, name string, kick chan struct{}) (*informer, error) {
	in := &informer{marks: newMarks(kick)}
	f := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Services().Informer()
	note := func(obj any) {
		now := time.Now()
		s, ok := obj.(*corev1.Service)
		if !ok || s.Name != name {
			return
		}
		if k := markOf(servicePorts(s)); k > 0 {
			in.marks.record(k, now)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: note,
		UpdateFunc: func(_, obj any) { note(obj) }}); err != nil {
		return nil, fmt.Errorf("informer handler: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	in.wg.Go(func() { f.Start(runCtx.Done()); f.WaitForCacheSync(runCtx.Done()); <-runCtx.Done(); f.Shutdown() })
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		in.Close()
		return nil, fmt.Errorf("baseline informer: %w", ctx.Err())
	}
	return in, nil
}

// Close stops the informer and waits for it.
func (in *informer) Close() {
	in.cancel()
	in.wg.Wait()
}

// servicePorts are a Service's port names as the mesh's model has them
// (only names matter to markOf).
func servicePorts(s *corev1.Service) []meshconfig.ServicePort {
	out := make([]meshconfig.ServicePort, 0, len(s.Spec.Ports))
	for _, p := range s.Spec.Ports {
		out = append(out, meshconfig.ServicePort{Name: p.Name})
	}
	return out
}
