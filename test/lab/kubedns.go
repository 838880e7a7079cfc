package lab

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The cluster DNS, as kubeadm sets it up: Service kube-system/kube-dns
// holds the VIPs every pod's resolv.conf names (kubelet --cluster-dns).
// The lab runs no DNS server behind it and no kube-proxy: the Service
// reserves the addresses, and a pod's DNS questions reach an answer only
// through the mesh (ztunnel's DNS proxy answers enrolled pods).
var (
	// ClusterDNSIPv4 is the cluster DNS Service's IPv4 ClusterIP.
	ClusterDNSIPv4 = netip.MustParseAddr("10.96.0.10")
	// ClusterDNSIPv6 is its IPv6 ClusterIP.
	ClusterDNSIPv6 = netip.MustParseAddr("fd00:96::a")
)

// ClusterDNSService names the cluster DNS Service (kube-system/kube-dns).
const ClusterDNSService = "kube-dns"

// ClusterDomain is the cluster's DNS domain.
const ClusterDomain = "cluster.local"

// createClusterDNSService creates Service kube-system/kube-dns on the
// ClusterDNS addresses, ports 53/UDP and 53/TCP, selecting
// k8s-app=kube-dns (no pod has it).
func (l *Lab) createClusterDNSService(ctx context.Context) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: ClusterDNSService, Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"k8s-app": "kube-dns"},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
			}},
	}
	policy := corev1.IPFamilyPolicySingleStack
	for _, a := range l.opts.ClusterDNS {
		svc.Spec.ClusterIPs = append(svc.Spec.ClusterIPs, a.String())
		fam := corev1.IPv4Protocol
		if a.Is6() {
			fam = corev1.IPv6Protocol
		}
		svc.Spec.IPFamilies = append(svc.Spec.IPFamilies, fam)
	}
	if len(svc.Spec.ClusterIPs) == 0 {
		return nil
	}
	if len(svc.Spec.ClusterIPs) > 1 {
		policy = corev1.IPFamilyPolicyRequireDualStack
	}
	svc.Spec.ClusterIP, svc.Spec.IPFamilyPolicy = svc.Spec.ClusterIPs[0], &policy
	_, err := l.kube.client.CoreV1().Services(metav1.NamespaceSystem).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cluster dns service: %w", err)
	}
	return nil
}
