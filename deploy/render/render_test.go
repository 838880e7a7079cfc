package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

const chartDir = "../charts/agentmesh"

// objects renders the chart and decodes every object by kind/name.
func objects(t *testing.T, ns string, overrides map[string]any) map[string]runtime.Object {
	t.Helper()
	if err := Lint(chartDir, ns, overrides); err != nil {
		t.Fatalf("lint: %v", err)
	}
	out, err := Render(chartDir, "agentmesh", ns, overrides)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	objs := map[string]runtime.Object{}
	for _, doc := range strings.Split(string(out), "\n---\n")[1:] {
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decode %q: %v", doc, err)
		}
		name := obj.(interface{ GetName() string }).GetName()
		objs[gvk.Kind+"/"+name] = obj
	}
	return objs
}

func TestRenderDefaults(t *testing.T) {
	objs := objects(t, "agentmesh-system", nil)
	for _, want := range []string{"ServiceAccount/agentmesh-controller", "ServiceAccount/agentmesh-node",
		"ClusterRole/agentmesh-controller", "ClusterRoleBinding/agentmesh-controller", "Role/agentmesh-controller",
		"RoleBinding/agentmesh-controller", "Service/agentmesh-controller", "Deployment/agentmesh-controller",
		"PodDisruptionBudget/agentmesh-controller", "DaemonSet/agentmesh-node", "DaemonSet/agentmesh-ztunnel",
		"CustomResourceDefinition/agentpolicies.agentmesh.io", "CustomResourceDefinition/httproutes.gateway.networking.k8s.io",
		"CustomResourceDefinition/grpcroutes.gateway.networking.k8s.io", "CustomResourceDefinition/referencegrants.gateway.networking.k8s.io"} {
		if objs[want] == nil {
			t.Errorf("missing %s", want)
		}
	}
	if objs["Namespace/agentmesh-system"] != nil {
		t.Errorf("Namespace rendered though createNamespace is false")
	}
	// The eleven templates' objects and every CRD of crds/.
	crds, err := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := 11 + len(crds); len(objs) != want {
		t.Errorf("rendered %d objects, want %d: %v", len(objs), want, keys(objs))
	}
	d := objs["Deployment/agentmesh-controller"].(*appsv1.Deployment)
	if *d.Spec.Replicas != 2 {
		t.Errorf("controller replicas = %d, want 2", *d.Spec.Replicas)
	}
	wantArgs(t, d.Spec.Template.Spec.Containers[0].Args, "--leader-elect=true", "--trust-domain=cluster.local",
		"--cert-lifetime=24h", "--node-service-accounts=agentmesh-system/agentmesh-node", "--token-audience=agentmesh")
	checkNodeDaemonSets(t, objs)
}

// checkNodeDaemonSets: agentd rolls a node at a time; ztunnel rolls with a
// surge pod beside the old one (no hostPort, which would keep it from
// scheduling), waits for a successor and drains within its grace period;
// both meet at the hand-off socket on one hostPath.
func checkNodeDaemonSets(t *testing.T, objs map[string]runtime.Object) {
	t.Helper()
	agentd := objs["DaemonSet/agentmesh-node"].(*appsv1.DaemonSet)
	zt := objs["DaemonSet/agentmesh-ztunnel"].(*appsv1.DaemonSet)
	if cs := agentd.Spec.Template.Spec.Containers; len(cs) != 1 || cs[0].Name != "agentd" {
		t.Errorf("agentmesh-node containers %v, want agentd alone", cs)
	}
	cs := zt.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "ztunnel" {
		t.Fatalf("agentmesh-ztunnel containers %v, want ztunnel alone", cs)
	}
	ru := zt.Spec.UpdateStrategy.RollingUpdate
	if ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 1 || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("ztunnel rolling update %+v, want maxSurge 1, maxUnavailable 0", ru)
	}
	if len(cs[0].Ports) != 0 {
		t.Errorf("ztunnel declares ports %v: with hostNetwork they are hostPorts, and a surge pod cannot schedule", cs[0].Ports)
	}
	wantArgs(t, cs[0].Args, "--handover-wait=10s", "--drain-timeout=20s", "--agentd-socket=/var/run/agentmesh/handoff/agentd.sock")
	if g := zt.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g < 10+20 {
		t.Errorf("ztunnel grace period %v, want at least handoverWait and drainTimeout", g)
	}
	wantArgs(t, agentd.Spec.Template.Spec.Containers[0].Args, "--socket=/var/run/agentmesh/handoff/agentd.sock")
	for _, ds := range []*appsv1.DaemonSet{agentd, zt} {
		found := false
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == "run" {
				found = v.HostPath != nil && v.HostPath.Path == "/var/run/agentmesh"
			}
		}
		if !found {
			t.Errorf("%s: no hostPath /var/run/agentmesh for the hand-off socket", ds.Name)
		}
	}
}

func TestRenderOverrides(t *testing.T) {
	objs := objects(t, "ignored", map[string]any{
		"namespace": "mesh", "createNamespace": true, "trustDomain": "example.org", "tokenAudience": "aud",
		"image":      map[string]any{"tag": "v9"},
		"controller": map[string]any{"replicas": 3, "podDisruptionBudget": map[string]any{"enabled": false}},
		"node":       map[string]any{"hostPaths": map[string]any{"cgroupRoot": "/sys/fs/cgroup/unified"}},
	})
	if objs["Namespace/mesh"] == nil || objs["PodDisruptionBudget/agentmesh-controller"] != nil {
		t.Errorf("objects = %v, want Namespace/mesh and no PodDisruptionBudget", keys(objs))
	}
	d := objs["Deployment/agentmesh-controller"].(*appsv1.Deployment)
	if d.Namespace != "mesh" || *d.Spec.Replicas != 3 {
		t.Errorf("controller in %q with %d replicas, want mesh and 3", d.Namespace, *d.Spec.Replicas)
	}
	wantArgs(t, d.Spec.Template.Spec.Containers[0].Args, "--trust-domain=example.org", "--token-audience=aud",
		"--serving-names=agentmesh-controller,agentmesh-controller.mesh,agentmesh-controller.mesh.svc",
		"--node-service-accounts=mesh/agentmesh-node")
	for _, name := range []string{"DaemonSet/agentmesh-node", "DaemonSet/agentmesh-ztunnel"} {
		ds := objs[name].(*appsv1.DaemonSet)
		for _, c := range ds.Spec.Template.Spec.Containers {
			if c.Image != "ghcr.io/agentmesh/agentmesh:v9" {
				t.Errorf("%s image = %s", c.Name, c.Image)
			}
			wantArgs(t, c.Args, "--controller=agentmesh-controller.mesh.svc:15012")
		}
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == "cgroup" && v.HostPath.Path != "/sys/fs/cgroup/unified" {
				t.Errorf("cgroup host path = %s", v.HostPath.Path)
			}
			if v.Name == "token" && v.Projected.Sources[0].ServiceAccountToken.Audience != "aud" {
				t.Errorf("token audience = %s", v.Projected.Sources[0].ServiceAccountToken.Audience)
			}
		}
	}
}

// TestRenderRejects: strict rendering and decoding catch a mistyped value
// and a misspelt field.
func TestRenderRejects(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	tpl := filepath.Join(dir, "templates", "node.yaml")
	src, _ := os.ReadFile(tpl)
	bad := bytes.Replace(src, []byte("mountPropagation: HostToContainer"), []byte("mountPropagaton: HostToContainer"), 1)
	if err := os.WriteFile(tpl, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Render(dir, "agentmesh", "ns", nil); err == nil || !strings.Contains(err.Error(), "mountPropagaton") {
		t.Errorf("misspelt field: err = %v", err)
	}
	os.WriteFile(tpl, bytes.Replace(src, []byte(".Values.logLevel"), []byte(".Values.logLevl"), 1), 0o644)
	if _, err := Render(dir, "agentmesh", "ns", nil); err == nil {
		t.Errorf("missing value rendered without error")
	}
}

func TestCheckStale(t *testing.T) {
	out := filepath.Join(t.TempDir(), "agentmesh.yaml")
	args := []string{"-chart", chartDir, "-values", "manifests-values.yaml", "-out", out}
	var sink bytes.Buffer
	if err := run(args, &sink); err != nil {
		t.Fatal(err)
	}
	if err := run(append(args, "-check"), &sink); err != nil {
		t.Errorf("check right after render: %v", err)
	}
	f, _ := os.OpenFile(out, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("# edited\n")
	f.Close()
	if err := run(append(args, "-check"), &sink); !errors.Is(err, errStale) {
		t.Errorf("check of an edited file: err = %v, want stale", err)
	}
}

// TestCommittedIsFresh: deploy/manifests/agentmesh.yaml is what the chart renders.
func TestCommittedIsFresh(t *testing.T) {
	args := []string{"-chart", chartDir, "-values", "manifests-values.yaml", "-out", "../manifests/agentmesh.yaml", "-check"}
	if err := run(args, &bytes.Buffer{}); err != nil {
		t.Error(err)
	}
}

func wantArgs(t *testing.T, args []string, want ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, a := range args {
		have[a] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("args %q lack %q", args, w)
		}
	}
}

func keys(m map[string]runtime.Object) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestSchemaRejects: values.schema.json catches a misspelt or ill-typed
// override instead of silently ignoring it.
func TestSchemaRejects(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"misspelt key":     {"controler": map[string]any{"replicas": 3}},
		"string replicas":  {"controller": map[string]any{"replicas": "3"}},
		"bad lifetime":     {"certLifetime": "1 day"},
		"bad log level":    {"logLevel": "verbose"},
		"relative cgroup":  {"node": map[string]any{"hostPaths": map[string]any{"cgroupRoot": "sys/fs/cgroup"}}},
		"short token life": {"node": map[string]any{"tokenExpirationSeconds": 60}},
	} {
		if _, err := Render(chartDir, "agentmesh", "ns", vals); err == nil {
			t.Errorf("%s: rendered without error", name)
		}
	}
}

// TestRenderDashboards: dashboards.enabled adds the Grafana dashboard as a
// ConfigMap with the sidecar's label, its JSON intact; off by default.
func TestRenderDashboards(t *testing.T) {
	if objs := objects(t, "ignored", nil); objs["ConfigMap/agentmesh-dashboards"] != nil {
		t.Error("dashboards ConfigMap rendered by default")
	}
	objs := objects(t, "ignored", map[string]any{"dashboards": map[string]any{"enabled": true}})
	cm, ok := objs["ConfigMap/agentmesh-dashboards"].(*corev1.ConfigMap)
	if !ok {
		t.Fatalf("objects = %v, want ConfigMap/agentmesh-dashboards", keys(objs))
	}
	want, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "agentmesh.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(cm.Data["agentmesh.json"]), &d); err != nil || d["uid"] != "agentmesh" {
		t.Errorf("dashboard JSON in the ConfigMap: %v", err)
	}
	if strings.TrimSpace(cm.Data["agentmesh.json"]) != strings.TrimSpace(string(want)) {
		t.Error("the ConfigMap's dashboard differs from dashboards/agentmesh.json")
	}
	if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "agentmesh-system" {
		t.Errorf("labels %v namespace %s", cm.Labels, cm.Namespace)
	}
}
