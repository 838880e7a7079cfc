// Package kube runs the mesh end to end on the lab in Kubernetes mode: a
// real etcd, kube-apiserver and kube-controller-manager, a fake kubelet
// per node, the AgentMesh controller, and agentd and ztunnel in
// Kubernetes mode on every node. It needs root and bin/kube (`make kube`);
// with CI=true a missing prerequisite fails.
package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// binDir holds agentd, ztunnel, meshlab and controller, built by TestMain;
// kubeBinDir holds etcd, kube-apiserver and kube-controller-manager.
var binDir, kubeBinDir string

func TestMain(m *testing.M) {
	if why := missingPrerequisite(); why != "" {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "FAIL: kube e2e tests cannot run: %s (CI=true: this is an error, not a skip)\n", why)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "skipping kube e2e tests: %s\n", why)
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "agentmesh-kube-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	err = lab.BuildBinaries(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// missingPrerequisite names what the host lacks, or "".
func missingPrerequisite() string {
	if os.Geteuid() != 0 {
		return "not root (eBPF, network namespaces and cgroups need root)"
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return "kernel without BTF (/sys/kernel/btf/vmlinux)"
	}
	if _, err := lab.CgroupRoot(); err != nil {
		return fmt.Sprintf("no cgroup v2 mount: %v", err)
	}
	kubeBinDir = os.Getenv("AGENTMESH_KUBE_BIN")
	if kubeBinDir == "" {
		root, err := lab.ModuleRoot(context.Background())
		if err != nil {
			return err.Error()
		}
		kubeBinDir = filepath.Join(root, "bin", "kube")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(kubeBinDir, b)); err != nil {
			return fmt.Sprintf("no %s in %s (run `make kube` or set AGENTMESH_KUBE_BIN)", b, kubeBinDir)
		}
	}
	return ""
}

// newLab starts a Kubernetes-mode lab with the mesh on nodes nodes,
// removed when the test ends.
func newLab(t *testing.T, nodes int) *lab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	l, err := lab.New(ctx, lab.Options{Nodes: nodes, BinDir: binDir, KubeBinDir: kubeBinDir, Kube: true,
		StartMesh: true, ReadyTimeout: 45 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("new kube lab: %v", err)
	}
	t.Logf("lab %s up in %s", l.ID(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}
