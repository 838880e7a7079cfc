package kubelet

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// leaseNamespace holds the node heartbeat Leases.
const leaseNamespace = "kube-node-lease"

// register creates (or updates) the Node object and sets its status.
func (k *Kubelet) register(ctx context.Context) error {
	nodes := k.opts.Client.CoreV1().Nodes()
	want := k.nodeObject()
	n, err := nodes.Create(ctx, want, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		n, err = k.updateNodeSpec(ctx, want)
	}
	if err != nil {
		return err
	}
	n.Status = k.nodeStatus(time.Now())
	if _, err := nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	k.log.Info("node registered", "addresses", k.opts.Addresses, "podCIDRs", k.opts.PodCIDRs)
	return nil
}

// updateNodeSpec makes an existing Node's labels and podCIDRs ours.
func (k *Kubelet) updateNodeSpec(ctx context.Context, want *corev1.Node) (*corev1.Node, error) {
	var out *corev1.Node
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := k.opts.Client.CoreV1().Nodes().Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Labels, n.Spec = want.Labels, want.Spec
		out, err = k.opts.Client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	return out, err
}

// nodeObject is the Node this kubelet registers.
func (k *Kubelet) nodeObject() *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.opts.Node, Labels: map[string]string{
		"kubernetes.io/hostname": k.opts.Node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
	}}}
	for _, p := range k.opts.PodCIDRs {
		n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, p.String())
	}
	if len(n.Spec.PodCIDRs) > 0 {
		n.Spec.PodCIDR = n.Spec.PodCIDRs[0]
	}
	return n
}

// nodeStatus is the Node's status at now: addresses, capacity, Ready.
func (k *Kubelet) nodeStatus(now time.Time) corev1.NodeStatus {
	st := corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: k.opts.Node}},
		Capacity:  allocatable(),
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "amlab fake kubelet is posting ready status", LastHeartbeatTime: metav1.NewTime(now),
			LastTransitionTime: metav1.NewTime(now),
		}},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "amlab", OperatingSystem: "linux", Architecture: "amd64"},
	}
	for _, a := range k.opts.Addresses {
		st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
	}
	st.Allocatable = st.Capacity
	return st
}

// allocatable is what every node offers (capacity and allocatable alike):
// what the scheduler fits pods into and what a container's unset limits
// default to in the downward API.
func allocatable() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"), corev1.ResourcePods: resource.MustParse("250"),
	}
}

// heartbeat renews the Lease and the Ready condition until ctx ends.
func (k *Kubelet) heartbeat(ctx context.Context) {
	t := time.NewTicker(k.opts.Heartbeat)
	defer t.Stop()
	for {
		if err := k.renewLease(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("renew lease", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := k.renewReady(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("renew node status", "err", err)
		}
	}
}

// renewLease creates or renews the node's Lease in kube-node-lease.
func (k *Kubelet) renewLease(ctx context.Context) error {
	leases := k.opts.Client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, k.opts.Node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: k.opts.Node, Namespace: leaseNamespace},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(k.opts.Node),
				LeaseDurationSeconds: ptr.To(int32(4 * k.opts.Heartbeat / time.Second)), RenewTime: &now}}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// renewReady refreshes the Ready condition's heartbeat time.
func (k *Kubelet) renewReady(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := k.opts.Client.CoreV1().Nodes().Get(ctx, k.opts.Node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := k.nodeStatus(time.Now())
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				st.Conditions[0].LastTransitionTime = c.LastTransitionTime
			}
		}
		n.Status = st
		_, err = k.opts.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}
