package kubecp

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	testNS   = "agents"
	testNode = "n1"
	testIP   = "198.18.1.10" // only written into objects; nothing is sent there
)

func TestControlPlane(t *testing.T) {
	c := startControlPlane(t, Options{})
	cs := clientset(t, c.AdminConfig())
	node := setup(t, cs)
	t.Run("Kubeconfig", func(t *testing.T) { testKubeconfig(t, c) })
	t.Run("EndpointSlice", func(t *testing.T) { testEndpointSlice(t, cs) })
	t.Run("DualStack", func(t *testing.T) { testDualStack(t, cs) })
	t.Run("Workloads", func(t *testing.T) { testWorkloads(t, cs) })
	t.Run("BoundToken", func(t *testing.T) { testBoundToken(t, cs, node) })
	t.Run("RBAC", func(t *testing.T) { testRBAC(t, c, cs) })
	t.Run("Stop", func(t *testing.T) { testStop(t, c) })
}

func clientset(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// setup makes the Namespace, ServiceAccount "agent" and Node the subtests
// use, and returns the Node.
func setup(t *testing.T, cs *kubernetes.Clientset) *corev1.Node {
	ctx := t.Context()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "agent"}}
	if _, err := cs.CoreV1().ServiceAccounts(testNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service account: %v", err)
	}
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node: %v", err)
	}
	// kube-controller-manager makes the namespace's "default" ServiceAccount.
	eventually(t, "default service account in "+testNS, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(testNS).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, ignoreNotFound(err)
	})
	return node
}

// createPod makes a pod of ServiceAccount "agent" scheduled on testNode.
// No kubelet runs, so it stays Pending unless the test writes its status.
func createPod(t *testing.T, cs *kubernetes.Clientset, name string, labels map[string]string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: "agent",
			NodeName:           testNode,
			Containers:         []corev1.Container{{Name: "app", Image: "agent:test"}},
		},
	}
	pod, err := cs.CoreV1().Pods(testNS).Create(t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return pod
}

func testKubeconfig(t *testing.T, c *ControlPlane) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	if cfg.Host != c.URL() {
		t.Errorf("kubeconfig server %q, want %q", cfg.Host, c.URL())
	}
	// Trust only CAFile: the serving certificate must chain to it.
	cfg.CAData, cfg.CAFile = nil, c.CAFile()
	ns, err := clientset(t, cfg).CoreV1().Namespaces().Get(t.Context(), testNS, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get namespace with kubeconfig and CAFile: %v", err)
	}
	if ns.Status.Phase != corev1.NamespaceActive {
		t.Errorf("namespace phase %q, want Active", ns.Status.Phase)
	}
}

func testEndpointSlice(t *testing.T, cs *kubernetes.Clientset) {
	ctx := t.Context()
	pod := createPod(t, cs, "web-0", map[string]string{"app": "web"})
	// Play kubelet: report the pod running and ready with an IP.
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: testIP, PodIPs: []corev1.PodIP{{IP: testIP}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if _, err := cs.CoreV1().Pods(testNS).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update pod status: %v", err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	svc, err := cs.CoreV1().Services(testNS).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	if svc.Spec.ClusterIP == "" {
		t.Errorf("service got no ClusterIP from %s", ServiceCIDR)
	}
	var ep discoveryv1.Endpoint
	eventually(t, "endpointslice with the pod", func(ctx context.Context) (bool, error) {
		l, err := cs.DiscoveryV1().EndpointSlices(testNS).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil || len(l.Items) == 0 || len(l.Items[0].Endpoints) == 0 {
			return false, err
		}
		ep = l.Items[0].Endpoints[0]
		return true, nil
	})
	if len(ep.Addresses) != 1 || ep.Addresses[0] != testIP {
		t.Errorf("endpoint addresses %v, want [%s]", ep.Addresses, testIP)
	}
	if ep.NodeName == nil || *ep.NodeName != testNode {
		t.Errorf("endpoint nodeName %v, want %s", ep.NodeName, testNode)
	}
	if ep.Conditions.Ready == nil || !*ep.Conditions.Ready {
		t.Errorf("endpoint not ready: %+v", ep.Conditions)
	}
	if ep.TargetRef == nil || ep.TargetRef.UID != pod.UID {
		t.Errorf("endpoint targetRef %+v, want pod %s", ep.TargetRef, pod.UID)
	}
}

func testBoundToken(t *testing.T, cs *kubernetes.Clientset, node *corev1.Node) {
	ctx := t.Context()
	pod := createPod(t, cs, "token-0", nil)
	token := podToken(t, cs, pod)
	st := review(t, cs, token)
	if !st.Authenticated {
		t.Fatalf("bound token not authenticated: %q", st.Error)
	}
	if want := "system:serviceaccount:" + testNS + ":agent"; st.User.Username != want {
		t.Errorf("username %q, want %q", st.User.Username, want)
	}
	for k, want := range map[string]string{
		"authentication.kubernetes.io/pod-name":  pod.Name,
		"authentication.kubernetes.io/pod-uid":   string(pod.UID),
		"authentication.kubernetes.io/node-name": testNode,
		"authentication.kubernetes.io/node-uid":  string(node.UID),
	} {
		if got := st.User.Extra[k]; len(got) != 1 || got[0] != want {
			t.Errorf("extra %s = %v, want [%s]", k, got, want)
		}
	}
	if st := review(t, cs, token+"x"); st.Authenticated {
		t.Errorf("tampered token authenticated as %q", st.User.Username)
	}
	// A bound token dies with its pod.
	zero := int64(0)
	if err := cs.CoreV1().Pods(testNS).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	eventually(t, "token rejected after its pod is gone", func(context.Context) (bool, error) {
		return !review(t, cs, token).Authenticated, nil
	})
}

// podToken requests a token of the pod's ServiceAccount bound to the pod.
func podToken(t *testing.T, cs *kubernetes.Clientset, pod *corev1.Pod) string {
	t.Helper()
	tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	tr, err := cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(t.Context(), pod.Spec.ServiceAccountName, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	return tr.Status.Token
}

func review(t *testing.T, cs *kubernetes.Clientset, token string) authnv1.TokenReviewStatus {
	t.Helper()
	r, err := cs.AuthenticationV1().TokenReviews().Create(t.Context(), &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token review: %v", err)
	}
	return r.Status
}

// testRBAC: a ServiceAccount with no binding may not read Secrets; one
// bound to a Role that allows reading pods may read pods (so the denial is
// RBAC's, not a broken token).
func testRBAC(t *testing.T, c *ControlPlane, cs *kubernetes.Clientset) {
	ctx := t.Context()
	pod := createPod(t, cs, "rbac-0", nil)
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}},
	}
	if _, err := cs.RbacV1().Roles(testNS).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-pod-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "agent", Namespace: testNS}},
	}
	if _, err := cs.RbacV1().RoleBindings(testNS).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role binding: %v", err)
	}
	cfg := rest.AnonymousClientConfig(c.AdminConfig())
	cfg.BearerToken = podToken(t, cs, pod)
	agent := clientset(t, cfg)
	_, err := agent.CoreV1().Secrets(testNS).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("agent lists secrets: err %v, want forbidden", err)
	}
	eventually(t, "agent lists pods", func(ctx context.Context) (bool, error) {
		_, err := agent.CoreV1().Pods(testNS).List(ctx, metav1.ListOptions{})
		if apierrors.IsForbidden(err) { // the binding may not be in the authorizer's cache yet
			return false, nil
		}
		return err == nil, err
	})
}

// testStop: Stop kills every process it started, Check notices, and a
// second Stop is a no-op.
func testStop(t *testing.T, c *ControlPlane) {
	if len(c.procs) != len(Binaries) {
		t.Fatalf("%d processes recorded, want %d", len(c.procs), len(Binaries))
	}
	if err := c.Check(); err != nil {
		t.Fatalf("check before stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := c.Check(); err == nil {
		t.Error("check after stop reports no exited component")
	}
	for _, p := range c.procs {
		if err := syscall.Kill(p.pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still there after Stop: kill 0 = %v", p.name, p.pid, err)
		}
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if _, err := os.Stat(c.Kubeconfig()); err != nil {
		t.Errorf("stop removed the state: %v", err)
	}
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
