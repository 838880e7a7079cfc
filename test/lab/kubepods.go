package lab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// errNotKube is returned by the Kubernetes-mode methods of a standalone lab.
var errNotKube = errors.New("lab not in kubernetes mode")

// kubePoll is how often the Wait methods look.
const kubePoll = 100 * time.Millisecond

// Client is a cluster-admin client of the lab's apiserver (it dials inside
// the wire netns, from any thread); nil in standalone mode.
func (l *Lab) Client() kubernetes.Interface {
	if l.kube == nil {
		return nil
	}
	return l.kube.client
}

// RestConfig is a fresh copy of the cluster-admin client config; nil in
// standalone mode.
func (l *Lab) RestConfig() *rest.Config {
	if l.kube == nil || l.kube.config == nil {
		return nil
	}
	return rest.CopyConfig(l.kube.config)
}

// KubeAPIServer is the apiserver's URL (https://198.18.0.254:PORT),
// reachable from every node and pod netns; "" in standalone mode.
func (l *Lab) KubeAPIServer() string {
	if l.kube == nil || l.kube.cp == nil {
		return ""
	}
	return l.kube.cp.URL()
}

// KubeCAFile is the file of the CA that signed the apiserver's serving
// certificate; "" in standalone mode.
func (l *Lab) KubeCAFile() string {
	if l.kube == nil || l.kube.cp == nil {
		return ""
	}
	return l.kube.cp.CAFile()
}

// Kubeconfig is a cluster-admin kubeconfig file; its server address is
// reachable inside the lab's netns only (HostKubeconfig works on the
// host). "" in standalone mode.
func (l *Lab) Kubeconfig() string {
	if l.kube == nil || l.kube.cp == nil {
		return ""
	}
	return l.kube.cp.Kubeconfig()
}

// CreateNamespace creates a namespace with labels and waits until its
// "default" ServiceAccount exists (pods are refused before).
func (l *Lab) CreateNamespace(ctx context.Context, name string, labels map[string]string) (*corev1.Namespace, error) {
	if l.kube == nil {
		return nil, errNotKube
	}
	ns, err := l.kube.client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	err = l.kubeWait(ctx, "default service account in "+name, func() (bool, error) {
		_, err := l.kube.client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, ignoreNotFound(err)
	})
	return ns, err
}

// CreateService creates a ClusterIP Service selecting pods by selector.
func (l *Lab) CreateService(ctx context.Context, ns, name string, selector map[string]string, ports ...corev1.ServicePort) (*corev1.Service, error) {
	if l.kube == nil {
		return nil, errNotKube
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: ports}}
	out, err := l.kube.client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create service %s/%s: %w", ns, name, err)
	}
	return out, nil
}

// CreatePod creates pod; an empty spec.nodeName is filled round-robin
// (n1, n2, ...), so the test knows where it runs (kube-scheduler binds the
// pods CreatePod does not make, such as a Deployment's). A namespace's "default"
// ServiceAccount that does not exist yet is waited for.
func (l *Lab) CreatePod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	if l.kube == nil {
		return nil, errNotKube
	}
	pod = pod.DeepCopy()
	if pod.Namespace == "" {
		pod.Namespace = metav1.NamespaceDefault
	}
	if pod.Spec.NodeName == "" {
		pod.Spec.NodeName = l.scheduleNode()
	}
	var out *corev1.Pod
	err := l.kubeWait(ctx, "create pod "+pod.Namespace+"/"+pod.Name, func() (bool, error) {
		var err error
		out, err = l.kube.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if apierrors.IsForbidden(err) && strings.Contains(err.Error(), "service account") {
			return false, nil // the ServiceAccount controller has not made it yet
		}
		return err == nil, err
	})
	return out, err
}

// scheduleNode picks the next node round-robin, among the fake ones when
// there are any: a lab pod's process runs on a fake kubelet, not in a
// real node's container.
func (l *Lab) scheduleNode() string {
	m := l.kube
	m.mu.Lock()
	defer m.mu.Unlock()
	for range l.opts.Nodes {
		m.nextNode = m.nextNode%l.opts.Nodes + 1
		if !l.isRealNode(m.nextNode) {
			break
		}
	}
	return nodeName(m.nextNode)
}

// WaitPodReady waits until the pod's Ready condition is True and returns
// the pod, bounded by ctx and Options.ReadyTimeout.
func (l *Lab) WaitPodReady(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := l.WaitPod(ctx, ns, name, "ready", func(p *corev1.Pod) bool {
		pod = p
		return p != nil && PodReady(p)
	})
	if err != nil && pod != nil {
		err = fmt.Errorf("%w (phase %s, conditions %s)", err, pod.Status.Phase, conditionSummary(pod))
	}
	return pod, err
}

// WaitPod waits until ok(pod) holds for pod ns/name (what names the wait
// in the error), bounded by ctx and Options.ReadyTimeout. A pod that does
// not exist is passed as nil.
func (l *Lab) WaitPod(ctx context.Context, ns, name, what string, ok func(*corev1.Pod) bool) error {
	if l.kube == nil {
		return errNotKube
	}
	return l.kubeWait(ctx, "pod "+ns+"/"+name+" "+what, func() (bool, error) {
		p, err := l.kube.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return ok(nil), nil
		}
		if err != nil {
			return false, err
		}
		return ok(p), nil
	})
}

// PodReady reports whether pod's Ready condition is True.
func PodReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// KubePod returns the lab Pod (netns, cgroup, Run) backing Kubernetes pod
// ns/name, or nil when its kubelet has not made (or has removed) it.
func (l *Lab) KubePod(ns, name string) *Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.pods {
		if p.key != p.Name && p.Namespace == ns && p.Name == name {
			return p
		}
	}
	return nil
}

// kubeWait polls cond until it is true, ctx or ReadyTimeout ends, or it
// returns an error.
func (l *Lab) kubeWait(ctx context.Context, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(kubePoll):
		}
	}
}

// ignoreNotFound drops a NotFound error.
func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// conditionSummary is "Ready=False,..." for error messages.
func conditionSummary(p *corev1.Pod) string {
	var b strings.Builder
	for i, c := range p.Status.Conditions {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%s", c.Type, c.Status)
	}
	return b.String()
}
