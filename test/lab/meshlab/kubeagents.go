package meshlab

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/agentmesh/agentmesh/test/lab"
)

// dataplaneLabel enrolls a namespace (enabled) or opts a pod out
// (disabled) in Kubernetes mode.
const dataplaneLabel = "agentmesh.io/dataplane"

// hostnameLabel is the Node label the kubelet sets to the node's name.
const hostnameLabel = "kubernetes.io/hostname"

// replicas is how many pods each demo agent's Deployment runs: one, but
// data-validator, which runs several behind its Service.
func replicas(agent string) int32 {
	if agent == "data-validator" {
		return 3
	}
	return 1
}

// startAgents starts the agents as lab pods, or in Kubernetes mode as
// Deployments behind Services.
func (f *labFlags) startAgents(ctx context.Context, l *lab.Lab, specs []lab.PodSpec) (map[string]*lab.Pod, error) {
	if !f.kube {
		return startAgents(ctx, l, specs)
	}
	return startKubeAgents(ctx, l, specs)
}

// startKubeAgents creates the agents' namespaces (labelled for the mesh),
// ServiceAccounts, Deployments and dual-stack Services; every pod runs
// `meshlab app http`, and kube-scheduler places them. An agent with one
// replica goes to its spec's node (nodeSelector); data-validator's
// replicas spread over the nodes. A spec that is not enrolled gets the
// disabled label. It waits until the mesh has taken every pod in (or left
// it out) and its agent answers, and returns one pod per agent: the one on
// the spec's node, so the demo's calls cross nodes as it says.
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
		if err := createAgent(ctx, cs, s); err != nil {
			return nil, err
		}
	}
	pods := map[string]*lab.Pod{}
	for _, s := range specs {
		p, err := waitAgentPods(ctx, l, s)
		if err != nil {
			return nil, err
		}
		pods[s.Name] = p
	}
	return pods, nil
}

// createAgent creates one agent's ServiceAccount, Deployment and Service.
func createAgent(ctx context.Context, cs kubernetes.Interface, s lab.PodSpec) error {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: s.ServiceAccount, Namespace: s.Namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(s.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service account %s: %w", s.ServiceAccount, err)
	}
	if _, err := cs.AppsV1().Deployments(s.Namespace).Create(ctx, agentDeployment(s), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create deployment %s: %w", s.Name, err)
	}
	if _, err := cs.CoreV1().Services(s.Namespace).Create(ctx, agentService(s), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s: %w", s.Name, err)
	}
	return nil
}

// agentDeployment is the Deployment of one sample agent.
func agentDeployment(s lab.PodSpec) *appsv1.Deployment {
	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	if !s.Enrolled {
		labels[dataplaneLabel] = "disabled"
	}
	// No readiness probe: its requests would fill the callee's ztunnel
	// access log, where the demo looks for the calls it makes.
	c := corev1.Container{Name: "agent", Image: "meshlab",
		Command: []string{"meshlab", "app", "http", "--name", s.Name, "--listen", ":" + strconv.Itoa(agentPort)},
		Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: agentPort}}}
	spec := corev1.PodSpec{ServiceAccountName: s.ServiceAccount, Containers: []corev1.Container{c},
		// Real nodes (meshlab up --real-nodes) run the lab's image, not
		// this one, and no mesh unless the chart is installed there.
		Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: lab.RealNodeLabel, Operator: corev1.NodeSelectorOpDoesNotExist}}}}}}}}
	n := replicas(s.Name)
	if n == 1 {
		spec.NodeSelector = map[string]string{hostnameLabel: "n" + strconv.Itoa(s.Node)}
	} else {
		spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: hostnameLabel,
			WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: s.Labels}}}
	}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: s.Labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(n), Selector: &metav1.LabelSelector{MatchLabels: s.Labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}}}
}

// agentService is the dual-stack Service in front of an agent's pods.
func agentService(s lab.PodSpec) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace},
		Spec: corev1.ServiceSpec{Selector: s.Labels, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyPreferDualStack),
			Ports: []corev1.ServicePort{{Name: "http", Port: agentPort, TargetPort: intstr.FromString("http")}}}}
}

// waitAgentPods waits until the agent's Deployment has all its pods,
// each taken in by the mesh (or left out) and answering, and returns the
// one on the spec's node (or the first).
func waitAgentPods(ctx context.Context, l *lab.Lab, s lab.PodSpec) (*lab.Pod, error) {
	names, err := deploymentPods(ctx, l, s)
	if err != nil {
		return nil, err
	}
	var pick *lab.Pod
	for _, name := range names {
		p, err := l.WaitMeshPod(ctx, s.Namespace, name, s.Enrolled)
		if err != nil {
			return nil, err
		}
		if err := waitAgent(ctx, p); err != nil {
			return nil, err
		}
		if pick == nil || (pick.Node != s.Node && p.Node == s.Node) {
			pick = p
		}
	}
	return pick, nil
}

// deploymentPods waits until the agent's Deployment has as many pods as
// it wants, all bound to nodes, and returns their names, sorted.
func deploymentPods(ctx context.Context, l *lab.Lab, s lab.PodSpec) ([]string, error) {
	sel := metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: s.Labels})
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var names []string
	for {
		list, err := l.Client().CoreV1().Pods(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err == nil {
			names = names[:0]
			for _, p := range list.Items {
				if p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
					names = append(names, p.Name)
				}
			}
			if len(names) == int(replicas(s.Name)) {
				slices.Sort(names)
				return names, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("deployment %s/%s: pods scheduled [%s] of %d: %w (last error: %v)",
				s.Namespace, s.Name, strings.Join(names, " "), replicas(s.Name), ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
