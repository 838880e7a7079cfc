package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// pidsFile records every process a lab started, one "PID STARTTIME NAME"
// line each, STARTTIME being field 22 of /proc/PID/stat. Down kills a
// recorded PID only when its start time still matches, so a reused PID is
// never hit.
type pidsFile struct {
	path string
	mu   sync.Mutex // serialises appends
}

// record appends p. A process that already exited is skipped.
func (f *pidsFile) record(pid int, name string) error {
	st, err := procStartTime(pid)
	if err != nil {
		return nil // gone already: nothing to clean up later
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fd, err := os.OpenFile(f.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("record pid: %w", err)
	}
	_, werr := fmt.Fprintf(fd, "%d %d %s\n", pid, st, name)
	return errors.Join(werr, fd.Close())
}

// procStartTime returns the start time (clock ticks since boot) of pid.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	return parseStatStartTime(string(b))
}

// parseStatStartTime takes field 22 of a /proc/PID/stat line. The command
// name (field 2) may hold spaces and parentheses, so fields are counted
// after the last ')'.
func parseStatStartTime(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, errors.New("short stat")
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse start time: %w", err)
	}
	return v, nil
}

// killRecorded SIGKILLs every process in the pids file at path whose start
// time still matches, and returns how many it killed.
func killRecorded(path string) (int, error) {
	fd, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read pids: %w", err)
	}
	defer fd.Close()
	n := 0
	s := bufio.NewScanner(fd)
	for s.Scan() {
		var pid int
		var st uint64
		if _, err := fmt.Sscanf(s.Text(), "%d %d", &pid, &st); err != nil || pid <= 1 {
			continue
		}
		if cur, err := procStartTime(pid); err != nil || cur != st {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n, s.Err()
}

// WaitExited waits until process pid has exited: gone, or a zombie with
// no thread left but its leader (its sockets are closed by then), polling
// every millisecond. A test that
// kills an app waits for this before it counts the connections that
// come after.
func WaitExited(ctx context.Context, pid int) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil {
			// The state follows the command in parentheses. A zombie
			// leader is not enough: the other threads of a multithreaded
			// process (every Go program) may still be exiting, holding
			// its files (listening sockets that still accept) until the
			// last of them is gone.
			if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && strings.HasPrefix(string(stat[i+1:]), " Z") && onlyLeader(pid) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("process %d still running: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
}

// onlyLeader reports whether pid's thread group has no thread left but
// its leader.
func onlyLeader(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && len(tasks) <= 1
}
