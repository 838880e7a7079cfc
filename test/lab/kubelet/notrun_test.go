package kubelet

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestNotRunAnnotation: a pod annotated NotRunAnnotation gets no sandbox
// and no status (its processes are the lab's), while the next pod does.
func TestNotRunAnnotation(t *testing.T) {
	h := startKubelet(t)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "node-agent", Namespace: "default", UID: "uid-node-agent",
			Annotations: map[string]string{NotRunAnnotation: "true"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "agentd", Command: []string{"/bin/true"}}}},
	}
	if _, err := h.client.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.createPod("workload", corev1.RestartPolicyAlways, nil)
	h.eventually("workload sandbox", func() (bool, string) { return h.rt.sandbox("uid-workload") != nil, "" })
	time.Sleep(200 * time.Millisecond)
	if h.rt.sandbox("uid-node-agent") != nil {
		t.Error("the kubelet made a sandbox for a pod annotated " + NotRunAnnotation)
	}
	if got := h.pod("node-agent"); got == nil || got.Status.Phase != "" {
		t.Errorf("annotated pod's status was written: %+v", got)
	}
}
