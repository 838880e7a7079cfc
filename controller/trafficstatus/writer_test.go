package trafficstatus

import (
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
)

// fixture is a Writer over a fake dynamic client that records status
// patches (answering each with fail, when set) and a cache the test sets.
type fixture struct {
	t       *testing.T
	w       *Writer
	cache   *v1alpha1.TrafficPolicy
	patches []map[string]any
	fail    error
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t}
	s := runtime.NewScheme()
	v1alpha1.AddToScheme(s)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(s, map[schema.GroupVersionResource]string{view.TrafficPolicyResource: "TrafficPolicyList"})
	dyn.PrependReactor("patch", "trafficpolicies", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		if pa.GetSubresource() != "status" {
			t.Errorf("patch of subresource %q", pa.GetSubresource())
		}
		var m map[string]any
		json.Unmarshal(pa.GetPatch(), &m)
		f.patches = append(f.patches, m)
		return true, &v1alpha1.TrafficPolicy{}, f.fail
	})
	f.w = New(Options{Client: dyn, Logger: slog.New(slog.DiscardHandler),
		Current: func(ns, name string) *v1alpha1.TrafficPolicy {
			if f.cache == nil || f.cache.Namespace != ns || f.cache.Name != name {
				return nil
			}
			return f.cache
		}})
	f.w.SetLeader(true)
	return f
}

// sync runs one sync of states and checks how many patches it made.
func (f *fixture) sync(patches int, states ...view.TrafficState) {
	f.t.Helper()
	f.patches = nil
	f.w.SetStatus(view.Status{Traffic: states})
	if err := f.w.sync(f.t.Context()); err != nil {
		f.t.Fatal(err)
	}
	if len(f.patches) != patches {
		f.t.Fatalf("%d patches, want %d: %v", len(f.patches), patches, f.patches)
	}
}

// state is policy a/tp (uid u1) at generation gen with an Accepted
// condition of status and reason.
func state(gen int64, status metav1.ConditionStatus, reason, msg string) view.TrafficState {
	return view.TrafficState{Namespace: "a", Name: "tp", UID: "u1", Accepted: metav1.Condition{
		Type: v1alpha1.ConditionAccepted, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen}}
}

var (
	accepted   = state(1, metav1.ConditionTrue, v1alpha1.ReasonAccepted, "applies to Service web")
	conflicted = state(1, metav1.ConditionFalse, v1alpha1.ReasonConflicted, "Service web: TrafficPolicy old applies instead (created earlier)")
)

// cached puts the policy in the cache at resourceVersion rv and
// generation gen, with conds.
func (f *fixture) cached(rv string, gen int64, conds ...metav1.Condition) {
	f.cache = &v1alpha1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "tp", UID: "u1", ResourceVersion: rv, Generation: gen},
		Status: v1alpha1.TrafficPolicyStatus{Conditions: conds}}
}

// written is the condition of patch i, and the uid and resourceVersion it
// is applied at.
func (f *fixture) written(i int) (c metav1.Condition, uid, rv string) {
	f.t.Helper()
	p := f.patches[i]
	md := p["metadata"].(map[string]any)
	conds := p["status"].(map[string]any)["conditions"].([]any)
	if len(conds) != 1 || p["kind"] != view.KindTrafficPolicy || p["apiVersion"] != v1alpha1.SchemeGroupVersion.String() {
		f.t.Fatalf("patch %v: want one condition of a TrafficPolicy", p)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(conds[0].(map[string]any), &c); err != nil {
		f.t.Fatal(err)
	}
	return c, md["uid"].(string), md["resourceVersion"].(string)
}

// TestWriterWritesOnlyChanges: a condition is written once, at the
// cached uid and resourceVersion; a cache behind the write, a cache that
// caught up and a leader handover write nothing; a wiped status is
// written again; a changed condition is written.
func TestWriterWritesOnlyChanges(t *testing.T) {
	f := newFixture(t)
	f.cached("1", 1)
	f.sync(1, accepted)
	c, uid, rv := f.written(0)
	if c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.ReasonAccepted || c.ObservedGeneration != 1 || c.LastTransitionTime.IsZero() || uid != "u1" || rv != "1" {
		t.Errorf("wrote %+v at uid %q rv %q", c, uid, rv)
	}
	f.sync(0, accepted) // cache behind our write
	f.cached("2", 1, c)
	f.sync(0, accepted) // caught up
	f.cached("3", 1)
	f.sync(1, accepted) // wiped: rewritten
	f.cached("4", 1, c)
	f.sync(1, conflicted)
	g := newFixture(t) // a new leader finds the status written
	g.cached("7", 1, c)
	g.sync(0, accepted)
}

// TestWriterTransitionTime: lastTransitionTime stays while the status
// stays (a new message, a new generation) and moves when it changes.
func TestWriterTransitionTime(t *testing.T) {
	f := newFixture(t)
	then := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	old := accepted.Accepted
	old.LastTransitionTime = then
	f.cached("1", 2, old)
	f.sync(1, state(2, metav1.ConditionTrue, v1alpha1.ReasonAccepted, "applies to Services web, db"))
	if c, _, _ := f.written(0); !c.LastTransitionTime.Equal(&then) || c.ObservedGeneration != 2 {
		t.Errorf("same status: wrote %+v, want lastTransitionTime %v kept", c, then)
	}
	f.cached("2", 2, old)
	f.sync(1, state(2, metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound, "Service web not found"))
	if c, _, _ := f.written(0); c.LastTransitionTime.Equal(&then) || c.Status != metav1.ConditionFalse {
		t.Errorf("new status: wrote %+v, want a new lastTransitionTime", c)
	}
}

// TestWriterSkipsOthers: a policy the cache lacks, has under another uid
// (recreated) or at another generation than the state's is not written
// (a later view has the news); a conflict or NotFound from the apiserver
// is no error, any other error is.
func TestWriterSkipsOthers(t *testing.T) {
	f := newFixture(t)
	f.sync(0, accepted) // not cached
	f.cached("1", 1)
	f.cache.UID = "u2"
	f.sync(0, accepted) // recreated
	f.cached("1", 2)
	f.sync(0, accepted) // a newer generation
	f.cached("1", 1)
	f.fail = apierrors.NewConflict(view.TrafficPolicyResource.GroupResource(), "tp", errors.New("the object has been modified"))
	f.sync(1, accepted)
	f.fail = apierrors.NewNotFound(view.TrafficPolicyResource.GroupResource(), "tp")
	f.sync(1, accepted) // not remembered as written: tried again
	f.fail = apierrors.NewInternalError(errors.New("boom"))
	f.w.SetStatus(view.Status{Traffic: []view.TrafficState{accepted}})
	if err := f.w.sync(t.Context()); err == nil {
		t.Error("an internal error from the apiserver is no error of sync")
	}
}
