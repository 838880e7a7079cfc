package controller

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/debug"
	"github.com/agentmesh/agentmesh/controller/stream"
)

// debugWorkload serves debug.WorkloadPath from the hub's view and the
// AgentPolicy cache.
type debugWorkload struct {
	hub    *stream.Hub
	policy func(namespace, name string) *v1alpha1.AgentPolicy
}

func (d debugWorkload) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := viewQuery(w, r, d.hub, "pod")
	if !ok {
		return
	}
	doc, found := d.describe(ns, name)
	if !found {
		http.Error(w, "pod "+ns+"/"+name+" is not in the controller's view (no such pod, or it has no address yet, is host-network or finished)", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(doc)
}

func (d debugWorkload) describe(ns, name string) (debug.Workload, bool) {
	wl, td, ok := d.hub.Workload(ns, name)
	if !ok {
		return debug.Workload{}, false
	}
	doc := debug.Workload{Workload: wl, Node: wl.Node, Policies: []debug.Policy{},
		Identity: spiffe.New(td, wl.Namespace, wl.ServiceAccount).String()}
	if doc.Workload.Authz != nil {
		for _, p := range doc.Workload.Authz.Policies {
			doc.Policies = append(doc.Policies, d.policyDoc(p.Namespace, p.Name, string(p.Action)))
		}
	}
	return doc, true
}

func (d debugWorkload) policyDoc(ns, name, action string) debug.Policy {
	out := debug.Policy{Name: ns + "/" + name, Action: action, Accepted: string(metav1.ConditionUnknown)}
	p := d.policy(ns, name)
	if p == nil {
		return out
	}
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted)
	switch {
	case c == nil:
	case c.ObservedGeneration != p.Generation:
		out.Reason, out.Message = "Pending", fmt.Sprintf("the condition is of generation %d, the policy is at %d", c.ObservedGeneration, p.Generation)
	default:
		out.Accepted, out.Reason, out.Message = string(c.Status), c.Reason, c.Message
	}
	return out
}

// debugService serves debug.ServicePath from the hub's view.
type debugService struct{ hub *stream.Hub }

func (d debugService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := viewQuery(w, r, d.hub, "service")
	if !ok {
		return
	}
	svc, found := d.hub.Service(ns, name)
	if !found {
		http.Error(w, "service "+ns+"/"+name+" is not in the controller's view", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(svc)
}

// viewQuery reads the query parameter param as <namespace>/<name> and
// checks that the hub has a view; on false it has answered the error.
func viewQuery(w http.ResponseWriter, r *http.Request, hub *stream.Hub, param string) (ns, name string, ok bool) {
	ns, name, ok = strings.Cut(r.URL.Query().Get(param), "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		http.Error(w, "want ?"+param+"=<namespace>/<name>", http.StatusBadRequest)
		return "", "", false
	}
	select {
	case <-hub.Ready():
	default:
		http.Error(w, "no view yet: informer caches not synced", http.StatusServiceUnavailable)
		return "", "", false
	}
	return ns, name, true
}
