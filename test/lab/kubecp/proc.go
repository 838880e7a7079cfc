package kubecp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentmesh/agentmesh/internal/netns"
)

// stopGrace is how long stop waits after SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

// StartFunc starts one process (name says which: one of Binaries) with
// args (args[0] is the binary), sending its stdout and stderr to logPath,
// and returns its PID. The caller owns reaping
// it; kubecp signals it by PID and polls /proc until it is gone.
type StartFunc func(name string, args []string, logPath string) (pid int, err error)

// proc is a process kubecp started.
type proc struct {
	name    string
	pid     int
	start   uint64        // starttime from /proc/PID/stat, so a reused PID is never signalled
	logPath string        // its stdout and stderr
	done    chan struct{} // closed once reaped; nil when a StartFunc owns it
}

// startProc starts args as name through start (or execProc when nil),
// inside the named netns when ns is not empty.
func startProc(start StartFunc, ns, name string, args []string, logPath string) (*proc, error) {
	p := &proc{name: name, logPath: logPath}
	run := func() error {
		var err error
		if start != nil {
			p.pid, err = start(name, args, logPath)
		} else {
			p.pid, p.done, err = execProc(args, logPath)
		}
		return err
	}
	var err error
	if ns == "" {
		err = run()
	} else {
		err = netns.DoPath("/run/netns/"+ns, run)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if p.start, _, err = procStat(p.pid); err != nil {
		return nil, fmt.Errorf("start %s: exited at once (%w):\n%s", name, err, p.logTail())
	}
	return p, nil
}

// execProc is the default StartFunc: the child gets its own process group
// (a terminal's Ctrl-C reaches only the caller) and is reaped by a goroutine
// that ends when the child does.
func execProc(args []string, logPath string) (int, chan struct{}, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, nil, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status is in the log; kubecp only needs "gone"
		close(done)
	}()
	return cmd.Process.Pid, done, nil
}

// alive reports whether the process is still running (a zombie is not).
func (p *proc) alive() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return false
		default:
			return true
		}
	}
	start, state, err := procStat(p.pid)
	return err == nil && start == p.start && state != 'Z' && state != 'X'
}

// stop sends SIGTERM, then SIGKILL after stopGrace, and waits until the
// process is gone. It is safe to call more than once.
func (p *proc) stop() error {
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	if p.waitGone(stopGrace) {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	if !p.waitGone(stopGrace) {
		return fmt.Errorf("kill %s: pid %d still there", p.name, p.pid)
	}
	return nil
}

// waitGone polls until the process is gone or d has passed.
func (p *proc) waitGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for p.alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// logTail is the end of the process's log, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// procStat reads the start time (field 22) and state (field 3) of pid from
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func procStat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	return parseStat(string(b))
}

func parseStat(s string) (start uint64, state byte, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, errors.New("malformed stat")
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed stat start time: %w", err)
	}
	return start, f[0][0], nil
}
