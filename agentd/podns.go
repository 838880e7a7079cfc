package agentd

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// NetnsFinder finds the network namespace of a pod on this node
// (Kubernetes mode; in standalone mode Workload.Netns names it).
type NetnsFinder interface {
	// Find opens the network namespace of the pod with uid; the caller
	// closes it. Errors: ErrNoPodCgroup and ErrNoProcess are worth a
	// retry (the pod is still starting); ErrHostNetwork never changes.
	Find(uid string) (*os.File, error)
}

// Errors of NetnsFinder.Find.
var (
	ErrNoPodCgroup = errors.New("pod cgroup not found")
	ErrNoProcess   = errors.New("pod cgroup has no live process yet")
	ErrHostNetwork = errors.New("pod runs in the host network namespace")
)

// Depth bounds of the cgroup walk.
const (
	// podCgroupDepth bounds how deep below the root pod cgroups are looked
	// for: /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice
	// is 3 deep, the lab's <node>/pod<uid> 1.
	podCgroupDepth = 6
	// containerDepth bounds how deep below a pod cgroup its processes are
	// looked for: the kubelet puts them in one cgroup per container.
	containerDepth = 2
)

// CgroupFinder finds a pod's network namespace through its cgroup: the
// kubelet names a pod's cgroup directory pod<uid> (cgroupfs driver, and the
// lab's fake kubelet) or <parent>-pod<uid with _ for ->.slice (systemd
// driver), somewhere below the cgroup2 root. The directory of every pod
// seen is cached; a miss walks the tree again. The netns is the one of the
// first live process in the pod cgroup or its container cgroups, which
// must not be the host's. Safe for concurrent use.
type CgroupFinder struct {
	root string
	host []nsID // the host's (pid 1's) and agentd's own netns

	mu   sync.Mutex
	dirs map[string]string // pod uid -> cgroup dir; guarded by mu
}

// nsID identifies a namespace file.
type nsID struct{ dev, ino uint64 }

// NewCgroupFinder returns a finder for pods below root (a cgroup2 dir).
// A pod whose netns is agentd's own or pid 1's is a host-network pod
// (agentd runs with hostNetwork and hostPID). When pid 1's netns cannot be
// read (pid 1 holds capabilities agentd lacks), agentd's own is the
// reference and the reason is logged.
func NewCgroupFinder(root string, log *slog.Logger) (*CgroupFinder, error) {
	f := &CgroupFinder{root: root, dirs: map[string]string{}}
	own, err := ownNetnsID("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("own netns: %w", err)
	}
	f.host = append(f.host, own)
	if init, err := statNS("/proc/1/ns/net"); err != nil {
		log.Warn("cannot read pid 1's netns; host-network pods are recognised by agentd's own netns only", "err", err)
	} else if init != own {
		f.host = append(f.host, init)
	}
	return f, nil
}

// ownNetnsID stats a netns path on a locked thread (thread-self is then
// this goroutine's thread, never one inside netns.Do).
func ownNetnsID(path string) (nsID, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return statNS(path)
}

func statNS(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// Find implements NetnsFinder.
func (f *CgroupFinder) Find(uid string) (*os.File, error) {
	dir, err := f.dir(uid, false)
	if err != nil {
		return nil, err
	}
	pids, err := procsUnder(dir, containerDepth)
	if errors.Is(err, fs.ErrNotExist) { // a stale cache entry
		if dir, err = f.dir(uid, true); err != nil {
			return nil, err
		}
		pids, err = procsUnder(dir, containerDepth)
	}
	if err != nil {
		return nil, fmt.Errorf("pod cgroup %s: %w", dir, err)
	}
	for _, pid := range pids {
		ns, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/net")
		if err != nil {
			continue // exited since cgroup.procs was read
		}
		if err := f.checkNotHost(ns); err != nil {
			ns.Close()
			return nil, fmt.Errorf("pod cgroup %s, pid %d: %w", dir, pid, err)
		}
		return ns, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrNoProcess, dir)
}

func (f *CgroupFinder) checkNotHost(ns *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &st); err != nil {
		return fmt.Errorf("stat netns: %w", err)
	}
	if slices.Contains(f.host, nsID{uint64(st.Dev), st.Ino}) {
		return ErrHostNetwork
	}
	return nil
}

// dir returns uid's cgroup dir from the cache, walking the tree on a miss
// (or always, with fresh). A walk replaces the whole cache, so it holds
// only pods that existed at the last walk.
func (f *CgroupFinder) dir(uid string, fresh bool) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.dirs[uid]; ok && !fresh {
		return d, nil
	}
	found := map[string]string{}
	if err := walkCgroups(f.root, podCgroupDepth, found); err != nil {
		return "", err
	}
	f.dirs = found
	if d, ok := found[uid]; ok {
		return d, nil
	}
	return "", fmt.Errorf("%w: no pod%s below %s", ErrNoPodCgroup, uid, f.root)
}

// walkCgroups records every pod cgroup below dir, depth levels deep, in
// found (by uid). It does not descend into pod cgroups. Directories that
// vanish meanwhile are skipped.
func walkCgroups(dir string, depth int, found map[string]string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("read cgroup dir: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if uid, ok := podUIDFromCgroup(e.Name()); ok {
			found[uid] = p
		} else if depth > 1 {
			if err := walkCgroups(p, depth-1, found); err != nil {
				return err
			}
		}
	}
	return nil
}

// podUIDFromCgroup returns the pod uid a kubelet cgroup name carries:
// pod<uid> (cgroupfs driver) or <qos parent>-pod<uid with _>.slice
// (systemd driver). Only UUID-shaped uids match, so names like "podman"
// do not.
func podUIDFromCgroup(name string) (string, bool) {
	var rest string
	if r, ok := strings.CutPrefix(name, "pod"); ok {
		rest = r
	} else if i := strings.LastIndex(name, "-pod"); i >= 0 && strings.HasSuffix(name, ".slice") {
		rest = strings.TrimSuffix(name[i+len("-pod"):], ".slice")
	} else {
		return "", false
	}
	uid := strings.ReplaceAll(rest, "_", "-")
	if !isUUID(uid) {
		return "", false
	}
	return uid, true
}

// isUUID reports whether s is 8-4-4-4-12 hex digits.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

// procsUnder lists the pids in dir's cgroup.procs, then in those of its
// child cgroups (containers), depth levels deep.
func procsUnder(dir string, depth int) ([]int, error) {
	pids, err := readProcs(filepath.Join(dir, "cgroup.procs"))
	if err != nil || depth <= 1 {
		return pids, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read cgroup dir: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() {
			sub, err := procsUnder(filepath.Join(dir, e.Name()), depth-1)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			pids = append(pids, sub...)
		}
	}
	return pids, nil
}

// readProcs parses a cgroup.procs file.
func readProcs(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cgroup.procs: %w", err)
	}
	var pids []int
	for _, l := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(l)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("bad pid %q in %s", l, path)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}
