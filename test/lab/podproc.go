package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Start runs args in the pod's netns and cgroup; stdout and stderr go to
// <state>/<pod>-<name>.log. ctx bounds only the start: the process runs
// until Stop, RemovePod or Close.
func (p *Pod) Start(_ context.Context, name string, args ...string) (*Process, error) {
	if len(args) == 0 {
		return nil, errors.New("no command")
	}
	l := p.lab
	key := p.Name + "-" + name
	return l.startPodProcess(p, procSpec{name: key, netns: p.NetnsName(), cgroup: p.CgroupPath(),
		args: args, logPath: filepath.Join(l.state, key+".log")})
}

// Run runs args in the pod's netns and cgroup, waits for it and returns
// its stdout. ctx bounds the run (the process is killed when ctx ends). A
// non-zero exit gives an error carrying stderr.
func (p *Pod) Run(ctx context.Context, args ...string) ([]byte, error) {
	if len(args) == 0 {
		return nil, errors.New("no command")
	}
	var stdout, stderr bytes.Buffer
	proc, err := p.lab.startPodProcess(p, procSpec{name: p.Name + "-run", netns: p.NetnsName(),
		cgroup: p.CgroupPath(), args: args, stdout: &stdout, stderr: &stderr})
	if err != nil {
		return nil, err
	}
	defer p.lab.forget(proc)
	select {
	case <-proc.Done():
	case <-ctx.Done():
		_ = proc.cmd.Process.Kill()
	}
	if err := proc.Wait(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s in pod %s: %w: %s", args[0], p.Name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// startPodProcess starts spec for pod p and records it.
func (l *Lab) startPodProcess(p *Pod, spec procSpec) (*Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab closed")
	}
	if l.pods[p.key] != p {
		return nil, fmt.Errorf("pod %s removed", p.Name)
	}
	spec.mounts = slices.Clone(p.mounts)
	proc, err := startProcess(spec)
	if err != nil {
		return nil, err
	}
	proc.pod = p.key
	l.processes = append(l.processes, proc)
	return proc, l.pids.record(proc.PID, spec.name)
}

// forget drops a finished process from the lab's list.
func (l *Lab) forget(proc *Process) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.processes = slices.DeleteFunc(l.processes, func(q *Process) bool { return q == proc })
}

// stopPodProcesses stops every process started in pod p.
func (l *Lab) stopPodProcesses(p *Pod) error {
	l.mu.Lock()
	var mine []*Process
	l.processes = slices.DeleteFunc(l.processes, func(q *Process) bool {
		if q.pod == p.key {
			mine = append(mine, q)
			return true
		}
		return false
	})
	l.mu.Unlock()
	var errs []error
	for _, q := range mine {
		errs = append(errs, q.Stop())
	}
	return errors.Join(errs...)
}
