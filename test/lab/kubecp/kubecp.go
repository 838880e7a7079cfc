// Package kubecp runs a real Kubernetes control plane for the lab: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler (built from
// source into bin/kube/ by `make kube`), with a self-made PKI, RBAC
// authorization and ServiceAccount tokens that TokenReview can verify. The
// Service ClusterIP range is dual-stack (ServiceCIDR, ServiceCIDRv6). There
// is no kubelet: the lab's fake kubelet registers the Nodes and runs the
// Pods bound to them.
package kubecp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"k8s.io/client-go/rest"
)

// Binaries are the file names Start expects in Options.BinDir, in the
// order it starts them.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// Kubectl is the file name of the kubectl `make kube` builds next to
// Binaries (Start does not need it).
const Kubectl = "kubectl"

// Options says where and how to run the control plane.
type Options struct {
	// BinDir holds Binaries.
	BinDir string
	// StateDir receives keys, certificates, kubeconfigs, etcd's data and
	// the logs (<name>.log). It is made if missing and left in place by
	// Stop: the caller removes it.
	StateDir string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
	// Netns, if set, is a named netns (/run/netns/NAME) the processes run
	// in; they then listen on BindAddr inside it.
	Netns string
	// BindAddr is the address every component listens on (default
	// 127.0.0.1).
	BindAddr netip.Addr
	// Start, if set, starts the processes instead of a plain exec (the lab
	// passes its own so the PIDs land in its pid file). When Netns is set
	// it is called on a thread inside that netns, so a process it forks
	// from the calling goroutine is born there.
	Start StartFunc
}

// ControlPlane is a running etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler.
type ControlPlane struct {
	log *slog.Logger
	url string
	st  *state

	mu    sync.Mutex // guards procs
	procs []*proc    // in start order; Stop stops them in reverse
}

// Start runs etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler and returns once the apiserver's /readyz is ok and the
// "default" ServiceAccount of namespace "default" exists (so pods can be
// created). On error it stops whatever it started. ctx bounds only the
// start, not the processes' life.
func Start(ctx context.Context, o Options) (*ControlPlane, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	c := &ControlPlane{log: o.Logger}
	if err := c.start(ctx, o); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

func (c *ControlPlane) start(ctx context.Context, o Options) error {
	ports, err := freePorts(o.Netns, o.BindAddr, 3)
	if err != nil {
		return err
	}
	etcdURL := "http://" + netip.AddrPortFrom(o.BindAddr, ports[0]).String()
	peerURL := "http://" + netip.AddrPortFrom(o.BindAddr, ports[1]).String()
	c.url = "https://" + netip.AddrPortFrom(o.BindAddr, ports[2]).String()
	if c.st, err = writeState(o.StateDir, o.BindAddr, c.url); err != nil {
		return err
	}
	if o.Netns != "" {
		c.st.admin.Dial = netnsDialer(o.Netns)
	}
	if err := c.run(o, "etcd", etcdArgs(c.st.files, etcdURL, peerURL)); err != nil {
		return err
	}
	if err := c.run(o, "kube-apiserver", apiserverArgs(o, c.st.files, etcdURL, ports[2])); err != nil {
		return err
	}
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	if err := c.run(o, "kube-controller-manager", kcmArgs(c.st.files)); err != nil {
		return err
	}
	if err := c.run(o, "kube-scheduler", schedulerArgs(c.st.files)); err != nil {
		return err
	}
	return c.waitDefaultServiceAccount(ctx)
}

// run starts one component and records it for Stop.
func (c *ControlPlane) run(o Options, name string, args []string) error {
	args = append([]string{filepath.Join(o.BinDir, name)}, args...)
	c.log.Info("starting", "component", name, "args", args[1:])
	p, err := startProc(o.Start, o.Netns, name, args, filepath.Join(o.StateDir, name+".log"))
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	c.log.Info("started", "component", name, "pid", p.pid)
	return nil
}

// Stop stops exactly the processes Start started (by PID, newest first:
// kube-scheduler, kube-controller-manager, kube-apiserver, etcd) and waits until they are
// gone. It removes no file. It is safe to call more than once.
func (c *ControlPlane) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		errs = append(errs, c.procs[i].stop())
	}
	return errors.Join(errs...)
}

// AdminConfig is a client config for a cluster-admin (client certificate in
// group system:masters). With Options.Netns set it dials inside that netns.
// Each call returns a fresh copy.
func (c *ControlPlane) AdminConfig() *rest.Config { return rest.CopyConfig(c.st.admin) }

// ClientConfig is a client config for user in groups, authenticated by a
// fresh client certificate from the apiserver's client CA (for example
// system:node:NAME in group system:nodes for a fake kubelet).
func (c *ControlPlane) ClientConfig(user string, groups ...string) (*rest.Config, error) {
	kp, err := c.st.clientCA.client(user, groups)
	if err != nil {
		return nil, err
	}
	cfg := rest.AnonymousClientConfig(c.st.admin)
	cfg.CertData, cfg.KeyData = kp.certPEM, kp.keyPEM
	return cfg, nil
}

// Kubeconfig is the path of a kubeconfig file for the same admin. With
// Options.Netns set, the address in it is reachable only inside that netns
// (AdminConfig and ClientConfig dial there from anywhere).
func (c *ControlPlane) Kubeconfig() string { return c.st.adminKubeconfig }

// URL is the apiserver's address, https://ADDR:PORT.
func (c *ControlPlane) URL() string { return c.url }

// CAFile is the path of the CA certificate that signed the apiserver's
// serving certificate (also the kube-root-ca.crt that pods get).
func (c *ControlPlane) CAFile() string { return c.st.caCert }

// ClientCAFile is the CA of the client certificates the apiserver accepts,
// and of its own at the kubelets: a real kubelet's clientCAFile.
func (c *ControlPlane) ClientCAFile() string { return c.st.files.clientCA }

// check validates o and fills in defaults.
func (o *Options) check() error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if !o.BindAddr.IsValid() {
		o.BindAddr = netip.MustParseAddr("127.0.0.1")
	}
	if o.StateDir == "" {
		return errors.New("no state dir")
	}
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return fmt.Errorf("missing binary (run make kube): %w", err)
		}
	}
	return nil
}

// PIDs returns the PID of each running component by name.
func (c *ControlPlane) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.procs))
	for _, p := range c.procs {
		out[p.name] = p.pid
	}
	return out
}
