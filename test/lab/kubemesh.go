package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vishvananda/netlink"

	"github.com/agentmesh/agentmesh/test/lab/kubelet"
)

// The mesh's objects in Kubernetes mode (as deploy/ names them).
const (
	// MeshNamespace holds the controller, its CA and the node pods.
	MeshNamespace = "agentmesh-system"
	// ControllerServiceAccount is the controller's ServiceAccount.
	ControllerServiceAccount = "agentmesh-controller"
	// NodeServiceAccount is the node components' ServiceAccount.
	NodeServiceAccount = "agentmesh-node"
	// ControllerServerName is the name in the controller's serving
	// certificate that node components verify.
	ControllerServerName = "agentmesh-controller.agentmesh-system.svc"
	// TokenAudience is the audience of the node components' tokens.
	TokenAudience = "agentmesh"
	// RootConfigMap publishes the mesh root (key RootConfigMapKey).
	RootConfigMap    = "agentmesh-ca-root"
	RootConfigMapKey = "root-cert.pem"
	// LeaseName is the controllers' leader election Lease.
	LeaseName = "agentmesh-controller"
)

// nodeTokenTTL is the lifetime of the node components' tokens; the lab
// does not refresh them, so it outlives any lab.
const nodeTokenTTL = 24 * time.Hour

// NodePodName is the Pod object node i's agentd and ztunnel run as (the
// kubelet leaves it alone: the lab runs them in the node netns).
func NodePodName(i int) string { return "agentmesh-node-" + nodeName(i) }

// NodeTokenFile is node i's token file (--token-file).
func (l *Lab) NodeTokenFile(i int) string { return filepath.Join(l.state, nodeName(i), "token") }

// ControllerCAFile is the mesh root the node components trust
// (--controller-ca), copied from ConfigMap agentmesh-ca-root.
func (l *Lab) ControllerCAFile() string { return filepath.Join(l.state, "ca-root.pem") }

// prepareKubeMesh installs the CRDs, applies the mesh's objects, starts controller replica 0
// and saves the mesh root.
func (l *Lab) prepareKubeMesh(ctx context.Context) error {
	if err := InstallMeshCRDs(ctx, l.kube.config); err != nil {
		return err
	}
	n, err := ApplyMeshObjects(ctx, l.kube.client, l.opts.Manifest)
	if err != nil {
		return err
	}
	l.log.Info("mesh objects applied", "manifest", l.opts.Manifest, "from_manifest", n)
	if err := l.writeControllerKubeconfig(ctx); err != nil {
		return err
	}
	if err := l.StartController(ctx, 0); err != nil {
		return err
	}
	return l.saveMeshRoot(ctx)
}

// RefreshMeshRoot copies the root ConfigMap to ControllerCAFile again, as
// the kubelet updates a ConfigMap volume (the lab's node components read
// the file, which nothing else updates after the lab started).
func (l *Lab) RefreshMeshRoot(ctx context.Context) error { return l.saveMeshRoot(ctx) }

// saveMeshRoot waits for the root ConfigMap and writes ControllerCAFile
// (replaced whole, by a rename, as a kubelet's atomic writer does).
func (l *Lab) saveMeshRoot(ctx context.Context) error {
	var pem string
	err := l.kubeWait(ctx, "configmap "+RootConfigMap, func() (bool, error) {
		cm, err := l.kube.client.CoreV1().ConfigMaps(MeshNamespace).Get(ctx, RootConfigMap, metav1.GetOptions{})
		if err != nil {
			return false, ignoreNotFound(err)
		}
		pem = cm.Data[RootConfigMapKey]
		return pem != "", nil
	})
	if err != nil {
		return err
	}
	tmp := l.ControllerCAFile() + ".new"
	if err := os.WriteFile(tmp, []byte(pem), 0o644); err != nil {
		return fmt.Errorf("write mesh root: %w", err)
	}
	if err := os.Rename(tmp, l.ControllerCAFile()); err != nil {
		return fmt.Errorf("write mesh root: %w", err)
	}
	return nil
}

// prepareKubeNode creates node i's Pod object and writes its bound token.
func (l *Lab) prepareKubeNode(ctx context.Context, i int) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: NodePodName(i), Namespace: MeshNamespace,
			Labels:      map[string]string{"app.kubernetes.io/name": "agentmesh-node"},
			Annotations: map[string]string{kubelet.NotRunAnnotation: "true"}},
		// hostNetwork, as the chart's node pods: no workload of the mesh.
		Spec: corev1.PodSpec{NodeName: nodeName(i), ServiceAccountName: NodeServiceAccount, HostNetwork: true,
			Containers: []corev1.Container{{Name: "node", Image: "agentmesh-node", Command: []string{"agentd"}}}},
	}
	if _, err := l.CreatePod(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return l.WriteNodeToken(ctx, i)
}

// WriteNodeToken (re)writes node i's token: its ServiceAccount's, bound
// to its Pod object, for TokenAudience.
func (l *Lab) WriteNodeToken(ctx context.Context, i int) error {
	tok, err := l.PodToken(ctx, MeshNamespace, NodePodName(i), TokenAudience, nodeTokenTTL)
	if err != nil {
		return err
	}
	tmp := l.NodeTokenFile(i) + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
		return fmt.Errorf("write token: %w", err)
	}
	if err := os.Rename(tmp, l.NodeTokenFile(i)); err != nil {
		return fmt.Errorf("write token: %w", err)
	}
	return nil
}

// kubeNodeFlags are the Kubernetes-mode flags of node i's agentd and ztunnel.
func (l *Lab) kubeNodeFlags(i int) []string {
	return []string{"--controller", ControllerAddr(0).String(), "--controller-ca", l.ControllerCAFile(),
		"--token-file", l.NodeTokenFile(i), "--controller-server-name", ControllerServerName}
}

// addWireAddr gives the wire netns's bridge one more IPv4 address.
func (l *Lab) addWireAddr(ip netip.Addr) error {
	return l.withWireBridge(func(nl *netlink.Handle, br netlink.Link) error {
		if err := addAddr(nl, br, netip.PrefixFrom(ip, 24)); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		return nil
	})
}
