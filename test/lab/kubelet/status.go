package kubelet

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// metaTime is t at the API's one-second precision, so a status computed
// twice from the same state compares equal to what was written.
func metaTime(t time.Time) metav1.Time { return metav1.NewTime(t.Truncate(time.Second)) }

// syncStatus writes the pod's status when it changed.
func (w *worker) syncStatus(ctx context.Context) {
	if w.pod.DeletionTimestamp != nil || ctx.Err() != nil {
		return
	}
	st := w.status(time.Now())
	if w.reported != nil && !w.dirty && equality.Semantic.DeepEqual(*w.reported, st) {
		return
	}
	pod := w.pod.DeepCopy()
	pod.Status = st
	_, err := w.k.opts.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		err = w.retryStatus(ctx, st)
	}
	w.dirty = err != nil && !apierrors.IsNotFound(err)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("update pod status", "err", err)
		}
		return
	}
	w.reported = &st
	w.log.Debug("pod status", "phase", st.Phase, "ready", w.ctr.ready, "restarts", w.ctr.restarts)
}

// retryStatus writes st onto a freshly read Pod.
func (w *worker) retryStatus(ctx context.Context, st corev1.PodStatus) error {
	pods := w.k.opts.Client.CoreV1().Pods(w.pod.Namespace)
	pod, err := pods.Get(ctx, w.pod.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if pod.UID != w.pod.UID {
		return apierrors.NewNotFound(corev1.Resource("pods"), w.pod.Name)
	}
	pod.Status = st
	_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	return err
}

// status is the pod status the current state calls for.
func (w *worker) status(now time.Time) corev1.PodStatus {
	st := corev1.PodStatus{Phase: w.phase(), QOSClass: w.pod.Status.QOSClass, StartTime: ptr.To(metaTime(w.started))}
	if addrs := w.k.opts.Addresses; len(addrs) > 0 {
		st.HostIP = addrs[0].String()
		for _, a := range addrs {
			st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: a.String()})
		}
	}
	if w.sandbox != nil {
		for _, ip := range w.sandbox.IPs() {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip.String()})
		}
		if len(st.PodIPs) > 0 {
			st.PodIP = st.PodIPs[0].IP
		}
	}
	st.Conditions = w.conditions(now)
	if w.ctr.spec != nil {
		st.ContainerStatuses = []corev1.ContainerStatus{w.containerStatus()}
	}
	return st
}

// phase is Pending until the container first runs, Running while it runs
// or will run again, then Succeeded or Failed.
func (w *worker) phase() corev1.PodPhase {
	switch c := w.ctr; {
	case c.final != nil && c.final.ExitCode == 0:
		return corev1.PodSucceeded
	case c.final != nil:
		return corev1.PodFailed
	case c.proc != nil || c.last != nil:
		return corev1.PodRunning
	}
	return corev1.PodPending
}

// conditions are the pod's conditions, each with its last transition.
func (w *worker) conditions(now time.Time) []corev1.PodCondition {
	ready := w.ctr.proc != nil && w.ctr.ready
	want := []struct {
		t  corev1.PodConditionType
		ok bool
	}{
		{corev1.PodReadyToStartContainers, w.sandbox != nil},
		{corev1.PodInitialized, true},
		{corev1.ContainersReady, ready},
		{corev1.PodReady, ready},
		{corev1.PodScheduled, true},
	}
	out := make([]corev1.PodCondition, 0, len(want))
	for _, c := range want {
		cur, seen := w.conds[c.t]
		if !seen || cur.ok != c.ok {
			cur = condition{ok: c.ok, since: now}
			w.conds[c.t] = cur
		}
		pc := corev1.PodCondition{Type: c.t, Status: corev1.ConditionFalse, LastTransitionTime: metaTime(cur.since)}
		if c.ok {
			pc.Status = corev1.ConditionTrue
		} else if c.t == corev1.PodReady || c.t == corev1.ContainersReady {
			pc.Reason = "ContainersNotReady"
		}
		out = append(out, pc)
	}
	return out
}

// containerStatus reports the (first) container.
func (w *worker) containerStatus() corev1.ContainerStatus {
	c := w.ctr
	cs := corev1.ContainerStatus{Name: c.spec.Name, Image: c.spec.Image, ImageID: c.spec.Image,
		RestartCount: c.restarts, Ready: c.proc != nil && c.ready, Started: ptr.To(c.proc != nil && c.started)}
	switch {
	case c.proc != nil:
		cs.ContainerID = containerID(c.proc.PID())
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metaTime(c.since)}
	case c.final != nil:
		cs.ContainerID = c.final.ContainerID
		cs.State.Terminated = c.final
	case c.waiting != nil:
		cs.State.Waiting = c.waiting
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	if c.last != nil {
		cs.LastTerminationState.Terminated = c.last
	}
	return cs
}

// finalDelete deletes the Pod object with grace period 0, only if it is
// still the same pod (UID precondition).
func (k *Kubelet) finalDelete(ctx context.Context, pod *corev1.Pod) error {
	err := k.opts.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)), Preconditions: metav1.NewUIDPreconditions(string(pod.UID)),
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}
