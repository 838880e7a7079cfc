package deployment

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestRulesWithinTable makes "no broader" exhaustive without a cluster:
// every (verb, group, resource, name) the manifest's RBAC grants must be
// an allowed row of controllerAccess, in the same scope, and nothing binds
// the node account. A rule added to the chart fails here until the table
// (and the chart README) say why.
func TestRulesWithinTable(t *testing.T) {
	granted := 0
	for _, u := range readManifests(t) {
		switch u.GetKind() {
		case "ClusterRole", "Role":
			var r rbacv1.ClusterRole // Role has the same rules field
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
				t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
			}
			for _, a := range expand(r.Rules, u.GetNamespace()) {
				granted++
				if !slices.Contains(controllerAccess, a) {
					t.Errorf("%s %s grants %v, which controllerAccess does not allow", u.GetKind(), u.GetName(), a)
				}
			}
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &b); err != nil {
				t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
			}
			for _, s := range b.Subjects {
				if s.Kind != rbacv1.ServiceAccountKind || s.Name != controllerSA || s.Namespace != meshNS {
					t.Errorf("%s %s binds %s %s/%s; only the controller's account should be bound", u.GetKind(), u.GetName(), s.Kind, s.Namespace, s.Name)
				}
			}
		}
	}
	if granted == 0 {
		t.Fatal("the manifest grants nothing: no ClusterRole or Role found")
	}
}

// expand lists every allowed access the rules grant in ns ("" for a
// ClusterRole).
func expand(rules []rbacv1.PolicyRule, ns string) []access {
	var out []access
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						out = append(out, access{verb: v, group: g, resource: res, ns: ns, name: n, allowed: true})
					}
				}
			}
		}
	}
	return out
}
