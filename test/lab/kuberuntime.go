package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/agentmesh/agentmesh/test/lab/kubelet"
)

// kubeRuntime is node's kubelet.PodRuntime: pods are lab pods whose netns
// is <id>-pod<uid> and whose cgroup is <node cgroup>/pod<uid>, as the
// real kubelet names it.
type kubeRuntime struct {
	l    *Lab
	node int
}

// CreateSandbox makes the pod's netns, veth, addresses, routes and cgroup.
func (r kubeRuntime) CreateSandbox(_ context.Context, s kubelet.SandboxSpec) (kubelet.Sandbox, error) {
	p := &Pod{Name: s.Name, Namespace: s.Namespace, ServiceAccount: s.ServiceAccount, UID: s.UID,
		Node: r.node, lab: r.l, key: "pod" + s.UID}
	if err := r.l.claimPod(p); err != nil {
		return nil, err
	}
	sb := kubeSandbox{p: p}
	if err := r.l.setupPodNetwork(p); err != nil {
		return nil, errors.Join(err, sb.Remove(context.Background()))
	}
	if err := mkdirCgroup(p.CgroupPath()); err != nil {
		return nil, errors.Join(err, sb.Remove(context.Background()))
	}
	if s.ResolvConf != nil {
		if err := r.l.setPodFile(p, "resolv.conf", "/etc/resolv.conf", s.ResolvConf); err != nil {
			return nil, errors.Join(err, sb.Remove(context.Background()))
		}
	}
	return sb, nil
}

// DialNode dials from inside the node's netns.
func (r kubeRuntime) DialNode(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := doInNetns(r.l.nodeNetns(r.node), func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// kubeSandbox is a Kubernetes pod's lab Pod.
type kubeSandbox struct{ p *Pod }

// IPs are the pod's IPv4 and IPv6 addresses.
func (s kubeSandbox) IPs() []netip.Addr { return []netip.Addr{s.p.IPv4(), s.p.IPv6()} }

// Start runs a container's process, with the pod's resolv.conf and the
// container's hosts file in place (podmounts.go); its output goes to
// <state>/<namespace>-<pod>-<container>.log.
func (s kubeSandbox) Start(c kubelet.ContainerSpec) (kubelet.Process, error) {
	if c.Hosts != nil {
		if err := s.p.lab.setPodFile(s.p, "hosts", "/etc/hosts", c.Hosts); err != nil {
			return nil, err
		}
	}
	key := s.p.Namespace + "-" + s.p.Name + "-" + c.Name
	proc, err := s.p.lab.startPodProcess(s.p, procSpec{name: key, netns: s.p.NetnsName(),
		cgroup: s.p.CgroupPath(), args: c.Args, env: c.Env, logPath: filepath.Join(s.p.lab.state, key+".log")})
	if err != nil {
		return nil, err
	}
	return kubeProcess{proc}, nil
}

// Remove stops the pod's processes and removes its cgroup, netns (the veth
// goes with the netns) and files.
func (s kubeSandbox) Remove(ctx context.Context) error {
	l, p := s.p.lab, s.p
	l.mu.Lock()
	if l.pods[p.key] == p {
		delete(l.pods, p.key)
	}
	l.mu.Unlock()
	errs := []error{l.stopPodProcesses(p), removeCgroupTree(ctx, p.CgroupPath()), deleteNetns(p.NetnsName())}
	if err := os.RemoveAll(l.podFilesDir(p)); err != nil {
		errs = append(errs, fmt.Errorf("remove pod files: %w", err))
	}
	return errors.Join(errs...)
}

// kubeProcess adapts a Process to kubelet.Process.
type kubeProcess struct{ p *Process }

func (k kubeProcess) PID() int              { return k.p.PID }
func (k kubeProcess) Done() <-chan struct{} { return k.p.Done() }

// ExitCode is the exit status, or 128+signal for a killed process.
func (k kubeProcess) ExitCode() int {
	err := k.p.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 128
}

// Signal sends sig; a finished process is not an error.
func (k kubeProcess) Signal(sig os.Signal) error {
	if err := k.p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}
