package controller

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/debug"
	"github.com/agentmesh/agentmesh/controller/view"
)

// policyEnv drives AgentPolicies through a real apiserver and watches node
// n1's config stream (configs) and the controller's admin server.
type policyEnv struct {
	t       *testing.T
	cs      kubernetes.Interface
	dyn     dynamic.Interface
	admin   string // base URL
	configs <-chan *meshconfig.Config
	last    *meshconfig.Config
}

// run: a policy reaches the Authz of the workloads it selects, on their
// node only; its status and events say what is enforced; deleting it
// removes it.
func (e *policyEnv) run(t *testing.T) {
	e.t = t
	createRealPod(t, e.cs, "apps", "db", "default", "198.18.1.11", func(p *corev1.Pod) {
		p.Spec.NodeName, p.Labels = "n2", map[string]string{"app": "db"}
	})
	e.create("allow-web", `{"podSelector": {}, "action": "Allow", "rules": [{"from": [{"serviceAccounts": ["default"]}], "ports": [{"port": 8080}]}]}`)
	e.create("l7", `{"podSelector": {"matchLabels": {"app": "db"}}, "action": "Allow", "rules": [{"http": {"methods": ["GET"]}}]}`)
	cfg := e.waitConfig("web and db with their policies", func(c *meshconfig.Config) bool {
		web, db := find(c, "web"), find(c, "db")
		return web != nil && db != nil && slices.Equal(policyNames(web.Authz), []string{"apps/allow-web"})
	})
	if db := find(cfg, "db"); db.Authz != nil {
		t.Errorf("n1 received the authz of db, which runs on n2: %+v", db.Authz)
	}
	web := find(cfg, "web")
	want := policy.Policy{Namespace: "apps", Name: "allow-web", Action: policy.ActionAllow, Rules: []policy.Rule{{
		From:  []policy.Peer{{Identities: policy.SetOf(spiffe.New(mesh.DefaultTrustDomain, "apps", "default"))}},
		Ports: []policy.PortRange{{From: 8080, To: 8080}}}}}
	if got := web.Authz; got.MTLSMode != policy.MTLSPermissive || got.Default != policy.ActionAllow || !policiesEqual(got.Policies, want) {
		t.Errorf("web authz %+v, want PERMISSIVE, Allow and %+v", got, want)
	}
	e.waitCondition("allow-web", metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	c := e.waitCondition("l7", metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	t.Logf("l7: %s", c.Message)
	if !strings.Contains(c.Message, "decided per request") {
		t.Errorf("l7 policy's condition message %q does not say how its L7 rules are enforced", c.Message)
	}
	e.create("bad-selector", `{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Bogus"}]}, "action": "Deny", "rules": [{"ports": [{"port": 22}]}]}`)
	c = e.waitCondition("bad-selector", metav1.ConditionFalse, v1alpha1.ReasonInvalid)
	t.Logf("bad-selector: %s", c.Message)
	e.waitEvent("bad-selector", v1alpha1.ReasonInvalid)
	e.checkSteady()
	e.checkDebug()
	e.delete("allow-web")
	e.waitConfig("web without allow-web", func(c *meshconfig.Config) bool {
		w := find(c, "web")
		return w != nil && w.Authz != nil && len(w.Authz.Policies) == 0
	})
}

// checkSteady: once status and events are written, further recomputes
// (here: a namespace label change) write and emit nothing.
func (e *policyEnv) checkSteady() {
	t := e.t
	rv, evs := e.resourceVersion("l7"), e.eventCount()
	ns, err := e.cs.CoreV1().Namespaces().Get(t.Context(), "apps", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels["touched"] = "yes"
	if _, err := e.cs.CoreV1().Namespaces().Update(t.Context(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // 50 debounce periods
	if got := e.resourceVersion("l7"); got != rv {
		t.Errorf("policy l7 rewritten in a steady state: resourceVersion %s -> %s", rv, got)
	}
	if got := e.eventCount(); got != evs {
		t.Errorf("events in a steady state: %d -> %d", evs, got)
	}
}

func (e *policyEnv) resourceVersion(name string) string {
	u, err := e.dyn.Resource(view.PolicyResource).Namespace("apps").Get(e.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return u.GetResourceVersion()
}

// eventCount sums the counts of the events in apps (a repeat patches count).
func (e *policyEnv) eventCount() int32 {
	evs, err := e.cs.CoreV1().Events("apps").List(e.t.Context(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var n int32
	for _, ev := range evs.Items {
		n += max(ev.Count, 1)
	}
	return n
}

// checkDebug reads /debug/workload for web and for an unknown pod.
func (e *policyEnv) checkDebug() {
	t := e.t
	var doc debug.Workload
	e.getJSON(debug.WorkloadPath+"?pod=apps/web", http.StatusOK, &doc)
	wantPol := []debug.Policy{{Name: "apps/allow-web", Action: "Allow", Accepted: "True", Reason: v1alpha1.ReasonAccepted, Message: "enforced as written"}}
	if doc.Identity != "spiffe://cluster.local/ns/apps/sa/default" || doc.Node != "n1" || doc.Workload.Authz == nil || !slices.Equal(doc.Policies, wantPol) {
		t.Errorf("debug workload %+v, want identity of apps/default, node n1, authz and %+v", doc, wantPol)
	}
	e.getJSON(debug.WorkloadPath+"?pod=apps/nope", http.StatusNotFound, nil)
	e.getJSON(debug.WorkloadPath+"?pod=nope", http.StatusBadRequest, nil)
}

func (e *policyEnv) getJSON(path string, code int, into any) {
	e.t.Helper()
	resp, err := http.Get(e.admin + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != code {
		e.t.Fatalf("GET %s: %s, want %d", path, resp.Status, code)
	}
	if into != nil {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			e.t.Fatalf("GET %s: %v", path, err)
		}
	}
}

func (e *policyEnv) create(name, spec string) {
	e.t.Helper()
	var s map[string]any
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		e.t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "agentmesh.io/v1alpha1", "kind": "AgentPolicy",
		"metadata": map[string]any{"name": name, "namespace": "apps"}, "spec": s}}
	if _, err := e.dyn.Resource(view.PolicyResource).Namespace("apps").Create(e.t.Context(), u, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create policy %s: %v", name, err)
	}
}

func (e *policyEnv) delete(name string) {
	e.t.Helper()
	if err := e.dyn.Resource(view.PolicyResource).Namespace("apps").Delete(e.t.Context(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatalf("delete policy %s: %v", name, err)
	}
}

// waitConfig waits for a config from n1's stream that satisfies ok.
func (e *policyEnv) waitConfig(what string, ok func(*meshconfig.Config) bool) *meshconfig.Config {
	e.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if e.last != nil && ok(e.last) {
			return e.last
		}
		select {
		case e.last = <-e.configs:
		case <-deadline:
			e.t.Fatalf("%s: no such config within 30s; last: %s", what, describe(e.last))
		}
	}
}

func (e *policyEnv) waitCondition(name string, st metav1.ConditionStatus, reason string) metav1.Condition {
	e.t.Helper()
	var c *metav1.Condition
	waitFor(e.t, "policy "+name+" condition "+reason, func() bool {
		u, err := e.dyn.Resource(view.PolicyResource).Namespace("apps").Get(e.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		var p v1alpha1.AgentPolicy
		if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p) != nil {
			return false
		}
		c = meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted)
		return c != nil && c.Status == st && c.Reason == reason && c.ObservedGeneration == p.Generation
	})
	return *c
}

func (e *policyEnv) waitEvent(name, reason string) {
	e.t.Helper()
	waitFor(e.t, "event "+reason+" on "+name, func() bool {
		evs, err := e.cs.CoreV1().Events("apps").List(e.t.Context(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		return slices.ContainsFunc(evs.Items, func(ev corev1.Event) bool {
			return ev.InvolvedObject.Kind == "AgentPolicy" && ev.InvolvedObject.Name == name && ev.Reason == reason && ev.Type == corev1.EventTypeWarning
		})
	})
}

func find(c *meshconfig.Config, name string) *meshconfig.Workload {
	for i := range c.Workloads {
		if c.Workloads[i].Name == name {
			return &c.Workloads[i]
		}
	}
	return nil
}

func policyNames(t *policy.Target) []string {
	if t == nil {
		return nil
	}
	var out []string
	for _, p := range t.Policies {
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}

func describe(c *meshconfig.Config) string {
	if c == nil {
		return "none"
	}
	b, _ := json.Marshal(c.Workloads)
	return string(b)
}

// policiesEqual compares through JSON (Peer sets are maps).
func policiesEqual(got []policy.Policy, want ...policy.Policy) bool {
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	return string(a) == string(b)
}
