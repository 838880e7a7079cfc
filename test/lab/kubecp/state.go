package kubecp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Identities of the clients kubecp makes certificates for.
const (
	adminUser  = "kubecp-admin"
	adminGroup = "system:masters" // bound to cluster-admin by RBAC's bootstrap policy
	kcmUser    = "system:kube-controller-manager"
	// schedulerUser is bound to system:kube-scheduler and
	// system:volume-scheduler by RBAC's bootstrap policy.
	schedulerUser = "system:kube-scheduler"
	// kubeletClientUser is the apiserver's identity at the kubelets.
	kubeletClientUser = "kube-apiserver-kubelet-client"
)

// files are the paths of what writeState made under the state dir.
type files struct {
	caCert              string // serving CA; also the kube-root-ca.crt pods get
	servingCert         string
	servingKey          string
	clientCA            string // CA of the client certificates the apiserver accepts
	saKey               string // signs ServiceAccount tokens
	saPub               string // verifies them
	adminKubeconfig     string
	kcmKubeconfig       string
	schedulerKubeconfig string
	etcdData            string
	// kubeletClientCert and kubeletClientKey are the apiserver's client
	// certificate for kubelets (logs, exec; real nodes trust clientCA).
	kubeletClientCert string
	kubeletClientKey  string
}

// state is what Start needs from writeState.
type state struct {
	files
	admin    *rest.Config
	clientCA *authority
}

// writeState makes the PKI and kubeconfigs under dir for an apiserver at
// url listening on bind.
func writeState(dir string, bind netip.Addr, url string) (*state, error) {
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, fmt.Errorf("make state dir: %w", err)
	}
	s := &state{files: files{
		caCert: filepath.Join(pki, "ca.crt"), servingCert: filepath.Join(pki, "apiserver.crt"),
		servingKey: filepath.Join(pki, "apiserver.key"), clientCA: filepath.Join(pki, "client-ca.crt"),
		saKey: filepath.Join(pki, "sa.key"), saPub: filepath.Join(pki, "sa.pub"),
		adminKubeconfig: filepath.Join(dir, "admin.kubeconfig"), kcmKubeconfig: filepath.Join(dir, "kcm.kubeconfig"),
		schedulerKubeconfig: filepath.Join(dir, "scheduler.kubeconfig"), etcdData: filepath.Join(dir, "etcd"),
		kubeletClientCert: filepath.Join(pki, "apiserver-kubelet-client.crt"), kubeletClientKey: filepath.Join(pki, "apiserver-kubelet-client.key"),
	}}
	servingCA, err := newAuthority("kubecp-ca")
	if err != nil {
		return nil, err
	}
	if s.clientCA, err = newAuthority("kubecp-client-ca"); err != nil {
		return nil, err
	}
	serving, err := servingCA.serving("kube-apiserver", servingDNS, servingIPs(bind))
	if err != nil {
		return nil, err
	}
	saPriv, saPub, err := serviceAccountKey()
	if err != nil {
		return nil, err
	}
	kubeletClient, err := s.clientCA.client(kubeletClientUser, nil)
	if err != nil {
		return nil, err
	}
	err = writeFiles(pki, map[string][]byte{
		"ca.crt": servingCA.pem, "client-ca.crt": s.clientCA.pem, "sa.key": saPriv, "sa.pub": saPub,
		"apiserver.crt": serving.certPEM, "apiserver.key": serving.keyPEM,
		"apiserver-kubelet-client.crt": kubeletClient.certPEM, "apiserver-kubelet-client.key": kubeletClient.keyPEM,
	})
	if err != nil {
		return nil, err
	}
	return s, s.writeKubeconfigs(url, servingCA.pem)
}

// servingDNS are the names in the apiserver's serving certificate.
var servingDNS = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}

// servingIPs are the addresses in the apiserver's serving certificate:
// loopback, the bind address and the kubernetes Service's VIP.
func servingIPs(bind netip.Addr) []net.IP {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(kubernetesServiceIP)}
	if b := net.IP(bind.AsSlice()); !b.Equal(ips[0]) {
		ips = append(ips, b)
	}
	return ips
}

// writeKubeconfigs writes the admin, kube-controller-manager and
// kube-scheduler kubeconfigs and keeps the admin's rest.Config.
func (s *state) writeKubeconfigs(url string, caPEM []byte) error {
	admin, err := s.clientCA.client(adminUser, []string{adminGroup})
	if err != nil {
		return err
	}
	if err := writeKubeconfig(s.adminKubeconfig, url, caPEM, admin); err != nil {
		return err
	}
	s.admin = &rest.Config{Host: url, TLSClientConfig: rest.TLSClientConfig{
		CAData: caPEM, CertData: admin.certPEM, KeyData: admin.keyPEM,
	}}
	for path, user := range map[string]string{s.kcmKubeconfig: kcmUser, s.schedulerKubeconfig: schedulerUser} {
		kp, err := s.clientCA.client(user, nil)
		if err != nil {
			return err
		}
		if err := writeKubeconfig(path, url, caPEM, kp); err != nil {
			return err
		}
	}
	return nil
}

// writeKubeconfig writes a kubeconfig for one client certificate, with
// everything embedded.
func writeKubeconfig(path, url string, caPEM []byte, kp keyPair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubecp"] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["kubecp"] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.certPEM, ClientKeyData: kp.keyPEM}
	cfg.Contexts["kubecp"] = &clientcmdapi.Context{Cluster: "kubecp", AuthInfo: "kubecp"}
	cfg.CurrentContext = "kubecp"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
