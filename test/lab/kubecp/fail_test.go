package kubecp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStartFailureCleansUp: when a component dies during start, Start
// returns its log in the error and stops the others. Scripts stand in for
// the binaries, so this needs neither root nor bin/kube.
func TestStartFailureCleansUp(t *testing.T) {
	bin := t.TempDir()
	scripts := map[string]string{
		"etcd":                    "sleep 0.5; echo etcd: boom >&2; exit 3", // after the apiserver stand-in wrote its pid
		"kube-apiserver":          "echo $$ > " + filepath.Join(bin, "apiserver.pid") + "; exec sleep 60",
		"kube-controller-manager": "exit 0",
		"kube-scheduler":          "exit 0",
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{BinDir: bin, StateDir: t.TempDir()})
	if err == nil {
		c.Stop()
		t.Fatal("start succeeded with a failing etcd")
	}
	if !strings.Contains(err.Error(), "etcd exited") || !strings.Contains(err.Error(), "etcd: boom") {
		t.Errorf("error %q does not say etcd exited with its log", err)
	}
	b, err := os.ReadFile(filepath.Join(bin, "apiserver.pid"))
	if err != nil {
		t.Fatalf("kube-apiserver stand-in did not run: %v", err)
	}
	if _, err := os.Stat("/proc/" + strings.TrimSpace(string(b))); err == nil {
		t.Errorf("kube-apiserver stand-in (pid %s) still running after failed start", strings.TrimSpace(string(b)))
	}
}
