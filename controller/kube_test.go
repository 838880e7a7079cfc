package controller

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/auth"
	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/internal/configclient"
	"github.com/agentmesh/agentmesh/internal/testutil"
	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// kubeBinDir is bin/kube at the repo root; without the binaries the test
// fails under CI=true and skips otherwise.
func kubeBinDir(t *testing.T) string {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("..", "bin", "kube"))
	for _, b := range kubecp.Binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("kubernetes binaries missing (run `make kube`): %v", err)
			}
			t.Skipf("kubernetes binaries missing (run `make kube`): %v", err)
		}
	}
	return dir
}

// TestRealAPIServer runs the controller against a real kube-apiserver: a
// bound ServiceAccount token of a node-agent pod passes TokenReview and
// receives its node's view; the same token for another node is refused.
// Without the AgentPolicy CRD the controller refuses to start; with it,
// AgentPolicies reach the stream, their status and events (policyEnv).
// With the chart's Gateway API CRDs, routes on Services reach the view
// and get their status (routeEnv); so do TrafficPolicies (trafficEnv).
func TestRealAPIServer(t *testing.T) {
	bin := kubeBinDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := kubecp.Start(ctx, kubecp.Options{BinDir: bin, StateDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() { cp.Stop() })
	cs, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	checkRefusesWithoutCRD(t, cs, dyn)
	if err := kubecp.InstallCRDs(ctx, cp.AdminConfig(), filepath.Join("..", "deploy", "charts", "agentmesh", "crds")); err != nil {
		t.Fatal(err)
	}
	agent := setupCluster(t, cs)
	tok := boundToken(t, cs, agent)

	lis, admin := listen(t), listen(t)
	o, err := parseFlags([]string{"--namespace", testNS, "--metrics-addr", "", "--leader-elect=false",
		"--serving-names", "127.0.0.1", "--token-audience", "agentmesh", "--debounce", "20ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := testutil.TLogger(t, slog.LevelWarn)
	go func() {
		done <- run(rctx, o, deps{client: cs, dynamic: dyn, reviewer: auth.KubeReviewer{Client: cs}, listener: lis, admin: admin, log: log})
	}()
	t.Cleanup(func() { rcancel(); <-done })

	dir := t.TempDir()
	caFile, tokFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte(tok), 0o600)
	waitFor(t, "root configmap", func() bool {
		cm, err := cs.CoreV1().ConfigMaps(testNS).Get(ctx, ca.RootConfigMap, metav1.GetOptions{})
		return err == nil && os.WriteFile(caFile, []byte(cm.Data[ca.RootCertKey]), 0o600) == nil
	})
	got := make(chan *meshconfig.Config, 16)
	c, err := configclient.New(configclient.Options{Addr: lis.Addr().String(), CAFile: caFile, TokenFile: tokFile,
		Node: "n1", Component: configapi.ComponentAgentd, Logger: log,
		OnConfig: func(c *meshconfig.Config) error { got <- c; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	cdone := make(chan error, 1)
	go func() { cdone <- c.Run(cctx) }()
	defer func() { ccancel(); <-cdone; c.Close() }()
	select {
	case cfg := <-got:
		var names []string
		for _, w := range cfg.Workloads {
			names = append(names, w.Name)
		}
		if !slices.Contains(names, "web") {
			t.Errorf("config workloads %v, want web", names)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no config from the controller within 30s")
	}
	// The same real token may not read another node's view.
	h := &harness{t: t, addr: lis.Addr().String(), caFile: caFile}
	st := h.subscribe(h.dial(), tok, "n2", configapi.ComponentAgentd)
	if _, err := st.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("bound token of n1 asking for n2: %v, want PermissionDenied", err)
	}
	// A token for another audience fails TokenReview.
	other := boundTokenFor(t, cs, agent, "kubernetes")
	st = h.subscribe(h.dial(), other, "n1", configapi.ComponentAgentd)
	if _, err := st.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("token for another audience: %v, want Unauthenticated", err)
	}
	p := &policyEnv{t: t, cs: cs, dyn: dyn, admin: "http://" + admin.Addr().String(), configs: got}
	t.Run("policies", p.run)
	// The routes' test polls with a client of its own: sharing the
	// controller's would spend its rate limit, and slow its writes.
	pollCfg := rest.CopyConfig(cp.AdminConfig())
	pollCfg.QPS = -1
	pollDyn, err := dynamic.NewForConfig(pollCfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &routeEnv{t: t, cs: cs, dyn: pollDyn, admin: "http://" + admin.Addr().String()}
	t.Run("routes", r.run)
	tp := &trafficEnv{routeEnv{t: t, cs: cs, dyn: pollDyn, admin: "http://" + admin.Addr().String()}}
	t.Run("trafficpolicies", tp.run)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// checkRefusesWithoutCRD: without the AgentPolicy CRD the controller stops
// at once with a clear error instead of running without policies.
func checkRefusesWithoutCRD(t *testing.T, cs kubernetes.Interface, dyn dynamic.Interface) {
	t.Helper()
	o, err := parseFlags([]string{"--namespace", testNS, "--metrics-addr", "", "--leader-elect=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	lis := listen(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err = run(ctx, o, deps{client: cs, dynamic: dyn, reviewer: auth.KubeReviewer{Client: cs}, listener: lis, log: slog.New(slog.DiscardHandler)})
	const want = "AgentPolicy CRD agentpolicies.agentmesh.io not installed: "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("run without the CRD: %v, want an error starting %q", err, want)
	}
	t.Logf("without the CRD: %v", err)
}

// setupCluster makes the controller namespace, the node-agent
// ServiceAccount and pod on node n1, and an enrolled app pod with an IP.
func setupCluster(t *testing.T, cs kubernetes.Interface) *corev1.Pod {
	ctx := t.Context()
	for _, ns := range []*corev1.Namespace{nsObj(testNS, false), nsObj("apps", true)} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(testNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: nodeSA}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "default service account in apps", func() bool {
		_, err := cs.CoreV1().ServiceAccounts("apps").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	})
	agent := createRealPod(t, cs, testNS, "agent-n1", nodeSA, "")
	createRealPod(t, cs, "apps", "web", "default", "198.18.1.10")
	return agent
}

func createRealPod(t *testing.T, cs kubernetes.Interface, ns, name, sa, ip string, mod ...func(*corev1.Pod)) *corev1.Pod {
	ctx := t.Context()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "none"}}}}
	for _, m := range mod {
		m(p)
	}
	p, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip == "" {
		return p
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if p, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// boundToken requests a token of the node agent bound to its pod.
func boundToken(t *testing.T, cs kubernetes.Interface, pod *corev1.Pod) string {
	return boundTokenFor(t, cs, pod, "agentmesh")
}

func boundTokenFor(t *testing.T, cs kubernetes.Interface, pod *corev1.Pod, audience string) string {
	exp := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(t.Context(), pod.Spec.ServiceAccountName, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp,
			BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	return tr.Status.Token
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
