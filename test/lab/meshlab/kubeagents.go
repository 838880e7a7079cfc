package meshlab

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/test/lab"
)

// dataplaneLabel enrolls a namespace (enabled) or opts a pod out
// (disabled) in Kubernetes mode.
const dataplaneLabel = "agentmesh.io/dataplane"

// startAgents starts the agents as lab pods, or in Kubernetes mode as Pods
// made through the API.
func (f *labFlags) startAgents(ctx context.Context, l *lab.Lab, specs []lab.PodSpec) (map[string]*lab.Pod, error) {
	if !f.kube {
		return startAgents(ctx, l, specs)
	}
	return startKubeAgents(ctx, l, specs)
}

// startKubeAgents creates the agents' namespaces (labelled for the mesh),
// ServiceAccounts and Pods, each running `meshlab app http`; a spec that
// is not enrolled gets the disabled label. It waits until the mesh has
// taken each pod in (or left it out) and its agent answers.
func startKubeAgents(ctx context.Context, l *lab.Lab, specs []lab.PodSpec) (map[string]*lab.Pod, error) {
	cs := l.Client()
	made := map[string]bool{}
	for _, s := range specs {
		if made[s.Namespace] {
			continue
		}
		if _, err := l.CreateNamespace(ctx, s.Namespace, map[string]string{dataplaneLabel: "enabled"}); err != nil {
			return nil, err
		}
		made[s.Namespace] = true
	}
	for _, s := range specs {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: s.ServiceAccount, Namespace: s.Namespace}}
		if _, err := cs.CoreV1().ServiceAccounts(s.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create service account %s: %w", s.ServiceAccount, err)
		}
		if _, err := l.CreatePod(ctx, agentPod(s)); err != nil {
			return nil, err
		}
	}
	pods := map[string]*lab.Pod{}
	for _, s := range specs {
		p, err := l.WaitMeshPod(ctx, s.Namespace, s.Name, s.Enrolled)
		if err != nil {
			return nil, err
		}
		if err := waitAgent(ctx, p); err != nil {
			return nil, err
		}
		pods[s.Name] = p
	}
	return pods, nil
}

// agentPod is the Pod of one sample agent.
func agentPod(s lab.PodSpec) *corev1.Pod {
	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	if !s.Enrolled {
		labels[dataplaneLabel] = "disabled"
	}
	c := corev1.Container{Name: "agent", Image: "meshlab",
		Command: []string{"meshlab", "app", "http", "--name", s.Name, "--listen", ":" + strconv.Itoa(agentPort)}}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: labels},
		Spec: corev1.PodSpec{NodeName: "n" + strconv.Itoa(s.Node), ServiceAccountName: s.ServiceAccount,
			Containers: []corev1.Container{c}}}
}
