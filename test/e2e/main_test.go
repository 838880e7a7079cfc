// Package e2e runs the mesh end to end on the lab: real eBPF programs in the
// real kernel, real agentd and ztunnel processes per node, pods in network
// namespaces. It needs root; with CI=true a missing prerequisite fails.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// binDir holds the agentd, ztunnel and meshlab binaries built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	if why := missingPrerequisite(); why != "" {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "FAIL: e2e tests cannot run: %s (CI=true: this is an error, not a skip)\n", why)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "skipping e2e tests: %s\n", why)
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "agentmesh-e2e-bin-")
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

// missingPrerequisite names what the host lacks for the lab, or "".
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
	return ""
}
