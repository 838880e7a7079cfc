// Package e2e runs the mesh end to end on the lab: real eBPF programs in the
// real kernel, real agentd and ztunnel processes per node, pods in network
// namespaces. It needs root; with CI=true a missing prerequisite fails.
package e2e

import (
	"os"
	"testing"

	"github.com/agentmesh/agentmesh/test/lab"
)

// binDir holds the agentd, ztunnel and meshlab binaries built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(lab.RunTestMain(m, false, func(b lab.TestBinaries) { binDir = b.Dir }))
}
