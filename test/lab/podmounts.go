package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A Kubernetes pod's processes read the files the kubelet made for the pod
// (its resolv.conf, its hosts file) at /etc/resolv.conf and /etc/hosts, as
// in a container. The lab does it without touching the host's files: each
// such process is born in a mount namespace of its own (clone with
// CLONE_NEWNS; Go then makes every mount in it private, so nothing
// propagates back) and starts as the lab's own binary (/proc/self/exe)
// which, told by podInitEnv, bind-mounts the files over their places and
// execs the real command. The namespace and its mounts die with the
// process; the files live in the pod's directory under the state dir and
// go with the pod.

// podInitEnv carries the bind mounts (JSON) to a re-executed lab binary;
// its presence makes the binary a pod's init (see init below).
const podInitEnv = "AMLAB_POD_INIT"

// bindMount puts the file Src at Dst inside a process's mount namespace.
type bindMount struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

func init() {
	if spec, ok := os.LookupEnv(podInitEnv); ok {
		podInit(spec)
	}
}

// podInit runs instead of the program when the lab re-executes itself for
// a pod process: os.Args are [self, path, argv...]. It never returns.
func podInit(spec string) {
	err := func() error {
		var mounts []bindMount
		if err := json.Unmarshal([]byte(spec), &mounts); err != nil {
			return fmt.Errorf("decode %s: %w", podInitEnv, err)
		}
		if len(os.Args) < 3 {
			return fmt.Errorf("no command")
		}
		for _, m := range mounts {
			if err := unix.Mount(m.Src, m.Dst, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind-mount %s over %s: %w", m.Src, m.Dst, err)
			}
		}
		env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, podInitEnv+"=") })
		return syscall.Exec(os.Args[1], os.Args[2:], env)
	}()
	fmt.Fprintf(os.Stderr, "amlab pod init: %v\n", err)
	os.Exit(127)
}

// withMounts rewrites cmd (made from args) to start through podInit with
// mounts in a mount namespace of its own. args[0] is looked up in the
// lab's PATH, as exec.Command does.
func withMounts(cmd *exec.Cmd, args []string, mounts []bindMount) error {
	path, err := exec.LookPath(args[0])
	if err != nil {
		return fmt.Errorf("find %s: %w", args[0], err)
	}
	spec, err := json.Marshal(mounts)
	if err != nil {
		return fmt.Errorf("encode mounts: %w", err)
	}
	cmd.Path = "/proc/self/exe"
	cmd.Args = append([]string{"amlab-pod-init", path}, args...)
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(slices.Clip(cmd.Env), podInitEnv+"="+string(spec))
	cmd.SysProcAttr.Unshareflags |= syscall.CLONE_NEWNS
	return nil
}

// podFilesDir is where the lab keeps the files of pod p's mounts.
func (l *Lab) podFilesDir(p *Pod) string { return filepath.Join(l.state, "pods", p.key) }

// setPodFile writes name (resolv.conf, hosts) into p's files dir and
// has p's processes started from now on see it at dst.
func (l *Lab) setPodFile(p *Pod, name, dst string, content []byte) error {
	dir := l.podFilesDir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make pod files dir: %w", err)
	}
	src := filepath.Join(dir, name)
	if err := os.WriteFile(src, content, 0o644); err != nil {
		return fmt.Errorf("write pod %s: %w", name, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.ContainsFunc(p.mounts, func(m bindMount) bool { return m.Dst == dst }) {
		p.mounts = append(p.mounts, bindMount{Src: src, Dst: dst})
	}
	return nil
}
