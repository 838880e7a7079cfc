package kubelet

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// probeKind is which of a container's probes a prober runs.
type probeKind string

const (
	startupProbe   probeKind = "startup"
	readinessProbe probeKind = "readiness"
	livenessProbe  probeKind = "liveness"
)

// prober is one probe of the running container: when it runs next and its
// run of equal results. The kubelet's rules, in short: the startup probe
// runs first and alone; once it succeeds (or when there is none) the
// container is started and the readiness and liveness probes run, each
// from initialDelaySeconds after the container started, every
// periodSeconds. successThreshold successes in a row make it ready,
// failureThreshold failures in a row make it not ready (readiness) or get
// it killed, to be restarted under the pod's restartPolicy (liveness,
// startup).
type prober struct {
	kind    probeKind
	spec    *corev1.Probe
	okRun   int32     // consecutive successes
	failRun int32     // consecutive failures
	next    time.Time // zero: not scheduled
}

// newProbers returns c's probes, the startup probe first, and schedules
// the ones that may run now (started: c has no startup probe).
func newProbers(c *corev1.Container, since time.Time, started bool) []*prober {
	var out []*prober
	for _, p := range []*prober{{kind: startupProbe, spec: c.StartupProbe},
		{kind: readinessProbe, spec: c.ReadinessProbe}, {kind: livenessProbe, spec: c.LivenessProbe}} {
		if p.spec == nil {
			continue
		}
		if p.kind == startupProbe || started {
			p.next = since.Add(seconds(p.spec.InitialDelaySeconds))
		}
		out = append(out, p)
	}
	return out
}

func seconds(n int32) time.Duration { return time.Duration(n) * time.Second }

// period is the time between two runs of p.
func (p *prober) period() time.Duration { return seconds(max(p.spec.PeriodSeconds, 1)) }

// record counts one result and reports whether a threshold was crossed:
// passed after successThreshold successes in a row, failed after
// failureThreshold failures in a row.
func (p *prober) record(ok bool) (passed, failed bool) {
	if ok {
		p.okRun, p.failRun = p.okRun+1, 0
		return p.okRun >= max(p.spec.SuccessThreshold, 1), false
	}
	p.okRun, p.failRun = 0, p.failRun+1
	return false, p.failRun >= max(p.spec.FailureThreshold, 1)
}

// nextProbe is when the earliest scheduled probe is due (zero: none).
func (c *container) nextProbe() time.Time {
	var next time.Time
	for _, p := range c.probes {
		if !p.next.IsZero() && (next.IsZero() || p.next.Before(next)) {
			next = p.next
		}
	}
	return next
}

// runDueProbes runs every probe that is due, in order, until one of them
// gets the container killed.
func (w *worker) runDueProbes(ctx context.Context, now time.Time) {
	for _, p := range w.ctr.probes {
		if w.ctr.proc == nil {
			return
		}
		if !p.next.IsZero() && !now.Before(p.next) {
			w.probe(ctx, p)
		}
	}
}

// probe runs p once and applies what its result means.
func (w *worker) probe(ctx context.Context, p *prober) {
	c := &w.ctr
	err := w.runProbe(ctx, p.spec)
	passed, failed := p.record(err == nil)
	p.next = time.Now().Add(p.period())
	switch {
	case p.kind == readinessProbe && passed && !c.ready:
		c.ready = true
		w.log.Info("readiness probe passes: ready", "container", c.spec.Name)
	case p.kind == readinessProbe && failed && c.ready:
		c.ready = false
		w.log.Info("readiness probe fails: not ready", "container", c.spec.Name, "err", err)
	case p.kind == startupProbe && passed:
		w.startupPassed(p)
	case p.kind != readinessProbe && failed:
		w.log.Info(string(p.kind)+" probe fails: killing the container", "container", c.spec.Name, "err", err)
		w.killUnhealthy(ctx, p.spec)
	}
}

// startupPassed ends the startup probe s and starts the others, each at
// its initial delay after the container started (or now, if that is past).
func (w *worker) startupPassed(s *prober) {
	c := &w.ctr
	c.started, s.next = true, time.Time{}
	w.log.Info("startup probe passes: started", "container", c.spec.Name)
	for _, p := range c.probes {
		if p.kind != startupProbe {
			p.next = c.since.Add(seconds(p.spec.InitialDelaySeconds))
		}
	}
	if c.spec.ReadinessProbe == nil {
		c.ready = true
	}
}

// killUnhealthy stops the container a liveness or startup probe failed,
// within the probe's terminationGracePeriodSeconds (else the pod's), and
// records the run as ended in error: the restart policy then applies.
func (w *worker) killUnhealthy(ctx context.Context, pr *corev1.Probe) {
	proc, since := w.ctr.proc, w.ctr.since
	grace := seconds(30)
	if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = seconds(int32(*g))
	}
	if g := pr.TerminationGracePeriodSeconds; g != nil {
		grace = seconds(int32(*g))
	}
	w.stopProcess(ctx, grace)
	code := int32(137) // SIGKILL, if it did not end in time
	select {
	case <-proc.Done():
		code = int32(proc.ExitCode())
	default:
	}
	w.finishRun(&corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error",
		Message: "killed: probe failed", StartedAt: metaTime(since), FinishedAt: metaTime(time.Now()),
		ContainerID: containerID(proc.PID())})
}
