// Package trafficstatus writes what the controller made of each
// TrafficPolicy: the Accepted condition in its status (Accepted,
// TargetNotFound, Conflicted or Invalid, from view.TrafficState). Only the
// leader writes; a write is skipped when the cache already shows it, so a
// steady state makes no request.
//
// A write is a server-side apply of that one condition on the status
// subresource (status.conditions is a map list keyed by type: other
// conditions are left alone), at the resourceVersion the cache had when
// the condition was checked against it: it fails instead of writing onto
// a policy changed since, or recreated under the same name.
package trafficstatus

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/agentmesh/agentmesh/controller/statusloop"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
)

// FieldManager is the server-side apply field manager of the status writes.
const FieldManager = "agentmesh-controller"

// Options configure a Writer.
type Options struct {
	// Client writes trafficpolicies/status (server-side apply).
	Client dynamic.Interface
	// Current returns the cached TrafficPolicy namespace/name, or nil.
	Current func(namespace, name string) *v1alpha1.TrafficPolicy
	Logger  *slog.Logger
}

// Writer brings TrafficPolicy status in line with the latest view while
// this replica leads (SetLeader). SetStatus, Update, Kick and SetLeader
// are safe for concurrent use; Run owns the rest.
type Writer struct {
	o    Options
	loop *statusloop.Loop // leadership and wake-ups

	mu     sync.Mutex
	states []view.TrafficState // guarded by mu: the latest
	set    bool                // guarded by mu: states was handed over

	written map[string]write // Run only: policy UID -> our last write
}

// write is a status write the cache may not show yet.
type write struct {
	cond metav1.Condition
	// staleRV is the cached resourceVersion the write was based on: while
	// the cache still has it, the cache is behind the write.
	staleRV string
}

// New returns a Writer; Run starts it.
func New(o Options) *Writer {
	return &Writer{o: o, loop: statusloop.New(), written: map[string]write{}}
}

// Update hands over a new snapshot; it never blocks.
func (w *Writer) Update(s *view.Snapshot) { w.SetStatus(view.Status{Traffic: s.Traffic}) }

// SetStatus hands over the view's new TrafficPolicy states; it never
// blocks. The states are not modified.
func (w *Writer) SetStatus(st view.Status) {
	w.mu.Lock()
	w.states, w.set = st.Traffic, true
	w.mu.Unlock()
	w.Kick()
}

// Kick asks for a sync.
func (w *Writer) Kick() { w.loop.Kick() }

// SetLeader tells the writer whether this replica leads (a new Writer does
// not): only the leader writes. Becoming leader starts a sync, which
// catches up with what the last leader left. It never blocks.
func (w *Writer) SetLeader(leads bool) { w.loop.SetLeader(leads) }

// Run syncs after every Kick while leader, retrying failures with backoff,
// until ctx is done.
func (w *Writer) Run(ctx context.Context) {
	w.loop.Run(ctx, w.sync, w.o.Logger, "write trafficpolicy status")
}

func (w *Writer) sync(ctx context.Context) error {
	w.mu.Lock()
	states, set := w.states, w.set
	w.mu.Unlock()
	if !set {
		return nil
	}
	var errs []error
	live := make(map[string]bool, len(states))
	for i := range states {
		live[states[i].UID] = true
		if err := w.syncPolicy(ctx, &states[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for uid := range w.written {
		if !live[uid] {
			delete(w.written, uid)
		}
	}
	return errors.Join(errs...)
}

// same reports whether two Accepted conditions say the same.
func same(a, b metav1.Condition) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message && a.ObservedGeneration == b.ObservedGeneration
}

// syncPolicy writes ts's condition unless the cache already has it (or is
// only behind our own write of it). A policy the cache has at another
// uid or generation is left for a later view, which has the news.
func (w *Writer) syncPolicy(ctx context.Context, ts *view.TrafficState) error {
	want := ts.Accepted
	cur := w.o.Current(ts.Namespace, ts.Name)
	if cur == nil || string(cur.UID) != ts.UID || cur.Generation != want.ObservedGeneration {
		return nil
	}
	conds := append([]metav1.Condition(nil), cur.Status.Conditions...)
	if have := meta.FindStatusCondition(conds, v1alpha1.ConditionAccepted); have != nil && same(*have, want) {
		delete(w.written, ts.UID)
		return nil
	}
	if last, ok := w.written[ts.UID]; ok && same(last.cond, want) && cur.ResourceVersion == last.staleRV {
		return nil
	}
	meta.SetStatusCondition(&conds, want) // keeps lastTransitionTime while the status stays
	cond := *meta.FindStatusCondition(conds, v1alpha1.ConditionAccepted)
	wrote, err := apply(ctx, w.o.Client, ts, cur.ResourceVersion, cond)
	if err != nil || !wrote {
		return err
	}
	w.written[ts.UID] = write{cond: cond, staleRV: cur.ResourceVersion}
	w.o.Logger.Info("trafficpolicy status", "policy", ts.Key(), "accepted", cond.Status, "reason", cond.Reason)
	return nil
}
