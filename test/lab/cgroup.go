package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CgroupRoot returns the mount point of the cgroup2 hierarchy, read from
// /proc/self/mountinfo (for example /sys/fs/cgroup or /sys/fs/cgroup/unified).
func CgroupRoot() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if mp, ok := cgroup2MountPoint(s.Text()); ok {
			return mp, nil
		}
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return "", errors.New("no cgroup2 mount found")
}

// cgroup2MountPoint parses one mountinfo line: "... mountpoint ... - fstype ...".
func cgroup2MountPoint(line string) (string, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return "", false
	}
	if f := strings.Fields(post); len(f) == 0 || f[0] != "cgroup2" {
		return "", false
	}
	f := strings.Fields(pre)
	if len(f) < 5 {
		return "", false
	}
	return f[4], true
}

// removeCgroupTree kills every process in the cgroup dir and below
// (cgroup.kill) and removes the directories, deepest first. A missing dir
// is not an error.
func removeCgroupTree(ctx context.Context, dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, removeCgroupTree(ctx, filepath.Join(dir, e.Name())))
		}
	}
	errs = append(errs, killCgroup(dir), rmdirWhenEmpty(ctx, dir))
	return errors.Join(errs...)
}

// killCgroup sends SIGKILL to every process in dir and its children.
func killCgroup(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	return nil
}

// rmdirWhenEmpty retries rmdir while killed processes are still exiting.
func rmdirWhenEmpty(ctx context.Context, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
