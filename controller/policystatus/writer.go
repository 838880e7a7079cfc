// Package policystatus writes what the controller made of each
// AgentPolicy: the Accepted condition in its status and Warning events, and
// Warning events for invalid mesh annotations on namespaces and pods. Only
// the leader writes; every write is skipped when nothing changed, so a
// steady state makes no request and emits no event.
package policystatus

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/agentmesh/agentmesh/controller/statusloop"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/record"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
)

// FieldManager is the server-side apply field manager of the status writes.
const FieldManager = "agentmesh-controller"

// Options configure a Writer.
type Options struct {
	// Client writes agentpolicies/status (server-side apply).
	Client dynamic.Interface
	// Events records Warning events.
	Events record.EventRecorder
	// Current returns the cached AgentPolicy namespace/name, or nil.
	Current func(namespace, name string) *v1alpha1.AgentPolicy
	Logger  *slog.Logger
}

// Writer brings policy status and events in line with the latest
// snapshot while this replica leads (SetLeader). Update, Kick and
// SetLeader are safe for concurrent use; Run owns the rest.
type Writer struct {
	o    Options
	loop *statusloop.Loop // leadership and wake-ups

	mu     sync.Mutex
	status *view.Status // guarded by mu: the latest

	written map[string]write            // Run only: policy UID -> our last write
	emitted map[string]metav1.Condition // Run only: policy UID -> condition of the last event
	warned  map[string]bool             // Run only: object UID + message of emitted warnings
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
	return &Writer{o: o, loop: statusloop.New(), written: map[string]write{},
		emitted: map[string]metav1.Condition{}, warned: map[string]bool{}}
}

// Update hands over a new snapshot; it never blocks.
func (w *Writer) Update(s *view.Snapshot) {
	w.SetStatus(view.Status{Policies: s.Policies, Warnings: s.Warnings})
}

// SetStatus hands over the view's new policy states and warnings; it never
// blocks.
func (w *Writer) SetStatus(st view.Status) {
	w.mu.Lock()
	w.status = &st
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
	w.loop.Run(ctx, w.sync, w.o.Logger, "write agentpolicy status")
}

func (w *Writer) sync(ctx context.Context) error {
	w.mu.Lock()
	s := w.status
	w.mu.Unlock()
	if s == nil {
		return nil
	}
	var errs []error
	live := map[string]bool{}
	for i := range s.Policies {
		live[s.Policies[i].UID] = true
		if err := w.syncPolicy(ctx, &s.Policies[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for uid := range w.written {
		if !live[uid] {
			delete(w.written, uid)
		}
	}
	for uid := range w.emitted {
		if !live[uid] {
			delete(w.emitted, uid)
		}
	}
	w.warn(s.Warnings)
	return errors.Join(errs...)
}

// warn emits each annotation warning once while it lasts.
func (w *Writer) warn(ws []view.Warning) {
	now := make(map[string]bool, len(ws))
	for i := range ws {
		k := string(ws[i].Object.UID) + "\x00" + ws[i].Message
		now[k] = true
		if !w.warned[k] {
			w.o.Events.Event(&ws[i].Object, corev1.EventTypeWarning, ws[i].Reason, ws[i].Message)
		}
	}
	w.warned = now
}

// same reports whether two Accepted conditions say the same.
func same(a, b metav1.Condition) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message && a.ObservedGeneration == b.ObservedGeneration
}

// syncPolicy writes ps's condition unless the cache already has it (or
// is only behind our own write of it), and emits an event with each new
// non-Accepted condition.
func (w *Writer) syncPolicy(ctx context.Context, ps *view.PolicyState) error {
	want := ps.Accepted()
	cur := w.o.Current(ps.Namespace, ps.Name)
	if cur == nil || string(cur.UID) != ps.UID {
		return nil // deleted or replaced: a later snapshot has the news
	}
	conds := append([]metav1.Condition(nil), cur.Status.Conditions...)
	have := meta.FindStatusCondition(conds, v1alpha1.ConditionAccepted)
	if last, ok := w.written[ps.UID]; ok && same(last.cond, want) && cur.ResourceVersion == last.staleRV {
		return nil
	}
	if have == nil || !same(*have, want) {
		meta.SetStatusCondition(&conds, want) // keeps lastTransitionTime while the status stays
		cond := *meta.FindStatusCondition(conds, v1alpha1.ConditionAccepted)
		wrote, err := apply(ctx, w.o.Client, ps, cur.ResourceVersion, cond)
		if err != nil {
			return err
		}
		if !wrote {
			return nil // the policy changed or went meanwhile: its event brings a later snapshot
		}
		w.written[ps.UID] = write{cond: cond, staleRV: cur.ResourceVersion}
		w.o.Logger.Info("agentpolicy status", "policy", ps.Key(), "accepted", cond.Status, "reason", cond.Reason)
		w.event(ps, cond)
		return nil
	}
	delete(w.written, ps.UID)
	if _, ok := w.emitted[ps.UID]; !ok {
		w.emitted[ps.UID] = *have // written before (an earlier leader): its event was emitted then
	}
	return nil
}

// event emits a Warning for a non-Accepted condition unless the last one
// for this policy said the same.
func (w *Writer) event(ps *view.PolicyState, c metav1.Condition) {
	if last, ok := w.emitted[ps.UID]; ok && same(last, c) {
		return
	}
	w.emitted[ps.UID] = c
	if c.Reason != v1alpha1.ReasonAccepted {
		w.o.Events.Event(reference(ps), corev1.EventTypeWarning, c.Reason, c.Message)
	}
}

func reference(ps *view.PolicyState) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "AgentPolicy",
		Namespace: ps.Namespace, Name: ps.Name, UID: typesUID(ps.UID)}
}
