package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// TestBinaries are the binaries a test package's TestMain built for it.
type TestBinaries struct {
	Dir     string // agentd, ztunnel, controller, meshlab, meshctl
	KubeDir string // etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ("" without kube)
}

// RunTestMain is the TestMain of a package of lab tests: it checks the
// host can run a lab (root, BTF, cgroup v2; with kube also the binaries of
// `make kube`, or $AGENTMESH_KUBE_BIN), builds the mesh binaries into a
// temporary directory, runs the tests with them and removes the directory.
// A missing prerequisite fails the package when CI=true and skips it
// otherwise. It returns the exit code for os.Exit.
func RunTestMain(m *testing.M, kube bool, use func(TestBinaries)) int {
	var bins TestBinaries
	why := missingPrerequisite()
	if why == "" && kube {
		bins.KubeDir, why = findKubeBinaries()
	}
	if why != "" {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "FAIL: lab tests cannot run: %s (CI=true: this is an error, not a skip)\n", why)
			return 1
		}
		fmt.Fprintf(os.Stderr, "skipping lab tests: %s\n", why)
		return 0
	}
	dir, err := os.MkdirTemp("", "agentmesh-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	err = BuildBinaries(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n", err)
		return 1
	}
	bins.Dir = dir
	use(bins)
	return m.Run()
}

// missingPrerequisite names what the host lacks for a lab, or "".
func missingPrerequisite() string {
	if os.Geteuid() != 0 {
		return "not root (eBPF, network namespaces and cgroups need root)"
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return "kernel without BTF (/sys/kernel/btf/vmlinux)"
	}
	if _, err := CgroupRoot(); err != nil {
		return fmt.Sprintf("no cgroup v2 mount: %v", err)
	}
	return ""
}

// findKubeBinaries returns $AGENTMESH_KUBE_BIN or <module>/bin/kube, or why
// it cannot be used.
func findKubeBinaries() (dir, why string) {
	dir = os.Getenv("AGENTMESH_KUBE_BIN")
	if dir == "" {
		root, err := ModuleRoot(context.Background())
		if err != nil {
			return "", err.Error()
		}
		dir = filepath.Join(root, "bin", "kube")
	}
	for _, b := range append(slices.Clone(kubecp.Binaries), kubecp.Kubectl) {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Sprintf("no %s in %s (run `make kube` or set AGENTMESH_KUBE_BIN)", b, dir)
		}
	}
	return dir, ""
}

// RequireModuleBins returns the module's bin/ directory after checking
// that it holds names (paths relative to it, like "kube/etcd"; `make
// build kube` makes them). A missing one fails the test when CI=true and
// skips it otherwise.
func RequireModuleBins(t testing.TB, names ...string) string {
	t.Helper()
	root, err := ModuleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "bin")
	for _, b := range names {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			msg := "missing " + filepath.Join(dir, b) + " (run make build kube)"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return dir
}

// KubeBinPaths are the control plane's binaries as RequireModuleBins names
// them ("kube/etcd", ...).
func KubeBinPaths() []string {
	var out []string
	for _, b := range kubecp.Binaries {
		out = append(out, filepath.Join("kube", b))
	}
	return out
}
