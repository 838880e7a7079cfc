package view

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
)

// nodeIndex indexes pods by spec.nodeName.
const nodeIndex = "node"

// Options configure a Watcher.
type Options struct {
	TrustDomain string
	// Debounce and MaxDelay shape how changes are batched (default 100ms
	// and 1s): a change after Debounce without one goes out at once; the
	// changes that follow it within Debounce are gathered until Debounce
	// passes without one, or MaxDelay after the first.
	Debounce, MaxDelay time.Duration
	// ResyncPeriod of the informers (0: none).
	ResyncPeriod time.Duration
	// Gateway names the Gateway API resources to watch (DetectGatewayAPI);
	// the zero value watches none, and Services have no routes.
	Gateway GatewayAPI
	// TrafficPolicies watches TrafficPolicies (DetectTrafficPolicy);
	// false: Services have no Traffic.
	TrafficPolicies bool
	Logger          *slog.Logger
}

// Sink takes what a Watcher produces.
type Sink interface {
	// Snapshot receives the whole view after every change, the first once
	// the caches have synced. It is called from Run's goroutine, one at a
	// time. A sink that also implements DeltaSink gets Changed instead.
	Snapshot(*Snapshot)
	// NodeDeleted is called with the name of every deleted Node, after the
	// cache has dropped it (so NodeExists is already false). It runs on an
	// informer goroutine and must not block.
	NodeDeleted(node string)
}

// DeltaSink is a Sink that takes what each change changed instead of the
// whole view: the first Delta carries every object.
type DeltaSink interface {
	Sink
	// Changed is called from Run's goroutine, one at a time; d's objects
	// are never modified afterwards.
	Changed(d *Delta, st Status)
}

// Watcher runs shared informers on Namespaces, Pods, Services,
// EndpointSlices, AgentPolicies, the Gateway API routes and
// ReferenceGrants that Options.Gateway names, TrafficPolicies (when
// Options.TrafficPolicies), Nodes and ServiceAccounts,
// and computes a Snapshot after each burst of changes. Nodes and
// ServiceAccounts do not enter the snapshot: they gate who may stream
// (NodeExists) and what the CA signs (ServiceAccountExists).
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
	// dynFactory runs the AgentPolicy informer (policies is its cache)
	// and those of Gateway API and TrafficPolicies (nil caches for
	// resources not watched).
	dynFactory                     dynamicinformer.DynamicSharedInformerFactory
	policies                       cache.Indexer
	httpRoutes, grpcRoutes, grants cache.Indexer
	trafficPolicies                cache.Indexer
	synced                         []cache.InformerSynced
	kick                           chan struct{} // cap 1: something changed

	mu    sync.Mutex
	dirty Dirty // guarded by mu: what changed since the last update
	// lastEvent is when the last event came; burstGap how long before
	// the first event of dirty the event before it came (guarded by mu).
	lastEvent time.Time
	burstGap  time.Duration
}

// NewWatcher prepares informers on client, and on dyn for AgentPolicies,
// Gateway API objects and TrafficPolicies; Run starts them. Its caches (NodeExists, Policy, PodsOnNode, ...) may be
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
	for _, h := range []struct {
		inf  cache.SharedIndexInformer
		keys func(obj any, d *Dirty)
	}{
		{w.podInf, func(obj any, d *Dirty) { d.Pods = addKey(d.Pods, obj) }},
		{f.Core().V1().Namespaces().Informer(), func(_ any, d *Dirty) { d.All = true }},
		{f.Core().V1().Services().Informer(), func(obj any, d *Dirty) { d.Services = addKey(d.Services, obj) }},
		{f.Discovery().V1().EndpointSlices().Informer(), func(obj any, d *Dirty) { d.Services = addSliceService(d.Services, obj) }},
	} {
		if _, err := h.inf.AddEventHandler(w.handler(h.keys)); err != nil {
			return nil, fmt.Errorf("add event handler: %w", err)
		}
		w.synced = append(w.synced, h.inf.HasSynced)
	}
	w.watchGates(f)
	w.dynFactory = dynamicinformer.NewDynamicSharedInformerFactory(dyn, o.ResyncPeriod)
	if err := w.watchPolicies(); err != nil {
		return nil, err
	}
	if err := w.watchRoutes(); err != nil {
		return nil, err
	}
	if err := w.watchTraffic(); err != nil {
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

// handler notes the keys of every changed object (before and after an
// update: a slice may move to another service) and wakes Run.
func (w *Watcher) handler(keys func(obj any, d *Dirty)) cache.ResourceEventHandler {
	note := func(objs ...any) {
		w.mu.Lock()
		now := time.Now()
		if w.dirty.Empty() {
			w.burstGap = now.Sub(w.lastEvent)
		}
		w.lastEvent = now
		for _, o := range objs {
			keys(o, &w.dirty)
		}
		w.mu.Unlock()
		w.poke()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { note(obj) },
		UpdateFunc: func(old, obj any) { note(old, obj) },
		DeleteFunc: func(obj any) { note(obj) },
	}
}

// addKey adds the namespace/name of obj (or of a deleted object's
// tombstone) to set.
func addKey(set map[string]bool, obj any) map[string]bool {
	k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil || k == "" {
		return set
	}
	if set == nil {
		set = map[string]bool{}
	}
	set[k] = true
	return set
}

// addSliceService adds the namespace/name of the Service of the slice obj.
func addSliceService(set map[string]bool, obj any) map[string]bool {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, ok := obj.(*EndpointSlice)
	if !ok {
		return set
	}
	if k := sliceService(s); k != "" {
		if set == nil {
			set = map[string]bool{}
		}
		set[k] = true
	}
	return set
}

func (w *Watcher) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// takeDirty returns what changed since the last call and forgets it.
func (w *Watcher) takeDirty() Dirty {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.dirty
	w.dirty = Dirty{}
	return d
}

// lone reports whether the pending changes began after Debounce without
// an event: not part of a burst.
func (w *Watcher) lone() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.burstGap >= w.o.Debounce
}

// Run starts the informers, waits for their caches, then brings the view
// up to date after every batch of changes (see Options.Debounce) and hands
// it to sink, and every deleted Node, until ctx is done. It returns after
// the informers have stopped. Call it once.
func (w *Watcher) Run(ctx context.Context, sink Sink) error {
	if _, err := w.nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) { w.nodeDeleted(obj, sink) },
	}); err != nil {
		return fmt.Errorf("add node event handler: %w", err)
	}
	defer w.factory.Shutdown()
	defer w.dynFactory.Shutdown()
	w.factory.Start(ctx.Done())
	w.dynFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), w.synced...) {
		return errors.New("wait for informer caches: " + context.Cause(ctx).Error())
	}
	w.o.Logger.Info("informer caches synced")
	m := NewModel(listerSource{w})
	w.mu.Lock()
	w.dirty, w.lastEvent = Dirty{}, time.Time{} // the first update reads everything; the initial lists are no burst
	w.mu.Unlock()
	d := Dirty{All: true}
	ds, deltas := sink.(DeltaSink)
	for {
		start := time.Now()
		delta := m.Update(d)
		if deltas {
			ds.Changed(delta, m.Status())
		} else {
			sink.Snapshot(m.Snapshot())
		}
		w.o.Logger.Debug("view updated", "took", time.Since(start), "full", d.All,
			"pods", len(d.Pods), "services", len(d.Services), "policies", len(d.Policies), "routes", len(d.Routes), "traffic_policies", len(d.Traffic),
			"workloads_changed", len(delta.Workloads), "services_changed", len(delta.Services))
		if !w.settle(ctx) {
			return nil
		}
		d = w.takeDirty()
	}
}

// settle waits for a change. One that comes Debounce or more after the
// event before it returns at once: a lone change is not delayed. One that
// comes sooner is part of a burst: settle gathers until the burst has been
// quiet for Debounce, at most MaxDelay. It returns false when ctx is done.
func (w *Watcher) settle(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-w.kick:
	}
	if w.lone() {
		return true
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
func (w *Watcher) Compute() *Snapshot { return Compute(listerSource{w}.All()) }

// listerSource is the Source over a Watcher's caches.
type listerSource struct{ w *Watcher }

func (l listerSource) All() Inputs {
	w := l.w
	in := Inputs{TrustDomain: w.o.TrustDomain}
	in.Namespaces, _ = w.nss.List(labels.Everything())
	in.Pods, _ = w.pods.List(labels.Everything())
	in.Services, _ = w.svcs.List(labels.Everything())
	in.Slices, _ = w.slices.List(labels.Everything())
	in.Policies = w.listPolicies()
	in.Routes = w.listRoutes()
	in.TrafficPolicies = w.listTraffic()
	return in
}

func (l listerSource) Routes() RouteInputs { return l.w.listRoutes() }

func (l listerSource) TrafficPolicies() []*v1alpha1.TrafficPolicy { return l.w.listTraffic() }

func (l listerSource) Pod(namespace, name string) *corev1.Pod {
	p, _ := l.w.pods.Pods(namespace).Get(name)
	return p
}

func (l listerSource) Service(namespace, name string) *corev1.Service {
	s, _ := l.w.svcs.Services(namespace).Get(name)
	return s
}

func (l listerSource) ServiceSlices(namespace, service string) []*EndpointSlice {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: service})
	out, _ := l.w.slices.EndpointSlices(namespace).List(sel)
	return out
}

func (l listerSource) Policy(namespace, name string) *v1alpha1.AgentPolicy {
	return l.w.Policy(namespace, name)
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
