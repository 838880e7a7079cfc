package controlplane

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTime is the user+system CPU time pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces: count from its ")".
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return time.Duration(u+st) * clockTick, nil
}

// selfCPU is the CPU time of this process: the bench's node clients (the
// receivers) and its informer.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// CPU is the CPU time each party used during one phase.
type CPU struct {
	Wall                                   time.Duration
	Controller, Receivers, APIServer, Etcd time.Duration
}

// cpuMeter samples the parties' CPU times at the start of a phase.
type cpuMeter struct {
	pids  map[string]int // controller, kube-apiserver, etcd
	start map[string]time.Duration
	self  time.Duration
	at    time.Time
}

func startCPU(pids map[string]int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: map[string]time.Duration{}, self: selfCPU(), at: time.Now()}
	for name, pid := range pids {
		m.start[name], _ = cpuTime(pid)
	}
	return m
}

// stop returns what each used since start (a process that restarted in
// between counts from 0).
func (m *cpuMeter) stop() CPU {
	c := CPU{Wall: time.Since(m.at), Receivers: selfCPU() - m.self}
	used := func(name string) time.Duration {
		t, err := cpuTime(m.pids[name])
		if err != nil {
			return 0
		}
		if t < m.start[name] {
			return t
		}
		return t - m.start[name]
	}
	c.Controller, c.APIServer, c.Etcd = used("controller"), used("kube-apiserver"), used("etcd")
	return c
}
