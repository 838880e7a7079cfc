package lab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/internal/mesh"
)

// StartAgentd starts node i's agentd and waits for its socket.
func (l *Lab) StartAgentd(ctx context.Context, i int) error {
	p, err := l.startDaemon(i, agentdKind, l.agentdArgs(i))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	if err := waitFile(ctx, l.agentdSocket(i), p); err != nil {
		return l.daemonError(i, agentdKind, err)
	}
	return nil
}

// StartZtunnel starts node i's ztunnel and waits until it is ready.
func (l *Lab) StartZtunnel(ctx context.Context, i int) error {
	p, err := l.startDaemon(i, ztunnelKind, l.ztunnelArgs(i))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	if err := l.waitReady(ctx, i, p); err != nil {
		return l.daemonError(i, ztunnelKind, err)
	}
	return nil
}

// StopAgentd stops node i's agentd (SIGTERM, then SIGKILL).
func (l *Lab) StopAgentd(_ context.Context, i int) error { return l.stopDaemon(i, agentdKind) }

// StopZtunnel stops node i's ztunnel (SIGTERM, then SIGKILL).
func (l *Lab) StopZtunnel(_ context.Context, i int) error { return l.stopDaemon(i, ztunnelKind) }

// RestartAgentd stops and starts node i's agentd.
func (l *Lab) RestartAgentd(ctx context.Context, i int) error {
	if err := l.StopAgentd(ctx, i); err != nil {
		return err
	}
	return l.StartAgentd(ctx, i)
}

// RestartZtunnel stops and starts node i's ztunnel.
func (l *Lab) RestartZtunnel(ctx context.Context, i int) error {
	if err := l.StopZtunnel(ctx, i); err != nil {
		return err
	}
	return l.StartZtunnel(ctx, i)
}

// Daemon returns node i's running agentd or ztunnel process, or nil.
func (l *Lab) Daemon(i int, kind string) *Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.daemons[daemonKey(i, kind)]
}

func daemonKey(i int, kind string) string { return nodeName(i) + "-" + kind }

// startDaemon starts one per-node daemon in the node's netns and cgroup.
func (l *Lab) startDaemon(i int, kind string, args []string) (*Process, error) {
	if i < 1 || i > l.opts.Nodes {
		return nil, fmt.Errorf("no node %d", i)
	}
	key := daemonKey(i, kind)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab closed")
	}
	if p := l.daemons[key]; p != nil {
		return nil, fmt.Errorf("%s already running (pid %d)", key, p.PID)
	}
	p, err := startProcess(procSpec{name: key, netns: l.nodeNetns(i), cgroup: l.nodeCgroup(i),
		args: args, logPath: l.DaemonLog(i, kind)})
	if err != nil {
		return nil, err
	}
	l.daemons[key] = p
	l.log.Info("started", "process", key, "pid", p.PID)
	return p, l.pids.record(p.PID, key)
}

// stopDaemon stops one per-node daemon; stopping a stopped one is a no-op.
func (l *Lab) stopDaemon(i int, kind string) error { return l.stopProcess(daemonKey(i, kind)) }

// stopProcess stops the daemon or controller recorded under key (SIGTERM,
// then SIGKILL) and forgets it; an unknown key is a no-op.
func (l *Lab) stopProcess(key string) error {
	l.mu.Lock()
	p := l.daemons[key]
	delete(l.daemons, key)
	l.mu.Unlock()
	if p == nil {
		return nil
	}
	l.log.Info("stopping", "process", key, "pid", p.PID)
	return p.Stop()
}

// daemonError adds the tail of the daemon's log to err.
func (l *Lab) daemonError(i int, kind string, err error) error {
	return fmt.Errorf("%s %s not ready: %w\n--- last lines of %s ---\n%s",
		nodeName(i), kind, err, l.DaemonLog(i, kind), logTail(l.DaemonLog(i, kind), 20))
}

// waitReady polls ztunnel's readiness endpoint from inside the node netns.
func (l *Lab) waitReady(ctx context.Context, i int, p *Process) error {
	url := "http://" + netip.AddrPortFrom(nodeIPv4(i), mesh.ReadinessPort).String() + "/healthz/ready"
	var last error
	for {
		code, _, err := l.httpGet(ctx, i, url)
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = err
		if err == nil {
			last = errors.New("status " + strconv.Itoa(code))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", url, ctx.Err(), last)
		case <-p.Done():
			return fmt.Errorf("exited early: %v", p.Wait())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopMesh stops ztunnel then agentd on every node, and runs agentd
// cleanup for the nodes' pins.
func (l *Lab) stopMesh() []error {
	var errs []error
	for i := 1; i <= l.opts.Nodes; i++ {
		errs = append(errs, l.stopDaemon(i, ztunnelKind), l.stopDaemon(i, agentdKind))
		if l.opts.StartMesh {
			errs = append(errs, l.agentdCleanup(i))
		}
	}
	return errs
}
