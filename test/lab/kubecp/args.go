package kubecp

import (
	"strconv"
	"strings"
)

// Cluster settings.
const (
	// ServiceCIDR is the IPv4 Service ClusterIP range, the primary family:
	// only a setting, nothing routes there (the lab runs no kube-proxy).
	ServiceCIDR = "10.96.0.0/16"
	// ServiceCIDRv6 is the IPv6 Service ClusterIP range: a Service with
	// ipFamilyPolicy PreferDualStack or RequireDualStack gets an address
	// from both. kube-apiserver takes IPv6 ranges of at most 20 host bits
	// (/108 or longer).
	ServiceCIDRv6       = "fd00:96::/112"
	kubernetesServiceIP = "10.96.0.1" // the first address, taken by the "kubernetes" Service
	// Issuer is the ServiceAccount token issuer, also the API audience.
	Issuer = "https://kubernetes.default.svc.cluster.local"
)

// admissionPlugins are the admission plugins named explicitly (the
// apiserver's defaults stay on too): namespaces being deleted take no new
// objects, and pods get their ServiceAccount and its projected token.
var admissionPlugins = []string{"NamespaceLifecycle", "ServiceAccount", "LimitRanger", "ResourceQuota"}

// controllers are the kube-controller-manager controllers the lab needs.
var controllers = []string{
	"deployment-controller",                    // Deployments -> ReplicaSets, rollouts
	"replicaset-controller",                    // ReplicaSets -> Pods
	"statefulset-controller",                   // StatefulSets -> Pods
	"daemonset-controller",                     // DaemonSets -> a Pod per node (the chart's node component on real nodes)
	"node-lifecycle-controller",                // lifts the not-ready taint new Nodes get once they are Ready
	"endpointslice-controller",                 // Service selectors -> EndpointSlices
	"serviceaccount-controller",                // the "default" ServiceAccount per namespace
	"serviceaccount-token-controller",          // tokens for kube-controller-manager's own controllers
	"namespace-controller",                     // namespace deletion
	"garbage-collector-controller",             // ownerReferences
	"root-ca-certificate-publisher-controller", // kube-root-ca.crt ConfigMap per namespace
}

func etcdArgs(f files, clientURL, peerURL string) []string {
	return []string{
		"--name=kubecp",
		"--data-dir=" + f.etcdData,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=kubecp=" + peerURL,
		"--unsafe-no-fsync", // a lab's data need not survive a power cut
		"--log-level=warn",
	}
}

func apiserverArgs(o Options, f files, etcdURL string, port uint16) []string {
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + o.BindAddr.String(),
		"--advertise-address=" + o.BindAddr.String(),
		"--secure-port=" + strconv.Itoa(int(port)),
		"--tls-cert-file=" + f.servingCert,
		"--tls-private-key-file=" + f.servingKey,
		"--client-ca-file=" + f.clientCA,
		"--authorization-mode=RBAC",
		"--anonymous-auth=false",
		"--service-account-key-file=" + f.saPub,
		"--service-account-signing-key-file=" + f.saKey,
		"--service-account-issuer=" + Issuer,
		"--api-audiences=" + Issuer,
		"--service-cluster-ip-range=" + ServiceCIDR + "," + ServiceCIDRv6,
		"--enable-admission-plugins=" + strings.Join(admissionPlugins, ","),
		"--allow-privileged=true",
		"--profiling=false",
		// kubectl logs and exec on real nodes: the apiserver dials the
		// kubelet at the Node's InternalIP (the lab has no node names in
		// DNS) with a certificate from clientCA, which those kubelets
		// trust (their serving certificates are self-signed: not verified).
		"--kubelet-client-certificate=" + f.kubeletClientCert,
		"--kubelet-client-key=" + f.kubeletClientKey,
		"--kubelet-preferred-address-types=InternalIP,Hostname",
	}
	if o.BindAddr.IsLoopback() {
		// The "kubernetes" Service's endpoints may not be loopback
		// addresses; do not keep failing to write them.
		args = append(args, "--endpoint-reconciler-type=none")
	}
	return args
}

func kcmArgs(f files) []string {
	return []string{
		"--kubeconfig=" + f.kcmKubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--service-account-private-key-file=" + f.saKey,
		"--root-ca-file=" + f.caCert,
		"--use-service-account-credentials=true",
		"--leader-elect=false",
		"--secure-port=0", // no health endpoint to bind: Start watches the apiserver instead
		"--profiling=false",
	}
}

func schedulerArgs(f files) []string {
	return []string{
		"--kubeconfig=" + f.schedulerKubeconfig,
		"--leader-elect=false",
		"--secure-port=0", // no health endpoint to bind, as for kube-controller-manager
		"--profiling=false",
	}
}
