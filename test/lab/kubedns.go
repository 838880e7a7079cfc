package lab

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The cluster DNS, as kubeadm sets it up: Service kube-system/kube-dns
// holds the VIPs every pod's resolv.conf names (kubelet --cluster-dns).
// On fake nodes the lab runs no DNS server behind it and no kube-proxy:
// the Service reserves the addresses, and a pod's DNS questions reach an
// answer only through the mesh (ztunnel's DNS proxy answers enrolled
// pods). Real nodes get CoreDNS behind it (startClusterDNS).
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

// With real nodes the Service gets a server: CoreDNS (make coredns), in
// the wire netns on the control plane's addresses, serves the cluster's
// Services and Pods from the apiserver (its kubernetes plugin, with the
// least RBAC that plugin needs), and an EndpointSlice the lab manages puts it
// behind the kube-dns VIPs, where kube-proxy on the real nodes sends their
// questions. The chart's agentd and ztunnel (hostNetwork, dnsPolicy
// ClusterFirstWithHostNet) need it to find the controller; the mesh's own
// DNS cannot answer them, since it is configured by that controller. Fake
// nodes keep answering through the mesh only.

// clusterDNSReadyPort is CoreDNS's ready plugin's port on KubeAPIIPv4.
const clusterDNSReadyPort = 18181

// coreDNSUser is CoreDNS's identity at the apiserver.
const coreDNSUser = "system:coredns"

// startClusterDNS starts CoreDNS behind the kube-dns Service and waits
// until it has synced with the apiserver; without real nodes it does
// nothing.
func (l *Lab) startClusterDNS(ctx context.Context) error {
	if l.opts.RealNodes == 0 || len(l.opts.ClusterDNS) == 0 {
		return nil
	}
	if err := l.authorizeCoreDNS(ctx); err != nil {
		return err
	}
	kubeconfig := filepath.Join(l.state, "coredns.kubeconfig")
	if err := l.writeKubeconfig(kubeconfig, coreDNSUser); err != nil {
		return err
	}
	corefile := filepath.Join(l.state, "Corefile")
	conf := fmt.Sprintf(`.:53 {
    errors
    ready %s
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loadbalance
}
`, netip.AddrPortFrom(KubeAPIIPv4, clusterDNSReadyPort), ClusterDomain, kubeconfig)
	if err := os.WriteFile(corefile, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write Corefile: %w", err)
	}
	logPath := filepath.Join(l.state, "coredns.log")
	if _, err := l.startKubeProcess("coredns", []string{filepath.Join(l.opts.BinDir, "coredns"), "-conf", corefile}, logPath); err != nil {
		return fmt.Errorf("start coredns: %w", err)
	}
	if err := l.createClusterDNSEndpoints(ctx); err != nil {
		return err
	}
	return l.waitClusterDNSReady(ctx, logPath)
}

// authorizeCoreDNS gives coreDNSUser what its kubernetes plugin reads:
// list and watch of Services, EndpointSlices and Namespaces (Pods only
// with "pods verified"; the lab's Corefile answers pod names insecure).
func (l *Lab) authorizeCoreDNS(ctx context.Context) error {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: coreDNSUser},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: coreDNSUser},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: coreDNSUser},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: coreDNSUser}}}
	rbac := l.kube.client.RbacV1()
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create coredns role: %w", err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bind coredns role: %w", err)
	}
	return nil
}

// createClusterDNSEndpoints puts CoreDNS's addresses behind the kube-dns
// Service: one EndpointSlice per family, managed by the lab (the
// EndpointSlice controller leaves those alone; kube-proxy merges them with
// its own, empty ones).
func (l *Lab) createClusterDNSEndpoints(ctx context.Context) error {
	ports := []discoveryv1.EndpointPort{
		{Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)},
		{Name: ptr.To("dns-tcp"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolTCP)},
	}
	for _, a := range []netip.Addr{KubeAPIIPv4, kubeAPIIPv6} {
		family := discoveryv1.AddressTypeIPv4
		if a.Is6() {
			family = discoveryv1.AddressTypeIPv6
		}
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: ClusterDNSService + "-lab-" + strings.ToLower(string(family)), Namespace: metav1.NamespaceSystem,
				Labels: map[string]string{discoveryv1.LabelServiceName: ClusterDNSService, discoveryv1.LabelManagedBy: "amlab"}},
			AddressType: family, Ports: ports,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{a.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		}
		_, err := l.kube.client.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem).Create(ctx, slice, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create cluster dns endpoints: %w", err)
		}
	}
	return nil
}

// waitClusterDNSReady waits until CoreDNS's ready plugin answers 200:
// the kubernetes plugin has synced its caches.
func (l *Lab) waitClusterDNSReady(ctx context.Context, logPath string) error {
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	url := fmt.Sprintf("http://%s/ready", netip.AddrPortFrom(KubeAPIIPv4, clusterDNSReadyPort))
	var last string
	for {
		code, body, err := httpGetIn(ctx, l.wireName(), url)
		if err == nil && code == http.StatusOK {
			l.log.Info("cluster dns ready", "addr", KubeAPIIPv4)
			return nil
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("coredns not ready: %w (last: %s); log:\n%s", ctx.Err(), last, logTail(logPath, 20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
