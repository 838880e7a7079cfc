package deployment

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// testPodsAdmitted creates (dry run) one pod from each workload's template,
// as the DaemonSet and ReplicaSet controllers would: pod validation and
// admission (ServiceAccount, Pod Security for the namespace's level) must
// accept them. No kubelet runs here, so nothing is scheduled.
func testPodsAdmitted(ctx context.Context, t *testing.T, admin kubernetes.Interface) {
	ds, err := admin.AppsV1().DaemonSets(meshNS).Get(ctx, "agentmesh-node", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get daemonset: %v", err)
	}
	dep, err := admin.AppsV1().Deployments(meshNS).Get(ctx, "agentmesh-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment: %v", err)
	}
	for name, tmpl := range map[string]corev1.PodTemplateSpec{"agentmesh-node-x": ds.Spec.Template, "agentmesh-controller-x": dep.Spec.Template} {
		pod := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
		pod.Name, pod.Namespace, pod.Spec.NodeName = name, meshNS, "node-a"
		_, err := admin.CoreV1().Pods(meshNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Errorf("pod from %s template not admitted: %v", name, err)
		}
	}
}
