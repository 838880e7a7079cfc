package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/agentmesh/agentmesh/test/lab"
)

// tokenTTL outlives any run; nothing refreshes the tokens.
const tokenTTL = 24 * time.Hour

// manifestPath is o.Manifest or the module's rendered chart.
func manifestPath(ctx context.Context, o Options) string {
	if o.Manifest != "" {
		return o.Manifest
	}
	if root, err := lab.ModuleRoot(ctx); err == nil {
		if p := filepath.Join(root, lab.ManifestPath); fileExists(p) {
			return p
		}
	}
	return filepath.Join(o.BinDir, "..", lab.ManifestPath)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// writeControllerKubeconfig writes a kubeconfig with a token of the
// controller's ServiceAccount, so the chart's RBAC is what applies.
func writeControllerKubeconfig(ctx context.Context, c kubernetes.Interface, server, caFile, path string) error {
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(tokenTTL / time.Second))}}
	tok, err := c.CoreV1().ServiceAccounts(lab.MeshNamespace).CreateToken(ctx, lab.ControllerServiceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("controller token: %w", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bench"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	cfg.AuthInfos["controller"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "controller"}
	cfg.CurrentContext = "bench"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write controller kubeconfig: %w", err)
	}
	return nil
}

// nodePodName is the Pod object node i's components run as.
func nodePodName(i int) string { return "agentmesh-node-" + nodeName(i) }

// writeNodeToken creates node i's agentmesh-node Pod object and writes a
// token of its ServiceAccount bound to that pod (as the kubelet projects
// it) to path.
func writeNodeToken(ctx context.Context, c kubernetes.Interface, i int, path string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: nodePodName(i), Namespace: lab.MeshNamespace,
			Labels: map[string]string{"app.kubernetes.io/name": "agentmesh-node"}},
		// hostNetwork, as the chart's node pods: no workload of the mesh.
		Spec: corev1.PodSpec{NodeName: nodeName(i), ServiceAccountName: lab.NodeServiceAccount, HostNetwork: true,
			Containers: []corev1.Container{{Name: "node", Image: "agentmesh-node"}}},
	}
	pod, err := c.CoreV1().Pods(lab.MeshNamespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node pod: %w", err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{lab.TokenAudience}, ExpirationSeconds: ptrTo(int64(tokenTTL / time.Second)),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	tok, err := c.CoreV1().ServiceAccounts(lab.MeshNamespace).CreateToken(ctx, lab.NodeServiceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("node token: %w", err)
	}
	if err := os.WriteFile(path, []byte(tok.Status.Token), 0o600); err != nil {
		return fmt.Errorf("write node token: %w", err)
	}
	return nil
}

// writeMeshRoot waits for the root ConfigMap the controller publishes and
// writes its certificate to path.
func writeMeshRoot(ctx context.Context, c kubernetes.Interface, path string) error {
	var pem string
	err := poll(ctx, time.Minute, "configmap "+lab.RootConfigMap, func() (bool, error) {
		cm, err := c.CoreV1().ConfigMaps(lab.MeshNamespace).Get(ctx, lab.RootConfigMap, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		pem = cm.Data[lab.RootConfigMapKey]
		return pem != "", nil
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(pem), 0o644); err != nil {
		return fmt.Errorf("write mesh root: %w", err)
	}
	return nil
}

func ptrTo[T any](v T) *T { return &v }
