package kubelet

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Restart backoff: doubles from backoffBase up to backoffMax.
const (
	backoffBase = 500 * time.Millisecond
	backoffMax  = 5 * time.Second
)

// container is the state of the pod's (first) container.
type container struct {
	spec      *corev1.Container
	proc      Process                          // nil when not running
	since     time.Time                        // when proc started
	restarts  int32                            // times restarted
	started   bool                             // the startup probe passed (or there is none)
	ready     bool                             // readiness as probed
	probes    []*prober                        // of the running process
	restartAt time.Time                        // zero: no restart pending
	last      *corev1.ContainerStateTerminated // previous run, for lastState
	final     *corev1.ContainerStateTerminated // set when it will not run again
	waiting   *corev1.ContainerStateWaiting    // why it does not run now
}

// doneChan is the running process's Done, or nil (blocks forever).
func (c *container) doneChan() <-chan struct{} {
	if c.proc == nil {
		return nil
	}
	return c.proc.Done()
}

// nextEvent is when the next probe or restart is due (zero: none).
func (c *container) nextEvent() time.Time {
	if c.proc != nil {
		return c.nextProbe()
	}
	return c.restartAt
}

// containerID names a run of the container after its process.
func containerID(pid int) string { return "amlab://" + strconv.Itoa(pid) }

// setup makes the sandbox and starts the first container.
func (w *worker) setup(ctx context.Context) {
	if len(w.pod.Spec.Containers) == 0 {
		w.fail("NoContainers", "pod has no containers")
		return
	}
	w.ctr.spec = &w.pod.Spec.Containers[0]
	if n := len(w.pod.Spec.Containers); n > 1 {
		w.log.Warn("only the first container runs", "containers", n)
	}
	sb, err := w.k.opts.Runtime.CreateSandbox(ctx, SandboxSpec{UID: w.uid, Namespace: w.pod.Namespace,
		Name: w.pod.Name, ServiceAccount: w.pod.Spec.ServiceAccountName, Labels: w.pod.Labels,
		ResolvConf: w.k.resolvConf(w.pod)})
	if err != nil {
		w.log.Error("create sandbox", "err", err)
		w.fail("SandboxFailed", err.Error())
		return
	}
	w.sandbox = sb
	w.log.Info("sandbox ready", "ips", sb.IPs())
	w.startContainer()
}

// fail ends the pod before any container ran.
func (w *worker) fail(reason, msg string) {
	now := time.Now()
	w.ctr.final = &corev1.ContainerStateTerminated{ExitCode: 128, Reason: reason, Message: msg,
		FinishedAt: metaTime(now)}
}

// startContainer runs the container's command; a failure counts as an
// exit with code 128 (reason StartError), as containerd reports it.
func (w *worker) startContainer() {
	c := &w.ctr
	c.restartAt, c.waiting, c.ready, c.started, c.probes = time.Time{}, nil, false, false, nil
	env, vars := w.env(c.spec)
	args, err := w.k.command(c.spec, vars)
	var p Process
	if err == nil {
		p, err = w.sandbox.Start(ContainerSpec{Name: c.spec.Name, Args: args, Env: env, Hosts: w.hostsFile()})
	}
	now := time.Now()
	if err != nil {
		w.log.Error("start container", "container", c.spec.Name, "err", err)
		w.finishRun(&corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError",
			Message: err.Error(), StartedAt: metaTime(now), FinishedAt: metaTime(now)})
		return
	}
	c.proc, c.since = p, now
	w.log.Info("container started", "container", c.spec.Name, "pid", p.PID(), "restarts", c.restarts)
	c.started = c.spec.StartupProbe == nil
	c.ready = c.started && c.spec.ReadinessProbe == nil
	c.probes = newProbers(c.spec, now, c.started)
}

// exited records the end of the running process.
func (w *worker) exited() {
	c := &w.ctr
	code := c.proc.ExitCode()
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	w.log.Info("container exited", "container", c.spec.Name, "pid", c.proc.PID(), "code", code)
	w.finishRun(&corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: reason,
		StartedAt: metaTime(c.since), FinishedAt: metaTime(time.Now()), ContainerID: containerID(c.proc.PID())})
}

// finishRun applies the restart policy to a run that ended with t.
func (w *worker) finishRun(t *corev1.ContainerStateTerminated) {
	c := &w.ctr
	c.proc, c.ready, c.started, c.probes = nil, false, false, nil
	if !restarts(w.pod.Spec.RestartPolicy, t.ExitCode) {
		c.final = t
		return
	}
	c.last = t
	delay := min(backoffBase<<min(c.restarts, 10), backoffMax)
	c.restartAt = time.Now().Add(delay)
	c.waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
		Message: fmt.Sprintf("back-off %s restarting failed container %s", delay, c.spec.Name)}
}

// restarts says whether a container that exited with code runs again.
func restarts(policy corev1.RestartPolicy, code int32) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return true // Always, the default
}

// minGraceAfterHook is the least time SIGTERM gets after a preStop hook
// used up the grace period (the real kubelet's minimum too).
const minGraceAfterHook = 2 * time.Second

// stopProcess runs the container's preStop hook, sends SIGTERM, then
// SIGKILL after what is left of grace (capped at MaxGrace), and waits
// (bounded) until the process is gone. grace 0 kills at once, without
// the hook.
func (w *worker) stopProcess(ctx context.Context, grace time.Duration) {
	p := w.ctr.proc
	if p == nil {
		return
	}
	if grace > 0 {
		grace = min(grace, w.k.opts.MaxGrace)
		if slept := w.preStop(ctx, p, grace); slept > 0 {
			grace = max(grace-slept, min(minGraceAfterHook, w.k.opts.MaxGrace))
		}
	}
	w.ctr.proc, w.ctr.restartAt = nil, time.Time{}
	if grace > 0 {
		_ = p.Signal(syscall.SIGTERM)
		if waitDone(ctx, p, grace) {
			return
		}
	}
	_ = p.Signal(syscall.SIGKILL)
	if !waitDone(ctx, p, 5*time.Second) && ctx.Err() == nil {
		w.log.Warn("process survived SIGKILL", "pid", p.PID())
	}
}

// preStop runs the container's preStop hook within grace and returns
// how long it took. Only the sleep action runs here (what a pod uses to
// stay in service while its endpoint's removal reaches every proxy); an
// exec or httpGet hook is logged as not run. The hook ends early when p
// exits or ctx ends.
func (w *worker) preStop(ctx context.Context, p Process, grace time.Duration) time.Duration {
	lc := w.ctr.spec.Lifecycle
	if lc == nil || lc.PreStop == nil {
		return 0
	}
	h := lc.PreStop
	if h.Sleep == nil {
		w.log.Warn("preStop hook not run: the lab kubelet runs only the sleep action", "container", w.ctr.spec.Name)
		return 0
	}
	d := min(time.Duration(h.Sleep.Seconds)*time.Second, grace)
	if d <= 0 {
		return 0
	}
	w.log.Info("preStop hook: sleeping", "container", w.ctr.spec.Name, "for", d)
	start := time.Now()
	waitDone(ctx, p, d)
	return time.Since(start)
}

// waitDone waits up to d for p to exit.
func waitDone(ctx context.Context, p Process, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.Done():
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// terminate handles a deletionTimestamp: stop the process, remove the
// sandbox, then delete the Pod object with grace period 0 (the real
// kubelet's final delete).
func (w *worker) terminate(ctx context.Context) {
	grace := 30 * time.Second
	if g := w.pod.DeletionGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	} else if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	w.log.Info("terminating pod", "grace", min(grace, w.k.opts.MaxGrace))
	w.stopProcess(ctx, grace)
	w.removeSandbox(ctx)
	if ctx.Err() != nil {
		return
	}
	if err := w.k.finalDelete(ctx, w.pod); err != nil {
		w.log.Error("delete pod object", "err", err)
	}
}

// removeSandbox removes the pod's netns and cgroup.
func (w *worker) removeSandbox(ctx context.Context) {
	if w.sandbox == nil {
		return
	}
	if err := w.sandbox.Remove(ctx); err != nil {
		w.log.Error("remove sandbox", "err", err)
	}
	w.sandbox = nil
}
