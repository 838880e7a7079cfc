package lab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// Process is a command the lab started inside a network namespace and a
// cgroup. Its output goes to a log file.
type Process struct {
	// PID is the process id.
	PID int
	// Name says what it is ("n1-ztunnel", "planner-echo").
	Name string
	// LogPath is the file holding its stdout and stderr (empty when the
	// caller took the output).
	LogPath string

	pod  string // owning pod, "" for node daemons
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed
}

// procSpec says how to start a process.
type procSpec struct {
	name    string
	netns   string // named netns to run in
	cgroup  string // cgroup2 directory to run in
	args    []string
	env     []string  // the environment; nil inherits the lab's
	logPath string    // stdout+stderr go here unless stdout is set
	stdout  io.Writer // optional: stdout (stderr then goes to stderr)
	stderr  io.Writer
	mounts  []bindMount // files bind-mounted in a mount namespace of its own (podmounts.go)
}

// startProcess starts spec's command. The child is forked from a thread
// that has joined the target netns (so it is born there; no `ip netns exec`,
// which would remount /sys and hide bpffs and cgroupfs) and is placed in its
// cgroup by clone3(CLONE_INTO_CGROUP). It gets its own process group so a
// terminal's Ctrl-C reaches only meshlab, which then stops it in order.
func startProcess(spec procSpec) (*Process, error) {
	cg, err := os.Open(spec.cgroup)
	if err != nil {
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	defer cg.Close()
	cmd := exec.Command(spec.args[0], spec.args[1:]...)
	cmd.Env = spec.env
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Setpgid: true}
	if len(spec.mounts) > 0 {
		if err := withMounts(cmd, spec.args, spec.mounts); err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.name, err)
		}
	}
	var logf *os.File
	if spec.stdout != nil {
		cmd.Stdout, cmd.Stderr = spec.stdout, spec.stderr
	} else {
		logf, err = os.OpenFile(spec.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open log: %w", err)
		}
		defer logf.Close() // the child has its own copy
		cmd.Stdout, cmd.Stderr = logf, logf
	}
	err = doInNetns(spec.netns, cmd.Start)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	logPath := spec.logPath
	if spec.stdout != nil {
		logPath = ""
	}
	return reap(cmd, spec.name, logPath), nil
}

// reap wraps a started cmd in a Process whose goroutine waits for it (and
// ends when it exits).
func reap(cmd *exec.Cmd, name, logPath string) *Process {
	p := &Process{PID: cmd.Process.Pid, Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go p.wait()
	return p
}

// wait reaps the process; it returns when the process has exited.
func (p *Process) wait() {
	p.err = p.cmd.Wait()
	close(p.done)
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitStatus says how the process ended ("exit status 3", "signal:
// killed"), or "" while it runs.
func (p *Process) ExitStatus() string {
	select {
	case <-p.done:
	default:
		return ""
	}
	if p.cmd.ProcessState == nil {
		return fmt.Sprint(p.err)
	}
	return p.cmd.ProcessState.String()
}

// Wait waits for the process to exit and returns its exit error.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM, then SIGKILL after a grace period, and waits for the
// process to exit. It returns nil once the process is gone, whatever its
// exit status; it is safe to call more than once.
func (p *Process) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: %w", p.Name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-p.done
	return nil
}

// Output returns what the process has written to its log file so far.
func (p *Process) Output() ([]byte, error) {
	if p.LogPath == "" {
		return nil, errors.New("output not logged")
	}
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return nil, fmt.Errorf("read output of %s: %w", p.Name, err)
	}
	return b, nil
}
