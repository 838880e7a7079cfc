package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/bpffs"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// Kinds of per-node daemons.
const (
	agentdKind  = "agentd"
	ztunnelKind = "ztunnel"
)

// startMesh prepares pins and the CA (in Kubernetes mode: the mesh's
// objects, the controller, node pods and tokens) and starts agentd and
// ztunnel on every node.
func (l *Lab) startMesh(ctx context.Context) error {
	if _, err := bpffs.Ensure(); err != nil {
		return err
	}
	if l.kube != nil {
		if err := l.prepareKubeMesh(ctx); err != nil {
			return err
		}
	} else if err := l.writeCA(); err != nil {
		return err
	}
	for i := 1; i <= l.opts.Nodes; i++ {
		if l.isRealNode(i) {
			continue // the chart's DaemonSet runs the mesh there
		}
		for _, d := range []string{l.pinDir(i), filepath.Join(l.state, nodeName(i))} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("make %s: %w", d, err)
			}
		}
		if l.kube != nil {
			if err := l.prepareKubeNode(ctx, i); err != nil {
				return err
			}
		}
		if err := l.StartAgentd(ctx, i); err != nil {
			return err
		}
		if err := l.StartZtunnel(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// MeshStarted reports whether the lab runs agentd and ztunnel.
func (l *Lab) MeshStarted() bool { return l.opts.StartMesh }

// pinDir is node i's bpffs pin directory (agentd --pin-dir).
func (l *Lab) pinDir(i int) string { return filepath.Join(l.pinRoot, nodeName(i)) }

// agentdSocket is node i's agentd socket.
func (l *Lab) agentdSocket(i int) string {
	return filepath.Join(l.state, nodeName(i), "agentd.sock")
}

// DaemonLog is the log file of node i's agentd or ztunnel ("agentd", "ztunnel").
func (l *Lab) DaemonLog(i int, kind string) string {
	return filepath.Join(l.state, nodeName(i)+"-"+kind+".log")
}

// Bin is the path of a binary in Options.BinDir.
func (l *Lab) Bin(name string) string { return filepath.Join(l.opts.BinDir, name) }

// writeCA makes the mesh CA into the state dir.
func (l *Lab) writeCA() error {
	cert, key, err := pki.GenerateCA(l.opts.TrustDomain, 24*time.Hour)
	if err != nil {
		return fmt.Errorf("generate ca: %w", err)
	}
	if err := os.WriteFile(filepath.Join(l.state, "ca.pem"), cert, 0o644); err != nil {
		return fmt.Errorf("write ca: %w", err)
	}
	if err := os.WriteFile(filepath.Join(l.state, "ca-key.pem"), key, 0o600); err != nil {
		return fmt.Errorf("write ca key: %w", err)
	}
	return nil
}

// agentdArgs is node i's agentd command line.
func (l *Lab) agentdArgs(i int) []string {
	args := []string{l.Bin("agentd"), "run", "--node", nodeName(i),
		"--pin-dir", l.pinDir(i), "--cgroup", l.nodeCgroup(i), "--socket", l.agentdSocket(i),
		"--log-format", "json"}
	args = append(args, l.opts.AgentdArgs...)
	if l.kube != nil {
		return append(args, l.kubeNodeFlags(i)...)
	}
	return append(args, "--config", l.ConfigPath())
}

// ztunnelArgs is node i's ztunnel command line.
func (l *Lab) ztunnelArgs(i int) []string {
	args := []string{l.Bin("ztunnel"), "--node", nodeName(i),
		"--pin-dir", l.pinDir(i), "--agentd-socket", l.agentdSocket(i),
		"--cert-lifetime", l.opts.CertLifetime.String(),
		"--admin-addr", "127.0.0.1:" + strconv.Itoa(mesh.AdminPort),
		"--metrics-addr", ":" + strconv.Itoa(mesh.MetricsPort),
		"--ready-addr", ":" + strconv.Itoa(mesh.ReadinessPort), "--log-format", "json"}
	args = append(args, l.opts.ZtunnelArgs...)
	if d := l.opts.ProfileDir; d != "" {
		args = append(args, "--cpu-profile", filepath.Join(d, "ztunnel-"+nodeName(i)+".cpu.prof"),
			"--alloc-profile", filepath.Join(d, "ztunnel-"+nodeName(i)+".alloc.prof"))
	}
	if l.kube != nil {
		return append(args, l.kubeNodeFlags(i)...)
	}
	return append(args, "--config", l.ConfigPath(),
		"--ca-cert", filepath.Join(l.state, "ca.pem"), "--ca-key", filepath.Join(l.state, "ca-key.pem"))
}

// removeStaleSocket removes the socket file at path, as a killed agentd
// leaves it, so that waiting for the socket means waiting for the new
// agentd; anything but a socket is left alone.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return nil
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// waitFile waits until path exists or the process exits.
func waitFile(ctx context.Context, path string, p *Process) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", path, ctx.Err())
		case <-p.Done():
			return fmt.Errorf("exited early: %v", p.Wait())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
