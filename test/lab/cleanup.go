package lab

import (
	"bytes"
	"context"
	"os"
	"time"
)

// agentdCleanup runs `agentd cleanup` for node i's pins and cgroup. A
// failure is logged, not returned: the lab removes the pin directory and the
// cgroup afterwards anyway, which detaches every link.
func (l *Lab) agentdCleanup(i int) error {
	bin := l.Bin("agentd")
	if _, err := os.Stat(bin); err != nil {
		return nil
	}
	var out bytes.Buffer
	p, err := startProcess(procSpec{name: daemonKey(i, "agentd-cleanup"), netns: l.nodeNetns(i),
		cgroup: l.nodeCgroup(i), stdout: &out, stderr: &out,
		args: []string{bin, "cleanup", "--pin-dir", l.pinDir(i), "--log-format", "json"}})
	if err != nil {
		l.log.Warn("agentd cleanup", "node", nodeName(i), "err", err)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-p.Done():
	case <-ctx.Done():
		_ = p.Stop()
	}
	if err := p.Wait(); err != nil {
		l.log.Warn("agentd cleanup", "node", nodeName(i), "err", err, "output", out.String())
	}
	return nil
}
