package view

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// nodeIndex indexes pods by spec.nodeName.
const nodeIndex = "node"

// Options configure a Watcher.
type Options struct {
	TrustDomain string
	// Debounce is how long a burst of events must be quiet before the view
	// is recomputed (default 100ms); MaxDelay bounds the wait (default 1s).
	Debounce, MaxDelay time.Duration
	// ResyncPeriod of the informers (0: none).
	ResyncPeriod time.Duration
	Logger       *slog.Logger
}

// Sink takes what a Watcher produces.
type Sink interface {
	// Snapshot receives every computed snapshot, the first once the caches
	// have synced. It is called from Run's goroutine, one at a time.
	Snapshot(*Snapshot)
	// NodeDeleted is called with the name of every deleted Node, after the
	// cache has dropped it (so NodeExists is already false). It runs on an
	// informer goroutine and must not block.
	NodeDeleted(node string)
}

// Watcher runs shared informers on Namespaces, Pods, Services,
// EndpointSlices, AgentPolicies, Nodes and ServiceAccounts and computes a
// Snapshot after each burst of changes. Nodes and ServiceAccounts do not enter the
// snapshot: they gate who may stream (NodeExists) and what the CA signs
// (ServiceAccountExists).
type Watcher struct {
	o       Options
	factory informers.SharedInformerFactory
	podInf  cache.SharedIndexInformer
	nodeInf cache.SharedIndexInformer
	pods    corelisters.PodLister
	nss     corelisters.NamespaceLister
	svcs    corelisters.ServiceLister
	slices  discoverylisters.EndpointSliceLister
	nodes   corelisters.NodeLister
	sas     corelisters.ServiceAccountLister
	// policyFactory runs the AgentPolicy informer; policies is its cache.
	policyFactory dynamicinformer.DynamicSharedInformerFactory
	policies      cache.Indexer
	synced        []cache.InformerSynced
	kick          chan struct{} // cap 1: something changed
}

// NewWatcher prepares informers on client, and on dyn for AgentPolicies;
// Run starts them. Its caches (NodeExists, Policy, PodsOnNode, ...) may be
// read from the start; they are empty until Run has synced them.
func NewWatcher(client kubernetes.Interface, dyn dynamic.Interface, o Options) (*Watcher, error) {
	if o.Debounce <= 0 {
		o.Debounce = 100 * time.Millisecond
	}
	if o.MaxDelay < o.Debounce {
		o.MaxDelay = max(time.Second, o.Debounce)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	f := informers.NewSharedInformerFactory(client, o.ResyncPeriod)
	w := &Watcher{o: o, factory: f, kick: make(chan struct{}, 1)}
	w.podInf = f.Core().V1().Pods().Informer()
	if err := w.podInf.AddIndexers(cache.Indexers{nodeIndex: podNode}); err != nil {
		return nil, fmt.Errorf("add pod node index: %w", err)
	}
	w.pods = f.Core().V1().Pods().Lister()
	w.nss = f.Core().V1().Namespaces().Lister()
	w.svcs = f.Core().V1().Services().Lister()
	w.slices = f.Discovery().V1().EndpointSlices().Lister()
	for _, inf := range []cache.SharedIndexInformer{w.podInf, f.Core().V1().Namespaces().Informer(),
		f.Core().V1().Services().Informer(), f.Discovery().V1().EndpointSlices().Informer()} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { w.poke() }, UpdateFunc: func(any, any) { w.poke() }, DeleteFunc: func(any) { w.poke() },
		}); err != nil {
			return nil, fmt.Errorf("add event handler: %w", err)
		}
		w.synced = append(w.synced, inf.HasSynced)
	}
	w.watchGates(f)
	if err := w.watchPolicies(dyn); err != nil {
		return nil, err
	}
	return w, nil
}

func podNode(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{p.Spec.NodeName}, nil
}

func (w *Watcher) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run starts the informers, waits for their caches, then hands sink a
// snapshot after every burst of changes, and every deleted Node, until ctx
// is done. It returns after the informers have stopped. Call it once.
func (w *Watcher) Run(ctx context.Context, sink Sink) error {
	if _, err := w.nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) { w.nodeDeleted(obj, sink) },
	}); err != nil {
		return fmt.Errorf("add node event handler: %w", err)
	}
	defer w.factory.Shutdown()
	defer w.policyFactory.Shutdown()
	w.factory.Start(ctx.Done())
	w.policyFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), w.synced...) {
		return errors.New("wait for informer caches: " + context.Cause(ctx).Error())
	}
	w.o.Logger.Info("informer caches synced")
	for {
		sink.Snapshot(w.Compute())
		if !w.settle(ctx) {
			return nil
		}
	}
}

// settle waits for a change, then for the burst to be quiet for Debounce
// (at most MaxDelay). It returns false when ctx is done.
func (w *Watcher) settle(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-w.kick:
	}
	deadline := time.NewTimer(w.o.MaxDelay)
	defer deadline.Stop()
	quiet := time.NewTimer(w.o.Debounce)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-w.kick:
			quiet.Reset(w.o.Debounce)
		case <-quiet.C:
			return true
		case <-deadline.C:
			return true
		}
	}
}

// Compute builds a snapshot from the informer caches now.
func (w *Watcher) Compute() *Snapshot {
	in := Inputs{TrustDomain: w.o.TrustDomain}
	in.Namespaces, _ = w.nss.List(labels.Everything())
	in.Pods, _ = w.pods.List(labels.Everything())
	in.Services, _ = w.svcs.List(labels.Everything())
	in.Slices, _ = w.slices.List(labels.Everything())
	in.Policies = w.listPolicies()
	return Compute(in)
}

// PodsOnNode returns the cached pods whose spec.nodeName is node. The
// objects are shared with the cache: do not modify them.
func (w *Watcher) PodsOnNode(node string) []*corev1.Pod {
	objs, err := w.podInf.GetIndexer().ByIndex(nodeIndex, node)
	if err != nil {
		return nil
	}
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

// HasSynced reports whether every informer cache has synced.
func (w *Watcher) HasSynced() bool {
	for _, s := range w.synced {
		if !s() {
			return false
		}
	}
	return true
}
