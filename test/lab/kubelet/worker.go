package kubelet

import (
	"context"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// worker owns one pod: its sandbox, its process, its probes and its
// status. Everything but the channels is touched only by run.
type worker struct {
	k        *Kubelet
	log      *slog.Logger
	uid      string
	updates  chan *corev1.Pod // latest Pod object, capacity 1
	gone     chan struct{}    // closed when the Pod object is deleted
	goneOnce sync.Once

	pod      *corev1.Pod // latest seen
	started  time.Time   // when the kubelet took the pod
	sandbox  Sandbox
	ctr      container
	conds    map[corev1.PodConditionType]condition
	reported *corev1.PodStatus // last status written
	dirty    bool              // the last status write failed
}

// condition is one pod condition's value and when it last changed.
type condition struct {
	ok    bool
	since time.Time
}

// statusRetry is how soon a failed status write is retried.
const statusRetry = time.Second

func newWorker(k *Kubelet, pod *corev1.Pod) *worker {
	return &worker{k: k, log: k.log.With("pod", pod.Namespace+"/"+pod.Name), uid: string(pod.UID),
		updates: make(chan *corev1.Pod, 1), gone: make(chan struct{}),
		conds: map[corev1.PodConditionType]condition{}}
}

// offer hands the latest Pod object to the worker, replacing one it has
// not taken yet. There is one caller at a time (the informer's handler).
func (w *worker) offer(p *corev1.Pod) {
	select {
	case <-w.updates:
	default:
	}
	w.updates <- p
}

// markGone says the Pod object was deleted.
func (w *worker) markGone() { w.goneOnce.Do(func() { close(w.gone) }) }

// run drives the pod until it is deleted or ctx ends.
func (w *worker) run(ctx context.Context) {
	defer w.k.workerDone(w.uid)
	select {
	case w.pod = <-w.updates:
	case <-ctx.Done():
		return
	}
	w.started = time.Now()
	if w.pod.DeletionTimestamp == nil && !terminal(w.pod) {
		w.setup(ctx)
	}
	for {
		w.syncStatus(ctx)
		if !w.step(ctx) {
			return
		}
	}
}

// step waits for one thing to happen and handles it; false means the
// worker is done.
func (w *worker) step(ctx context.Context) bool {
	if w.pod.DeletionTimestamp != nil {
		w.terminate(ctx)
		return false
	}
	wake := time.NewTimer(w.nextWake())
	defer wake.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-w.gone:
		w.log.Info("pod object deleted: removing")
		w.stopProcess(ctx, 0)
		w.removeSandbox(ctx)
		return false
	case w.pod = <-w.updates:
	case <-w.ctr.doneChan():
		w.exited()
	case <-wake.C:
		w.timers(ctx)
	}
	return true
}

// nextWake is how long until the next probe, restart or status retry.
func (w *worker) nextWake() time.Duration {
	next := w.ctr.nextEvent()
	if w.dirty && (next.IsZero() || time.Now().Add(statusRetry).Before(next)) {
		next = time.Now().Add(statusRetry)
	}
	if next.IsZero() {
		return time.Hour
	}
	return max(time.Until(next), 0)
}

// timers runs what is due: a restart or probes.
func (w *worker) timers(ctx context.Context) {
	now := time.Now()
	switch {
	case w.ctr.proc == nil && !w.ctr.restartAt.IsZero() && !now.Before(w.ctr.restartAt):
		w.ctr.restarts++
		w.startContainer()
	case w.ctr.proc != nil:
		w.runDueProbes(ctx, now)
	}
}

// terminal reports whether the pod has finished for good.
func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}
