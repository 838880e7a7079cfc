package controller

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agentmesh/agentmesh/controller/api/v1alpha1"
	"github.com/agentmesh/agentmesh/controller/auth"
	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/controller/view"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

const (
	testNS = "agentmesh-system"
	nodeSA = "agentmesh-node"
)

// fakeReviewer answers TokenReviews from a table.
type fakeReviewer struct {
	mu     sync.Mutex
	tokens map[string]authnv1.TokenReviewStatus
}

func (f *fakeReviewer) Review(_ context.Context, tok string, auds []string) (authnv1.TokenReviewStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.tokens[tok]
	if !ok {
		return authnv1.TokenReviewStatus{Error: "unknown token"}, nil
	}
	st.Audiences = auds
	return st, nil
}

// add registers a token for a service account bound to a pod on node.
func (f *fakeReviewer) add(tok, ns, sa, node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[tok] = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{
		Username: "system:serviceaccount:" + ns + ":" + sa,
		Extra: map[string]authnv1.ExtraValue{auth.ExtraPodName: {"pod-" + node}, auth.ExtraPodUID: {"uid-" + node},
			auth.ExtraNodeName: {node}},
	}}
}

func (f *fakeReviewer) remove(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tokens, tok)
}

// harness is a controller run on a fake clientset, serving TLS on loopback.
type harness struct {
	t        *testing.T
	client   *fake.Clientset
	dynamic  dynamic.Interface // AgentPolicies
	reviewer *fakeReviewer
	addr     string
	admin    string // admin HTTP address
	caFile   string
	dir      string
	stop     func()
	flags    []string // extra controller flags
}

func startController(t *testing.T, objs ...runtime.Object) *harness {
	t.Helper()
	h := newHarness(t, fake.NewClientset(objs...))
	h.start()
	return h
}

func newHarness(t *testing.T, client *fake.Clientset, flags ...string) *harness {
	return &harness{t: t, client: client, dynamic: fakeDynamic(t), dir: t.TempDir(), flags: flags,
		reviewer: &fakeReviewer{tokens: map[string]authnv1.TokenReviewStatus{}}}
}

// start runs the controller (again, after stop: a restart).
func (h *harness) start() {
	t := h.t
	lis, err := net.Listen("tcp", cmpOr(h.addr, "127.0.0.1:0")) // a restart keeps the address
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	alis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.admin = alis.Addr().String()
	args := []string{"--namespace", testNS, "--metrics-addr", "", "--leader-elect=false",
		"--debounce", "10ms", "--serving-names", "127.0.0.1", "--trust-domain", "td.test"}
	o, err := parseFlags(append(args, h.flags...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := testutil.TLogger(t, slog.LevelWarn)
	go func() {
		done <- run(ctx, o, deps{client: h.client, dynamic: h.dynamic, reviewer: h.reviewer, listener: lis, admin: alis, log: log})
	}()
	h.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("controller did not stop within 20s")
		}
	})
	t.Cleanup(h.stop)
	h.caFile = filepath.Join(h.dir, "ca.pem")
	os.WriteFile(h.caFile, h.rootPEM(), 0o600)
}

// rootPEM waits for the published root ConfigMap.
func (h *harness) rootPEM() []byte {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		cm, err := h.client.CoreV1().ConfigMaps(testNS).Get(context.Background(), ca.RootConfigMap, metav1.GetOptions{})
		if err == nil {
			return []byte(cm.Data[ca.RootCertKey])
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatal("root configmap not published within 10s")
	return nil
}

// token makes a token file for a node component on node.
func (h *harness) token(name, sa, node string) string {
	h.reviewer.add(name, testNS, sa, node)
	p := filepath.Join(h.dir, name+".token")
	if err := os.WriteFile(p, []byte(name+"\n"), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p
}

func nsObj(name string, enabled bool) *corev1.Namespace {
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if enabled {
		n.Labels = map[string]string{"agentmesh.io/dataplane": "enabled"}
	}
	return n
}

func nodeObj(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func saObj(ns, name string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func podObj(ns, name, sa, node, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

// fakeDynamic is a fake dynamic client serving AgentPolicies.
func fakeDynamic(t *testing.T, policies ...runtime.Object) dynamic.Interface {
	t.Helper()
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(s,
		map[schema.GroupVersionResource]string{view.PolicyResource: "AgentPolicyList"}, policies...)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
