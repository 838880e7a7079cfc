package configsource

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
)

var discard = slog.New(slog.DiscardHandler)

// TestStandaloneRun: standalone mode applies every valid version of the
// file, keeps the last good config when the file turns invalid, and Run
// returns nil once ctx is done.
func TestStandaloneRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.json")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"trustDomain":"one.test"}`)
	s, err := New(Flags{Node: "n1", ConfigPath: path}, Options{Component: configapi.ComponentAgentd, Interval: 10 * time.Millisecond, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if s.Kubernetes() || s.Client() != nil || fmt.Sprint(s.Describe()) != fmt.Sprint([]any{"mode", "standalone", "config", path}) {
		t.Fatalf("standalone source: kubernetes %v, client %v, describe %v", s.Kubernetes(), s.Client(), s.Describe())
	}
	applied := make(chan string, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(c *meshconfig.Config) { applied <- c.TrustDomain }, nil) }()
	next := func() string {
		t.Helper()
		select {
		case td := <-applied:
			return td
		case <-time.After(5 * time.Second):
			t.Fatal("no config applied")
			return ""
		}
	}
	if td := next(); td != "one.test" {
		t.Fatalf("applied %q", td)
	}
	write(`{"trustDomain":`)
	time.Sleep(50 * time.Millisecond) // a few polls of the invalid file
	write(`{"trustDomain":"two.test"}`)
	if td := next(); td != "two.test" {
		t.Fatalf("applied %q after the invalid file, want two.test", td)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

// TestKubernetesSource: Kubernetes mode makes a client for the component
// and does no I/O until Run.
func TestKubernetesSource(t *testing.T) {
	f := Flags{Node: "n1", Controller: "ctl:15012", ControllerCA: "/nonexistent/ca.pem", TokenFile: "/nonexistent/tok"}
	s, err := New(f, Options{Component: configapi.ComponentZtunnel, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Kubernetes() || s.Client() == nil || !slices.Equal(s.Describe(), []any{"mode", "kubernetes", "controller", "ctl:15012"}) {
		t.Fatalf("kubernetes source: kubernetes %v, client %v, describe %v", s.Kubernetes(), s.Client(), s.Describe())
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close before Run = %v", err)
	}
	if _, err := New(f, Options{Component: "kubelet", Logger: discard}); err == nil {
		t.Error("New accepted an unknown component")
	}
}
