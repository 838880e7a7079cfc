package lab

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDirLock serializes preparing netnsDir across concurrent labs (and
// test processes).
const netnsDirLock = "/run/amlab.netns.lock"

// ensureNetnsDir makes netnsDir a shared mount point of its own, as
// iproute2 does, before the first named netns is bind-mounted in it.
// Otherwise a later `ip netns add` (or another tool) bind-mounts the
// directory onto itself and the netns mounts made before end up shadowed
// in the layer underneath: visible as files, impossible to unmount by path,
// and unlink fails with EBUSY.
func ensureNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	lock, err := os.OpenFile(netnsDirLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", netnsDirLock, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", netnsDirLock, err)
	}
	mounted, err := isMountPoint(netnsDir)
	if err != nil || mounted {
		return err
	}
	if err := unix.Mount(netnsDir, netnsDir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s onto itself: %w", netnsDir, err)
	}
	if err := unix.Mount("", netnsDir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
	}
	return nil
}

// isMountPoint reports whether path is a mount point in this mount
// namespace.
func isMountPoint(path string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 4 && fields[4] == path {
			return true, nil
		}
	}
	return false, s.Err()
}
