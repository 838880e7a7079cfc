package policystatus

import (
	"encoding/json"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/view"
)

// fixture is a Writer over a fake dynamic client that records status
// patches, a fake recorder and a cache the test sets.
type fixture struct {
	t       *testing.T
	w       *Writer
	cache   *v1alpha1.AgentPolicy
	patches []map[string]any
	events  *record.FakeRecorder
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, events: record.NewFakeRecorder(100)}
	s := runtime.NewScheme()
	v1alpha1.AddToScheme(s)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(s, map[schema.GroupVersionResource]string{view.PolicyResource: "AgentPolicyList"})
	dyn.PrependReactor("patch", "agentpolicies", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		if pa.GetSubresource() != "status" {
			t.Errorf("patch of subresource %q", pa.GetSubresource())
		}
		var m map[string]any
		json.Unmarshal(pa.GetPatch(), &m)
		f.patches = append(f.patches, m)
		return true, &v1alpha1.AgentPolicy{}, nil
	})
	f.w = New(Options{Client: dyn, Events: f.events, Logger: slog.New(slog.DiscardHandler),
		Current: func(ns, name string) *v1alpha1.AgentPolicy {
			if f.cache == nil || f.cache.Namespace != ns || f.cache.Name != name {
				return nil
			}
			return f.cache
		}})
	f.w.SetLeader(true)
	return f
}

// sync runs one sync of s and checks how many patches and events it made.
func (f *fixture) sync(s *view.Snapshot, patches, events int) {
	f.t.Helper()
	f.patches = nil
	f.w.Update(s)
	if err := f.w.sync(f.t.Context()); err != nil {
		f.t.Fatal(err)
	}
	if len(f.patches) != patches || len(f.events.Events) != events {
		f.t.Fatalf("%d patches, %d events; want %d, %d", len(f.patches), len(f.events.Events), patches, events)
	}
	for range events {
		f.t.Logf("event: %s", <-f.events.Events)
	}
}

// bad is an invalid policy's message: its condition is not Accepted, so
// it comes with an event.
const bad = "rules[0]: bad"

func state(gen int64, invalid string) *view.Snapshot {
	return &view.Snapshot{Policies: []view.PolicyState{{Namespace: "a", Name: "p", UID: "u1", Generation: gen,
		Enforced: "Allow", Invalid: invalid, L7: []string{"rules[0] (http)"}}}}
}

// cached puts the policy in the cache at resourceVersion rv, with cond.
func (f *fixture) cached(rv string, gen int64, cond *metav1.Condition) {
	f.cache = &v1alpha1.AgentPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "p", UID: "u1", ResourceVersion: rv, Generation: gen}}
	if cond != nil {
		f.cache.Status.Conditions = []metav1.Condition{*cond}
	}
}

// TestWriterWritesOnlyChanges: a condition is written and its event
// emitted once; a cache behind the write, a cache that caught up and a
// leader handover write nothing; a wiped status is written again without
// a new event; a new generation's condition is written with its event.
func TestWriterWritesOnlyChanges(t *testing.T) {
	f := newFixture(t)
	f.cached("1", 1, nil)
	f.sync(state(1, bad), 1, 1)
	if conds := f.patches[0]["status"].(map[string]any)["conditions"].([]any); len(conds) != 1 ||
		conds[0].(map[string]any)["reason"] != v1alpha1.ReasonInvalid {
		t.Errorf("patch %v", f.patches[0])
	}
	f.sync(state(1, bad), 0, 0) // cache behind our write
	want := state(1, bad).Policies[0].Accepted()
	f.cached("2", 1, &want)
	f.sync(state(1, bad), 0, 0) // caught up
	f.cached("3", 1, nil)
	f.sync(state(1, bad), 1, 0) // wiped: rewritten, no new event
	f.cached("4", 2, &want)
	f.sync(state(2, "rules[0]: worse"), 1, 1)

	g := newFixture(t) // a new leader finds the status written
	g.cached("7", 1, &want)
	g.sync(state(1, bad), 0, 0)
}

// TestWriterWarnings: an annotation warning is emitted once while it
// lasts, and again if it comes back.
func TestWriterWarnings(t *testing.T) {
	f := newFixture(t)
	warn := &view.Snapshot{Warnings: []view.Warning{{Object: corev1.ObjectReference{Kind: "Namespace", Name: "x", UID: "n1"},
		Reason: view.ReasonInvalidAnnotation, Message: "bad"}}}
	f.sync(warn, 0, 1)
	f.sync(warn, 0, 0)
	f.sync(&view.Snapshot{}, 0, 0)
	f.sync(warn, 0, 1)
}
