package controller

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/agentmesh/agentmesh/controller/ca"
)

// Leadership. Every replica serves config streams from its own informers
// and signs certificates: both only read the cluster, so they scale out and
// keep working while no leader is elected. Creating the CA Secret is safe
// without a leader too (create, and on AlreadyExists read the winner's).
// Only the leader writes shared state: the root ConfigMap (the trust
// bundle), the steps of a root rotation in the CA Secret (ca.Rotation), AgentPolicy
// status and events (controller/policystatus), route status
// (controller/routestatus) and TrafficPolicy status
// (controller/trafficstatus). Handover is observable: the agentmesh_controller_leader gauge,
// "leader" in /status and the "became leader" / "lost leadership" logs.
type leader struct {
	client kubernetes.Interface
	o      *options
	// bundle is the trust bundle to publish; bundleChanged (cap 1) says
	// it changed.
	bundle        atomic.Pointer[[]byte]
	bundleChanged chan struct{}
	// rotate (cap 1) wakes the root rotation when this replica starts
	// leading.
	rotate  chan struct{}
	log     *slog.Logger
	gauge   prometheus.Gauge
	is      atomic.Bool
	current atomic.Pointer[string] // identity of the current leader
	elected chan struct{}          // cap 1: this replica started leading
	writer  leaderWriter
}

// leaderWriter is a writer that works only while this replica leads (the
// policy, route and TrafficPolicy status writers). SetLeader must not block.
type leaderWriter interface {
	SetLeader(leads bool)
}

// leaderWriters tells each of its writers.
type leaderWriters []leaderWriter

func (ws leaderWriters) SetLeader(leads bool) {
	for _, w := range ws {
		w.SetLeader(leads)
	}
}

// newLeader returns the elector; it tells w each time this replica starts
// and stops leading.
func newLeader(c kubernetes.Interface, o *options, bundlePEM []byte, w leaderWriter, log *slog.Logger, reg prometheus.Registerer) *leader {
	l := &leader{client: c, o: o, writer: w, log: log, elected: make(chan struct{}, 1),
		bundleChanged: make(chan struct{}, 1), rotate: make(chan struct{}, 1),
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agentmesh_controller_leader",
			Help: "1 while this replica is the elected leader."})}
	reg.MustRegister(l.gauge)
	l.bundle.Store(&bundlePEM)
	return l
}

// setBundle publishes a new trust bundle while this replica leads.
func (l *leader) setBundle(pem []byte) {
	l.bundle.Store(&pem)
	kick(l.bundleChanged)
}

// leads reports whether this replica leads.
func (l *leader) leads() bool { return l.is.Load() }

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run campaigns until ctx is done; on losing the lease it campaigns again.
func (l *leader) run(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); l.duties(ctx) }()
	defer func() { <-done }()
	if !l.o.leaderElect {
		l.start()
		<-ctx.Done()
		return
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: l.o.leaseName, Namespace: l.o.namespace},
		Client:     l.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.o.identity},
	}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, Name: l.o.leaseName, ReleaseOnCancel: true,
			LeaseDuration: l.o.leaseDuration, RenewDeadline: l.o.renewDeadline, RetryPeriod: l.o.retryPeriod,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) { l.start() },
				OnStoppedLeading: l.stop,
				OnNewLeader:      func(id string) { l.current.Store(&id); l.log.Info("leader is", "leader", id) },
			},
		})
	}
}

func (l *leader) start() {
	l.is.Store(true)
	l.gauge.Set(1)
	l.current.Store(&l.o.identity)
	l.log.Info("became leader", "id", l.o.identity)
	l.writer.SetLeader(true)
	kick(l.elected)
	kick(l.rotate)
}

func (l *leader) stop() {
	if l.is.Swap(false) {
		l.gauge.Set(0)
		l.writer.SetLeader(false)
		l.log.Info("lost leadership", "id", l.o.identity)
	}
}

// duties does the leader's writes each time this replica is elected.
func (l *leader) duties(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.elected:
		case <-l.bundleChanged:
		}
		for attempt := 0; l.is.Load(); attempt++ {
			err := ca.PublishRoot(ctx, l.client, l.o.namespace, *l.bundle.Load())
			if err == nil {
				l.log.Info("published ca root", "configmap", l.o.namespace+"/"+ca.RootConfigMap)
				break
			}
			l.log.Warn("publish ca root", "attempt", attempt+1, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(5*time.Second, 200*time.Millisecond<<min(attempt, 5))):
			}
		}
	}
}

// status for /status.
func (l *leader) status() (isLeader bool, current string) {
	if p := l.current.Load(); p != nil {
		current = *p
	}
	return l.is.Load(), current
}
