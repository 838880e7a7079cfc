package agentd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/configsource"
	"github.com/agentmesh/agentmesh/internal/testutil"

	"github.com/agentmesh/agentmesh/agentd/loader"
	"github.com/agentmesh/agentmesh/api/meshconfig"
)

func TestRunFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--config", "x"}, "--node is required"},
		{[]string{"run", "--node", "n"}, "--config is required"},
		{[]string{"explode"}, `unknown subcommand "explode"`},
		{[]string{"--node", "n", "--config", "x", "--log-format", "xml"}, `bad --log-format "xml"`},
		{[]string{"--node", "n", "--config", "x", "--log-level", "loud"}, `bad --log-level "loud"`},
		{[]string{"--node", "n", "--config", "x", "extra"}, "unexpected arguments"},
		{[]string{"--bogus"}, "flag provided but not defined"},
		{[]string{"cleanup", "extra"}, "unexpected arguments"},
		{[]string{"--node", "n", "--config", "x", "--cni-conf-dir", "/etc/cni/net.d"}, "--cni-conf-dir needs --cni-socket"},
		{[]string{"--node", "n", "--config", "x", "--cni-socket", "s", "--cni-wait", "0s"}, "--cni-wait must be positive"},
		{[]string{"-h"}, ""},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		err := Run(context.Background(), tt.args, &out)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Run(%q) = %v, want error containing %q", tt.args, err, tt.wantErr)
		}
	}
}

// TestRunKeepsLastGoodConfig drives run end to end over a config file:
// enroll, an invalid file (nothing changes), removal, and a clean stop that
// leaves the remaining pod enrolled.
func TestRunKeepsLastGoodConfig(t *testing.T) {
	a, b := newNetns(t), newNetns(t)
	before := runtime.NumGoroutine()
	log, logs := newLog(t)
	ev := &eventLog{}
	dp := newFakeDatapath(ev)
	dir := t.TempDir()
	o := &options{mode: configsource.Flags{Node: node, ConfigPath: filepath.Join(dir, "mesh.json")}, socket: filepath.Join(dir, "run", "agentd.sock"),
		watchInterval: 20 * time.Millisecond, retryInterval: 50 * time.Millisecond}
	save(t, o.mode.ConfigPath, config(workload("a", a, true), workload("b", b, true)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, o, log, func(loader.Options) (Datapath, error) { return dp, nil })
	}()
	waitForFile(t, o.socket)
	stopZ := startZtunnel(t, o.socket, ev, log)
	ev.waitForAnyOrder(t, fmt.Sprintf("dp enroll %d", a.cookie), fmt.Sprintf("dp enroll %d", b.cookie),
		fmt.Sprintf("zt add a %d", a.cookie), fmt.Sprintf("zt add b %d", b.cookie), "zt snapshot a,b")

	if err := os.WriteFile(o.mode.ConfigPath, []byte(`{"workloads": [{"uid": "a"`), 0o644); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, logs, "ignoring invalid mesh config")
	time.Sleep(100 * time.Millisecond) // a few more polls
	if ev := ev.get(); len(ev) != 0 {
		t.Fatalf("an invalid config caused %q", ev)
	}

	save(t, o.mode.ConfigPath, config(workload("b", b, true)))
	ev.waitFor(t, "zt del a", fmt.Sprintf("dp unenroll %d", a.cookie))

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !dp.closed {
		t.Error("datapath not closed")
	}
	if got := dp.has(); len(got) != 1 || got[0] != b.cookie {
		t.Errorf("after stop enrolled = %v, want b (%d) kept", got, b.cookie)
	}
	if _, err := os.Stat(o.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	stopZ()
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after run and ztunnel stopped", before, runtime.NumGoroutine())
		}
	}
}

// TestRunRetriesFailedPod checks that a pod whose enrollment failed is
// retried without a config change.
func TestRunRetriesFailedPod(t *testing.T) {
	a := newNetns(t)
	log, _ := newLog(t)
	ev := &eventLog{}
	dp := newFakeDatapath(ev)
	dp.setFail(a.path, errInjected)
	dir := t.TempDir()
	o := &options{mode: configsource.Flags{Node: node, ConfigPath: filepath.Join(dir, "mesh.json")}, socket: filepath.Join(dir, "agentd.sock"),
		watchInterval: 20 * time.Millisecond, retryInterval: 30 * time.Millisecond}
	save(t, o.mode.ConfigPath, config(workload("a", a, true)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, o, log, func(loader.Options) (Datapath, error) { return dp, nil })
	}()
	time.Sleep(100 * time.Millisecond)
	dp.setFail(a.path, nil)
	ev.waitFor(t, fmt.Sprintf("dp enroll %d", a.cookie))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRunFailsWhenDatapathFails(t *testing.T) {
	log, _ := newLog(t)
	o := &options{mode: configsource.Flags{Node: node, ConfigPath: "/nonexistent"}, socket: filepath.Join(t.TempDir(), "s")}
	err := run(context.Background(), o, log, func(loader.Options) (Datapath, error) { return nil, errInjected })
	if !errors.Is(err, errInjected) {
		t.Fatalf("run = %v, want the datapath error", err)
	}
}

func save(t *testing.T, path string, c *meshconfig.Config) {
	t.Helper()
	if err := meshconfig.Save(path, c); err != nil {
		t.Fatal(err)
	}
}

func waitForFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s never appeared", path)
}

func waitForLog(t *testing.T, logs *testutil.LogBuffer, s string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(logs.String(), s) {
			return
		}
	}
	t.Fatalf("log never said %q", s)
}

func TestRunFlagSockmapAccel(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"--node", "n", "--config", "x"}, false},
		{[]string{"--node", "n", "--config", "x", "--sockmap-accel"}, true},
		{[]string{"--node", "n", "--config", "x", "--sockmap-accel=false"}, false},
	} {
		o, err := parseRunFlags(tt.args, io.Discard)
		if err != nil || o.accel != tt.want {
			t.Errorf("parseRunFlags(%q): accel = %v, %v; want %t", tt.args, o != nil && o.accel, err, tt.want)
		}
	}
}
