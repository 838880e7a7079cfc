package realnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// What a real node changes on the host outside its own directory, network
// namespace and cgroups, whatever its flags say: the kubelet sets three
// kernel sysctls (it panics on OOM and overcommits, as Kubernetes expects),
// and the kubelet, containerd's shims and the CNI library create these
// directories at fixed paths. The bridge plugin's net.ipv4.ip_forward and
// the kubelet's and kube-proxy's nft tables are the node netns's own and
// go with it.
var (
	hostSysctls = []string{"vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops"}
	hostDirs    = []string{
		"/var/lib/kubelet",        // device-plugins/ (fixed), pki/ unless --cert-dir
		"/var/log/containers",     // the kubelet's symlinks to container logs (fixed)
		"/var/log/pods",           // unless podLogsDir
		"/var/lib/cni",            // libcni's result cache (fixed in containerd's CRI)
		"/run/containerd",         // the shims' sockets, /run/containerd/s (fixed)
		"/usr/libexec/kubernetes", // unless volumePluginDir
		"/etc/kubernetes",
		"/var/lib/containerd",
	}
)

// HostLock serializes the real nodes of this host, across processes:
// each user reads the Host, runs its nodes and restores the Host while
// holding it, so no one snapshots another's changes as the original. It
// is an flock on /proc/sys/kernel/panic, one of the sysctls in question:
// a file that is always there and that nothing else locks, so the lock
// leaves nothing behind; the kernel releases it when its holder dies.
type HostLock struct{ f *os.File }

// LockHost takes the HostLock, waiting for its holder as long as ctx
// allows.
func LockHost(ctx context.Context) (*HostLock, error) {
	f, err := os.Open(sysctlPath("kernel.panic"))
	if err != nil {
		return nil, fmt.Errorf("host lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &HostLock{f: f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("host lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("host lock: another lab's real nodes hold it: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Unlock releases the lock.
func (l *HostLock) Unlock() { l.f.Close() }

// Host is what the host looked like before a real node ran: the sysctls
// it changes, which of its fixed directories existed, the host netns's
// nft tables.
type Host struct {
	Sysctls map[string]string
	Existed map[string]bool
	Nft     []string // `nft list tables` lines
}

// ReadHost reads the host's state.
func ReadHost() (*Host, error) {
	h := &Host{Sysctls: map[string]string{}, Existed: map[string]bool{}}
	for _, s := range hostSysctls {
		b, err := os.ReadFile(sysctlPath(s))
		if err != nil {
			return nil, fmt.Errorf("read sysctl %s: %w", s, err)
		}
		h.Sysctls[s] = strings.TrimSpace(string(b))
	}
	for _, d := range hostDirs {
		_, err := os.Lstat(d)
		switch {
		case err == nil:
			h.Existed[d] = true
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("host dir %s: %w", d, err)
		}
	}
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("nft list tables: %w: %s", err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			h.Nft = append(h.Nft, l)
		}
	}
	slices.Sort(h.Nft)
	return h, nil
}

// Restore puts back what the nodes changed: the sysctls' values, and
// removes the fixed directories that did not exist before (with what is
// in them: only the nodes wrote there). In a directory that existed it
// removes the kubelet's log symlinks into dir (the nodes' directory).
// It then checks the host is as h says (the nodes' tables are gone with
// their netns; another host change would show too), so call it after
// every node has stopped, holding the HostLock.
func (h *Host) Restore(dir string) error {
	var errs []error
	for s, v := range h.Sysctls {
		if err := os.WriteFile(sysctlPath(s), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", s, v, err))
		}
	}
	for _, d := range hostDirs {
		if !h.Existed[d] {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
			}
		}
	}
	if h.Existed["/var/log/containers"] && dir != "" {
		links, _ := filepath.Glob("/var/log/containers/*.log")
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && strings.HasPrefix(t, dir+"/") {
				if err := os.Remove(l); err != nil {
					errs = append(errs, fmt.Errorf("remove %s: %w", l, err))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	now, err := ReadHost()
	if err != nil {
		return err
	}
	if d := h.Diff(now); d != "" {
		return fmt.Errorf("host not as before after the restore: %s", d)
	}
	return nil
}

// Save writes h to path, for a cleanup after a crash (LoadHost).
func (h *Host) Save(path string) error {
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("host state: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("host state: %w", err)
	}
	return nil
}

// LoadHost reads what Save wrote.
func LoadHost(path string) (*Host, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("host state: %w", err)
	}
	h := &Host{}
	if err := json.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("host state %s: %w", path, err)
	}
	return h, nil
}

// Diff says how now differs from h ("" when it does not).
func (h *Host) Diff(now *Host) string {
	var d []string
	for s, v := range h.Sysctls {
		if now.Sysctls[s] != v {
			d = append(d, fmt.Sprintf("sysctl %s: %s, was %s", s, now.Sysctls[s], v))
		}
	}
	for _, dir := range hostDirs {
		if h.Existed[dir] != now.Existed[dir] {
			d = append(d, fmt.Sprintf("%s: exists %v, was %v", dir, now.Existed[dir], h.Existed[dir]))
		}
	}
	if !slices.Equal(h.Nft, now.Nft) {
		d = append(d, fmt.Sprintf("nft tables %q, were %q", now.Nft, h.Nft))
	}
	slices.Sort(d)
	return strings.Join(d, "; ")
}

func sysctlPath(name string) string {
	return "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
}
