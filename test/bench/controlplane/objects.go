package controlplane

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/agentmesh/agentmesh/controller/view"
)

// workers is how many API writes run at once while populating.
const workers = 8

// Names of the benchmark's objects.
func nodeName(i int) string      { return "bench-node-" + strconv.Itoa(i) }
func namespaceName(i int) string { return "bench-" + strconv.Itoa(i) }
func serviceName(i int) string   { return "svc-" + strconv.Itoa(i) }

// serviceRef is service i's namespace and name.
func (o Options) serviceRef(i int) (ns, name string) {
	return namespaceName(i % o.Namespaces), serviceName(i)
}

// podIP is pod i's address: 198.19.0.0/16 (lab pod range; only API data,
// nothing is ever sent there).
func podIP(i int) netip.Addr {
	n := i + 2
	return netip.AddrFrom4([4]byte{198, 19, byte(n >> 8), byte(n)})
}

// populate creates the namespaces, nodes, services and pods, each pod with
// a Running, Ready status.
func populate(ctx context.Context, c kubernetes.Interface, o Options) error {
	for i := range o.Namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespaceName(i),
			Labels: map[string]string{view.DataplaneLabel: view.DataplaneEnabled}}}
		if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create namespace: %w", err)
		}
	}
	if err := parallel(ctx, o.Nodes, func(i int) error { return createNode(ctx, c, i) }); err != nil {
		return err
	}
	if err := parallel(ctx, o.Services, func(i int) error { return createService(ctx, c, o, i) }); err != nil {
		return err
	}
	for i := range o.Namespaces {
		if err := waitDefaultSA(ctx, c, namespaceName(i)); err != nil {
			return err
		}
	}
	return parallel(ctx, o.Pods, func(i int) error { return createPod(ctx, c, o, i) })
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first error.
func parallel(ctx context.Context, n int, fn func(int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					cancel(err)
				}
			}
		})
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

func createNode(ctx context.Context, c kubernetes.Interface, i int) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName(i)}}
	if _, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	return nil
}

func createService(ctx context.Context, c kubernetes.Interface, o Options, i int) error {
	ns, name := o.serviceRef(i)
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	if _, err := c.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service: %w", err)
	}
	return nil
}

// createPod creates pod i (backing service i mod Services, on node i mod
// Nodes) and sets its status through the status subresource, as a kubelet
// would.
func createPod(ctx context.Context, c kubernetes.Interface, o Options, i int) error {
	ns, svc := o.serviceRef(i % o.Services)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-" + strconv.Itoa(i), Namespace: ns, Labels: map[string]string{"app": svc}},
		Spec: corev1.PodSpec{NodeName: nodeName(i % o.Nodes),
			Containers: []corev1.Container{{Name: "app", Image: "agent", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	}
	p, err := c.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod: %w", err)
	}
	p.Status = runningStatus(podIP(i))
	if _, err := c.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("pod status: %w", err)
	}
	return nil
}

// runningStatus is a started, ready pod's status with address ip.
func runningStatus(ip netip.Addr) corev1.PodStatus {
	now := metav1.Now()
	var conds []corev1.PodCondition
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		conds = append(conds, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	return corev1.PodStatus{
		Phase: corev1.PodRunning, Conditions: conds, HostIP: "198.18.0.1", StartTime: &now,
		PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: "agent", Ready: true, Started: ptrTrue(),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
	}
}

func ptrTrue() *bool { return ptrTo(true) }

// waitDefaultSA waits for namespace ns's "default" ServiceAccount (pods
// are refused without it).
func waitDefaultSA(ctx context.Context, c kubernetes.Interface, ns string) error {
	return poll(ctx, 30*time.Second, "default serviceaccount in "+ns, func() (bool, error) {
		_, err := c.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
}

// poll calls cond every 50ms until it is true, fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	return pollEvery(ctx, timeout, 50*time.Millisecond, what, cond)
}

// pollEvery is poll with its own interval.
func pollEvery(ctx context.Context, timeout, every time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-time.After(every):
		}
	}
}

// waitEndpoints waits until the EndpointSlices of the bench's namespaces
// list every pod as ready (kube-controller-manager writes them).
func waitEndpoints(ctx context.Context, c kubernetes.Interface, o Options) error {
	return pollEvery(ctx, 3*time.Minute, 500*time.Millisecond, "endpointslices of every pod", func() (bool, error) {
		ready := 0
		for i := range o.Namespaces {
			l, err := c.DiscoveryV1().EndpointSlices(namespaceName(i)).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			for _, s := range l.Items {
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && *e.Conditions.Ready {
						ready++
					}
				}
			}
		}
		return ready == o.Pods, nil
	})
}
