package deployment

import (
	"context"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/agentmesh/agentmesh/controller/auth"
)

// TestManifests applies deploy/manifests/agentmesh.yaml to a real
// apiserver and checks the rights it grants: sufficient and no broader.
// One control plane serves every subtest.
func TestManifests(t *testing.T) {
	cp := startCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	admin := cp.AdminConfig()
	objs := readManifests(t)
	if len(objs) == 0 {
		t.Fatal("deploy/manifests/agentmesh.yaml has no objects")
	}
	if err := apply(ctx, admin, objs); err != nil {
		t.Fatalf("apply manifests: %v", err)
	}
	t.Logf("applied %d objects", len(objs))
	// Apply twice: the manifest is idempotent (kubectl apply on upgrade).
	if err := apply(ctx, admin, objs); err != nil {
		t.Fatalf("apply manifests again: %v", err)
	}
	ctrl := saConfig(ctx, t, admin, meshNS, controllerSA)
	node := saConfig(ctx, t, admin, meshNS, nodeSA)

	t.Run("ControllerAccess", func(t *testing.T) { checkAccess(ctx, t, ctrl, controllerAccess) })
	t.Run("NodeAccess", func(t *testing.T) { checkAccess(ctx, t, node, nodeAccess) })
	t.Run("RealCalls", func(t *testing.T) {
		testRealCalls(ctx, t, kubernetes.NewForConfigOrDie(ctrl), kubernetes.NewForConfigOrDie(node))
	})
	t.Run("ReviewNodeToken", func(t *testing.T) {
		testReviewNodeToken(ctx, t, kubernetes.NewForConfigOrDie(admin), kubernetes.NewForConfigOrDie(ctrl))
	})
	t.Run("PodsAdmitted", func(t *testing.T) { testPodsAdmitted(ctx, t, kubernetes.NewForConfigOrDie(admin)) })
	t.Run("ControllerBinary", func(t *testing.T) { testControllerBinary(ctx, t, cp, ctrl) })
}

// testRealCalls makes a few of the calls themselves (the access reviews
// ask the same authorizer, this proves the wiring end to end).
func testRealCalls(ctx context.Context, t *testing.T, ctrl, node kubernetes.Interface) {
	if _, err := ctrl.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("controller list pods: %v", err)
	}
	if _, err := ctrl.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("controller list endpointslices: %v", err)
	}
	forbidden := map[string]error{}
	_, forbidden["controller list secrets in its namespace"] = ctrl.CoreV1().Secrets(meshNS).List(ctx, metav1.ListOptions{})
	_, forbidden["controller get kube-root-ca.crt in kube-system"] = ctrl.CoreV1().ConfigMaps("kube-system").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	_, forbidden["controller create pod"] = ctrl.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	_, forbidden["node list pods"] = node.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	_, forbidden["node get root configmap"] = node.CoreV1().ConfigMaps(meshNS).Get(ctx, rootCM, metav1.GetOptions{})
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s: err = %v, want Forbidden", what, err)
		}
	}
}

// testReviewNodeToken makes the token a node pod gets (bound to a pod on a
// node, audience agentmesh) and has the controller's account review it:
// the review must authenticate it and name the pod and the node, which is
// what controller/auth authorizes on.
func testReviewNodeToken(ctx context.Context, t *testing.T, admin, ctrl kubernetes.Interface) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	if _, err := admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}
	no := false
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agentmesh-node-test", Namespace: meshNS},
		Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: nodeSA, AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "agentd", Image: "agentmesh"}}}}
	pod, err := admin.CoreV1().Pods(meshNS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	exp := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts(meshNS).CreateToken(ctx, nodeSA, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: &exp,
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("bound token: %v", err)
	}
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: tr.Status.Token, Audiences: []string{audience}}}
	res, err := ctrl.AuthenticationV1().TokenReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("controller token review: %v", err)
	}
	st := res.Status
	if !st.Authenticated {
		t.Fatalf("node token not authenticated: %s", st.Error)
	}
	want := map[string]string{
		"username": "system:serviceaccount:" + meshNS + ":" + nodeSA,
		"pod-name": pod.Name, "node-name": "node-a",
	}
	got := map[string]string{"username": st.User.Username,
		"pod-name":  first(st.User.Extra[auth.ExtraPodName]),
		"node-name": first(st.User.Extra[auth.ExtraNodeName])}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("review %s = %q, want %q", k, got[k], v)
		}
	}
}

func first(v authnv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
