package lab

import (
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The apiserver listens in the wire netns, which the host cannot reach. So
// that kubectl on the host works, the lab forwards a loopback port of the
// host (in the netns of the process that runs the lab) to it: the serving
// certificate names 127.0.0.1, so TLS verifies as it would in the lab. The
// forward is a listener and goroutines of this process, nothing in the
// kernel, so a crashed lab leaves nothing of it behind.

// startHostAccess starts the forward and writes HostKubeconfig.
func (l *Lab) startHostAccess() error {
	u, err := url.Parse(l.kube.cp.URL())
	if err != nil {
		return fmt.Errorf("apiserver url: %w", err)
	}
	target, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		return fmt.Errorf("apiserver address: %w", err)
	}
	f, err := forwardFrom(l.wireName(), target)
	if err != nil {
		return err
	}
	l.kube.mu.Lock()
	l.kube.hostForward, l.kube.hostAddr = f, f.Addr()
	l.kube.mu.Unlock()
	return l.writeHostKubeconfig("https://" + f.Addr())
}

// HostAPIServer is the host's address of the apiserver (127.0.0.1:PORT,
// the server in HostKubeconfig); "" in standalone mode. It stays set after
// Close, when nothing listens there any more.
func (l *Lab) HostAPIServer() string {
	if l.kube == nil {
		return ""
	}
	l.kube.mu.Lock()
	defer l.kube.mu.Unlock()
	return l.kube.hostAddr
}

// writeHostKubeconfig writes the cluster-admin kubeconfig with server,
// its cluster, user and context named after the lab.
func (l *Lab) writeHostKubeconfig(server string) error {
	in, err := clientcmd.LoadFromFile(l.kube.cp.Kubeconfig())
	if err != nil {
		return fmt.Errorf("read admin kubeconfig: %w", err)
	}
	ctx := in.Contexts[in.CurrentContext]
	if ctx == nil || in.Clusters[ctx.Cluster] == nil || in.AuthInfos[ctx.AuthInfo] == nil {
		return fmt.Errorf("admin kubeconfig has no current context")
	}
	cluster := in.Clusters[ctx.Cluster].DeepCopy()
	cluster.Server = server
	out := clientcmdapi.NewConfig()
	out.Clusters[l.id] = cluster
	out.AuthInfos[l.id] = in.AuthInfos[ctx.AuthInfo].DeepCopy()
	out.Contexts[l.id] = &clientcmdapi.Context{Cluster: l.id, AuthInfo: l.id, Namespace: "default"}
	out.CurrentContext = l.id
	if err := clientcmd.WriteToFile(*out, l.HostKubeconfig()); err != nil {
		return fmt.Errorf("write host kubeconfig: %w", err)
	}
	return nil
}

// stopHostAccess closes the forward and its connections.
func (l *Lab) stopHostAccess() error {
	if l.kube == nil {
		return nil
	}
	l.kube.mu.Lock()
	f := l.kube.hostForward
	l.kube.hostForward = nil
	l.kube.mu.Unlock()
	if f == nil {
		return nil
	}
	return f.Close()
}

// HostKubeconfig is a cluster-admin kubeconfig for use outside the lab:
// its server is a loopback port of the host forwarded to the apiserver
// while the lab runs (kubectl --kubeconfig, or KUBECONFIG=). It is in the
// state dir, so it goes with the lab. "" in standalone mode.
func (l *Lab) HostKubeconfig() string {
	if l.kube == nil {
		return ""
	}
	return filepath.Join(l.state, "kubeconfig")
}

// KubeBinDir is the directory of the Kubernetes binaries the lab runs
// (and of the kubectl `make kube` builds next to them); "" in standalone
// mode.
func (l *Lab) KubeBinDir() string {
	if l.kube == nil {
		return ""
	}
	return l.kubeBinDir()
}

// kubeBinDir is Options.KubeBinDir, or BinDir/kube.
func (l *Lab) kubeBinDir() string {
	if l.opts.KubeBinDir != "" {
		return l.opts.KubeBinDir
	}
	return filepath.Join(l.opts.BinDir, "kube")
}
