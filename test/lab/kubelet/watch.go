package kubelet

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// NotRunAnnotation set to "true" on a Pod makes the kubelet leave it
// alone: the lab runs that pod's processes itself (the mesh's node
// components, which need the node netns and cgroup).
const NotRunAnnotation = "lab.agentmesh.io/not-run"

// watchPods runs an informer on the Pods bound to this node and hands
// every change to the pod's worker, until ctx ends.
func (k *Kubelet) watchPods(ctx context.Context) error {
	sel := fields.OneTermEqualSelector("spec.nodeName", k.opts.Node).String()
	f := informers.NewSharedInformerFactoryWithOptions(k.opts.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = sel }))
	inf := f.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.podChanged(ctx, obj) },
		UpdateFunc: func(_, obj any) { k.podChanged(ctx, obj) },
		DeleteFunc: k.podDeleted,
	})
	if err != nil {
		return err
	}
	f.Start(ctx.Done())
	if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		close(k.ready)
		k.log.Info("kubelet ready")
	}
	<-ctx.Done()
	f.Shutdown()
	return nil
}

// podChanged gives pod to its worker, starting one for a new pod.
func (k *Kubelet) podChanged(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName != k.opts.Node || pod.Annotations[NotRunAnnotation] == "true" {
		return
	}
	uid := string(pod.UID)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.finished[uid] || ctx.Err() != nil {
		return
	}
	w := k.workers[uid]
	if w == nil {
		w = newWorker(k, pod)
		k.workers[uid] = w
		k.wg.Go(func() { w.run(ctx) })
	}
	w.offer(pod)
}

// podDeleted tells the worker that the Pod object is gone.
func (k *Kubelet) podDeleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	w := k.workers[string(pod.UID)]
	k.mu.Unlock()
	if w != nil {
		w.markGone()
	}
}

// workerDone drops a finished worker.
func (k *Kubelet) workerDone(uid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.workers, uid)
	k.finished[uid] = true
}
