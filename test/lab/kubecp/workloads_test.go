package kubecp

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// testDualStack: a PreferDualStack Service gets a ClusterIP from both
// ranges, and the endpointslice controller makes one slice per family for
// a pod with an IPv4 and an IPv6 address.
func testDualStack(t *testing.T, cs *kubernetes.Clientset) {
	ctx := t.Context()
	const v4, v6 = "198.18.1.11", "fd00:18:1::11"
	pod := createPod(t, cs, "dual-0", map[string]string{"app": "dual"})
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: v4, PodIPs: []corev1.PodIP{{IP: v4}, {IP: v6}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if _, err := cs.CoreV1().Pods(testNS).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update pod status: %v", err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "dual"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "dual"}, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyPreferDualStack),
		Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
	}}
	svc, err := cs.CoreV1().Services(testNS).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	ranges := []netip.Prefix{netip.MustParsePrefix(ServiceCIDR), netip.MustParsePrefix(ServiceCIDRv6)}
	if len(svc.Spec.ClusterIPs) != 2 {
		t.Fatalf("clusterIPs %v, want one from each of %v", svc.Spec.ClusterIPs, ranges)
	}
	for i, ip := range svc.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err != nil || !ranges[i].Contains(a) {
			t.Errorf("clusterIPs[%d] = %s, want an address in %s", i, ip, ranges[i])
		}
	}
	want := map[discoveryv1.AddressType]string{discoveryv1.AddressTypeIPv4: v4, discoveryv1.AddressTypeIPv6: v6}
	eventually(t, "an endpointslice per family", func(ctx context.Context) (bool, error) {
		l, err := cs.DiscoveryV1().EndpointSlices(testNS).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=dual"})
		if err != nil {
			return false, err
		}
		got := map[discoveryv1.AddressType]string{}
		for _, s := range l.Items {
			for _, ep := range s.Endpoints {
				got[s.AddressType] = ep.Addresses[0]
			}
		}
		return len(got) == 2 && got[discoveryv1.AddressTypeIPv4] == want[discoveryv1.AddressTypeIPv4] &&
			got[discoveryv1.AddressTypeIPv6] == want[discoveryv1.AddressTypeIPv6], nil
	})
}

// testWorkloads: kube-controller-manager turns a Deployment into a
// ReplicaSet and its Pods and a StatefulSet into its first Pod, and
// kube-scheduler binds them to the one schedulable Node.
func testWorkloads(t *testing.T, cs *kubernetes.Clientset) {
	ctx := t.Context()
	// Play kubelet: report the node Ready with room for pods (then
	// node-lifecycle-controller lifts the not-ready taint).
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := cs.CoreV1().Nodes().Get(ctx, testNode, metav1.GetOptions{})
		if err != nil {
			return err
		}
		node.Status.Allocatable = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("20"),
			corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")}
		node.Status.Capacity = node.Status.Allocatable
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("node status: %v", err)
	}
	labels := map[string]string{"app": "workload"}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
		ServiceAccountName: "agent", Containers: []corev1.Container{{Name: "app", Image: "agent:test"}}}}
	sel := &metav1.LabelSelector{MatchLabels: labels}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "workload"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(2)), Selector: sel, Template: tmpl}}
	if _, err := cs.AppsV1().Deployments(testNS).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	ss := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}}, Spec: tmpl.Spec}}}
	if _, err := cs.AppsV1().StatefulSets(testNS).Create(ctx, ss, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create statefulset: %v", err)
	}
	eventually(t, "deployment's and statefulset's pods bound to "+testNode, func(ctx context.Context) (bool, error) {
		l, err := cs.CoreV1().Pods(testNS).List(ctx, metav1.ListOptions{LabelSelector: "app in (workload,db)"})
		if err != nil {
			return false, err
		}
		var bound []string
		for _, p := range l.Items {
			if p.Spec.NodeName == testNode {
				bound = append(bound, p.Labels["app"])
			}
		}
		slices.Sort(bound)
		return slices.Equal(bound, []string{"db", "workload", "workload"}), nil
	})
	l, err := cs.CoreV1().Pods(testNS).List(ctx, metav1.ListOptions{LabelSelector: "app=db"})
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != "db-0" {
		t.Errorf("statefulset pods %v (%v), want db-0", l, err)
	}
}
