package lab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
)

// StartAgentd starts node i's agentd and waits for its socket.
func (l *Lab) StartAgentd(ctx context.Context, i int) error { return l.startDaemon(ctx, i, agentdKind) }

// StartZtunnel starts node i's ztunnel and waits until it is ready.
func (l *Lab) StartZtunnel(ctx context.Context, i int) error {
	return l.startDaemon(ctx, i, ztunnelKind)
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

// UpgradeZtunnel replaces node i's ztunnel as a DaemonSet rolling update
// with maxSurge does: the next ztunnel starts beside the running one (on
// the same ports: SO_REUSEPORT), takes the pods over from agentd once it
// has set them all up, and is ready; then the old one gets SIGTERM,
// drains the connections it still proxies (for at most its
// --drain-timeout) and exits. It returns the new process and how long the
// old one took to exit after SIGTERM.
func (l *Lab) UpgradeZtunnel(ctx context.Context, i int) (*Process, time.Duration, error) {
	name := daemonKey(i, ztunnelKind)
	old := l.sup.take(name) // its exit is asked for, not a crash
	if old == nil || !running(old) {
		return nil, 0, fmt.Errorf("%s is not running", name)
	}
	if err := l.startDaemon(ctx, i, ztunnelKind); err != nil {
		return nil, 0, errors.Join(err, old.Stop())
	}
	p := l.sup.current(name)
	start := time.Now()
	if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return p, 0, fmt.Errorf("stop old %s: %w", name, err)
	}
	select {
	case <-old.Done():
		return p, time.Since(start), nil
	case <-time.After(upgradeDrainWait):
		return p, time.Since(start), errors.Join(fmt.Errorf("old %s (pid %d) still runs %s after SIGTERM", name, old.PID, upgradeDrainWait), old.Stop())
	case <-ctx.Done():
		return p, time.Since(start), errors.Join(ctx.Err(), old.Stop())
	}
}

// upgradeDrainWait bounds how long UpgradeZtunnel waits for the old
// ztunnel after SIGTERM: its drain (ztunnel's --drain-timeout, 20s by
// default) and then its shutdown.
const upgradeDrainWait = 45 * time.Second

// Daemon returns node i's agentd or ztunnel process: the running one, or
// one that died and is about to be restarted; nil once stopped.
func (l *Lab) Daemon(i int, kind string) *Process { return l.sup.current(daemonKey(i, kind)) }

// AgentdName and ZtunnelName name node i's agentd and ztunnel ("n1-agentd")
// for PID, Restarts and WaitRestarted; ControllerID names a controller.
func AgentdName(i int) string  { return daemonKey(i, agentdKind) }
func ZtunnelName(i int) string { return daemonKey(i, ztunnelKind) }

func daemonKey(i int, kind string) string { return nodeName(i) + "-" + kind }

// startDaemon starts one per-node daemon in the node's netns and cgroup,
// under supervision, and waits until it serves.
func (l *Lab) startDaemon(ctx context.Context, i int, kind string) error {
	if i < 1 || i > l.opts.Nodes {
		return fmt.Errorf("no node %d", i)
	}
	spec := l.daemonSpec(i, kind)
	p, err := l.sup.start(daemonKey(i, kind), spec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	if err := spec.ready(ctx, p); err != nil {
		return l.daemonError(i, kind, err)
	}
	return nil
}

// daemonSpec says how to start node i's agentd or ztunnel and when it
// serves: agentd once its socket exists (a stale one, left by a killed
// agentd, is removed first), ztunnel once its readiness endpoint says so.
func (l *Lab) daemonSpec(i int, kind string) unitSpec {
	ps := procSpec{name: daemonKey(i, kind), netns: l.nodeNetns(i), cgroup: l.nodeCgroup(i),
		logPath: l.DaemonLog(i, kind)}
	if kind == ztunnelKind {
		ps.args = l.ztunnelArgs(i)
		return unitSpec{start: func() (*Process, error) { return startProcess(ps) },
			ready: func(ctx context.Context, p *Process) error { return l.waitReady(ctx, i, p) }}
	}
	ps.args = l.agentdArgs(i)
	sock := l.agentdSocket(i)
	return unitSpec{
		start: func() (*Process, error) {
			if err := removeStaleSocket(sock); err != nil {
				return nil, err
			}
			return startProcess(ps)
		},
		ready: func(ctx context.Context, p *Process) error { return waitFile(ctx, sock, p) },
	}
}

// stopDaemon stops one per-node daemon; stopping a stopped one is a no-op.
func (l *Lab) stopDaemon(i int, kind string) error { return l.sup.stop(daemonKey(i, kind)) }

// PID is the pid of the named daemon or controller (AgentdName,
// ZtunnelName, ControllerID) while it runs, else 0.
func (l *Lab) PID(name string) int { return l.sup.pid(name) }

// Restarts is how often the lab restarted the named daemon or controller
// after it died without being asked to.
func (l *Lab) Restarts(name string) int { return l.sup.restarts(name) }

// WaitRestarted waits until the lab has restarted the named daemon or
// controller n times in all and the restarted process is ready (ztunnel:
// its readiness endpoint; agentd: its socket; controller: /readyz), and
// returns that process.
func (l *Lab) WaitRestarted(ctx context.Context, name string, n int) (*Process, error) {
	return l.sup.waitRestarted(ctx, name, n)
}

// daemonError adds the tail of the daemon's log to err.
func (l *Lab) daemonError(i int, kind string, err error) error {
	return fmt.Errorf("%s %s not ready: %w\n--- last lines of %s ---\n%s",
		nodeName(i), kind, err, l.DaemonLog(i, kind), logTail(l.DaemonLog(i, kind), 20))
}

// waitReady polls ztunnel's readiness endpoint from inside the node netns
// until p answers ready: two ztunnels share the port during an upgrade
// (SO_REUSEPORT), and the answer names the pid of the one that gave it.
func (l *Lab) waitReady(ctx context.Context, i int, p *Process) error {
	url := "http://" + netip.AddrPortFrom(nodeIPv4(i), mesh.ReadinessPort).String() + "/healthz/ready"
	mine := fmt.Sprintf("(pid %d)", p.PID)
	var last error
	for {
		code, body, err := l.httpGet(ctx, i, url)
		if err == nil && code == http.StatusOK && strings.Contains(string(body), mine) {
			return nil
		}
		last = err
		if err == nil {
			last = fmt.Errorf("status %d: %s", code, strings.TrimSpace(string(body)))
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
