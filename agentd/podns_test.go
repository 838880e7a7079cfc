package agentd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/agentd/loader"
)

func TestPodUIDFromCgroup(t *testing.T) {
	const uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	for _, tc := range []struct {
		name string
		want string
	}{
		{"pod" + uid, uid},
		{"pod" + strings.ReplaceAll(uid, "-", "_"), uid},
		{"kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice", uid},
		{"kubepods-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice", uid},
		{"kubepods-besteffort.slice", ""},
		{"kubepods-burstable-pod" + uid + ".scope", ""},
		{"podman", ""},
		{"pod" + uid[:35], ""},
		{"pod" + uid + "x", ""},
		{"pod" + strings.ReplaceAll(uid, "a", "z"), ""},
		{"cri-containerd-0123.scope", ""},
	} {
		got, ok := podUIDFromCgroup(tc.name)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("podUIDFromCgroup(%q) = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

func FuzzPodUIDFromCgroup(f *testing.F) {
	f.Add("pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
	f.Add("kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice")
	f.Fuzz(func(t *testing.T, name string) {
		if uid, ok := podUIDFromCgroup(name); ok && !isUUID(uid) {
			t.Fatalf("%q gave a non-uuid %q", name, uid)
		}
	})
}

// cgroupTree is a throwaway directory below the cgroup2 root, removed with
// everything below it when the test ends (after its processes).
type cgroupTree struct {
	t    *testing.T
	root string
}

func newCgroupTree(t *testing.T) *cgroupTree {
	t.Helper()
	requireRoot(t, "creates cgroups and network namespaces")
	root, err := loader.FindCgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	return newCgroupTreeAt(t, filepath.Join(root, "amtest-finder-"+hex.EncodeToString(b)))
}

// newCgroupTreeAt makes the tree at dir (which must not exist).
func newCgroupTreeAt(t *testing.T, dir string) *cgroupTree {
	t.Helper()
	c := &cgroupTree{t: t, root: dir}
	if err := os.Mkdir(c.root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeCgroupDirs(c.root); err != nil {
			t.Errorf("remove test cgroups: %v", err)
		}
	})
	return c
}

// mkdir makes a cgroup at rel below the tree.
func (c *cgroupTree) mkdir(rel string) string {
	c.t.Helper()
	p := filepath.Join(c.root, rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// start runs "sleep" in cgroup dir, in a new network namespace unless
// hostNet. It is killed (by pid) and reaped when the test ends, or by the
// returned stop.
func (c *cgroupTree) start(dir string, hostNet bool) (pid int, stop func()) {
	c.t.Helper()
	cg, err := os.Open(dir)
	if err != nil {
		c.t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL}
	if !hostNet {
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWNET
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start process in %s: %v", dir, err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	c.t.Cleanup(stop) // runs before the tree's cleanup (LIFO)
	return cmd.Process.Pid, stop
}

// removeCgroupDirs removes dir and its sub-cgroups, deepest first.
func removeCgroupDirs(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeCgroupDirs(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	var err2 error
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err2 = os.Remove(dir); err2 == nil || time.Now().After(deadline) {
			return err2
		}
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func fileInode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestCgroupFinder runs the real finder on real cgroups with real processes
// in throwaway network namespaces, in both kubelet spellings.
func TestCgroupFinder(t *testing.T) {
	tree := newCgroupTree(t)
	const (
		uidFS   = "11111111-2222-3333-4444-555555555555" // cgroupfs driver / lab
		uidSD   = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" // systemd driver
		uidHost = "12121212-3434-5656-7878-909090909090"
		uidIdle = "abababab-cdcd-efef-0101-232323232323"
	)
	fsDir := tree.mkdir("node-1/pod" + uidFS)
	pidFS, stopFS := tree.start(fsDir, false)
	// systemd driver: the processes are in a container cgroup below the pod's.
	sdPod := "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uidSD, "-", "_") + ".slice"
	pidSD, _ := tree.start(tree.mkdir(sdPod+"/cri-containerd-0123.scope"), false)
	tree.start(tree.mkdir("node-1/pod"+uidHost), true)
	tree.mkdir("node-1/pod" + uidIdle)
	tree.mkdir("deep/1/2/3/4/5/6/pod" + "99999999-9999-9999-9999-999999999999")

	log, _ := newLog(t)
	f, err := NewCgroupFinder(tree.root, log)
	if err != nil {
		t.Fatal(err)
	}
	for uid, pid := range map[string]int{uidFS: pidFS, uidSD: pidSD} {
		ns, err := f.Find(uid)
		if err != nil {
			t.Fatalf("Find(%s): %v", uid, err)
		}
		if got, want := fileInode(t, ns), inode(t, fmt.Sprintf("/proc/%d/ns/net", pid)); got != want {
			t.Errorf("Find(%s) gave netns %d, want the process's %d", uid, got, want)
		}
		if fileInode(t, ns) == inode(t, "/proc/self/ns/net") {
			t.Errorf("Find(%s) gave the host netns", uid)
		}
		ns.Close()
	}
	for uid, want := range map[string]error{
		uidHost: ErrHostNetwork, uidIdle: ErrNoProcess,
		"99999999-9999-9999-9999-999999999999": ErrNoPodCgroup, // below the depth bound
		"00000000-0000-0000-0000-000000000000": ErrNoPodCgroup,
	} {
		if ns, err := f.Find(uid); !errors.Is(err, want) {
			t.Errorf("Find(%s) = %v, %v; want %v", uid, ns, err, want)
			if ns != nil {
				ns.Close()
			}
		}
	}
	// The process exits: the pod has no live process; the cache stays.
	stopFS()
	if _, err := f.Find(uidFS); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Find after the process exited = %v, want ErrNoProcess", err)
	}
	// The cgroup moves (recreated elsewhere): the stale entry is re-walked.
	if err := os.Remove(fsDir); err != nil {
		t.Fatal(err)
	}
	pidMoved, _ := tree.start(tree.mkdir("node-2/pod"+uidFS), false)
	ns, err := f.Find(uidFS)
	if err != nil {
		t.Fatalf("Find after the cgroup moved: %v", err)
	}
	defer ns.Close()
	if got, want := fileInode(t, ns), inode(t, fmt.Sprintf("/proc/%d/ns/net", pidMoved)); got != want {
		t.Errorf("after the move: netns %d, want %d", got, want)
	}
}
