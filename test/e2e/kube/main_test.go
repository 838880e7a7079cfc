// Package kube runs the mesh end to end on the lab in Kubernetes mode: a
// real etcd, kube-apiserver and kube-controller-manager, a fake kubelet
// per node, the AgentMesh controller, and agentd and ztunnel in
// Kubernetes mode on every node. It needs root and bin/kube (`make kube`);
// with CI=true a missing prerequisite fails.
package kube

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// binDir holds agentd, ztunnel, meshlab and controller, built by TestMain;
// kubeBinDir holds etcd, kube-apiserver and kube-controller-manager.
var binDir, kubeBinDir string

func TestMain(m *testing.M) {
	os.Exit(lab.RunTestMain(m, true, func(b lab.TestBinaries) { binDir, kubeBinDir = b.Dir, b.KubeDir }))
}

// newLab starts a Kubernetes-mode lab with the mesh on nodes nodes,
// removed when the test ends.
func newLab(t *testing.T, nodes int, opts ...func(*lab.Options)) *lab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	o := lab.Options{Nodes: nodes, BinDir: binDir, KubeBinDir: kubeBinDir, Kube: true,
		StartMesh: true, ReadyTimeout: 45 * time.Second, Logger: testLogger(t)}
	for _, f := range opts {
		f(&o)
	}
	l, err := lab.New(ctx, o)
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
