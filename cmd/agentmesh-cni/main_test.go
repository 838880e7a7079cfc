package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentmesh/agentmesh/internal/cnigate"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

// plugin builds the plugin binary once per test run.
var plugin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "agentmesh-cni-test")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "agentmesh-cni")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build plugin: %v\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := plugin(); err == nil {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/proc/self/ns/net"}],
 "ips":[{"interface":0,"address":"10.88.0.7/16","gateway":"10.88.0.1"},{"interface":0,"address":"fd00::7/64"}]}`

// run runs the plugin binary as a runtime does: command and pod in the
// environment, the network configuration on stdin.
func run(t *testing.T, command, conf, args string) (string, error) {
	t.Helper()
	testutil.RequireRoot(t, "the plugin needs a pod network namespace")
	ns := testutil.NewNetns(t) // not the plugin's own, as CNI requires
	bin, err := plugin()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=sandbox-1", fmt.Sprintf("CNI_NETNS=/proc/%d/fd/%d", os.Getpid(), ns.Fd()),
		"CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin", "CNI_ARGS=" + args}
	cmd.Stdin = strings.NewReader(conf)
	var out bytes.Buffer
	cmd.Stdout = &out
	err = cmd.Run()
	return out.String(), err
}

func conf(socket string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"lab","type":"agentmesh-cni","socket":%q,"timeout":"5s","prevResult":%s}`, socket, prevResult)
}

const k8sArgs = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team;K8S_POD_NAME=agent;K8S_POD_INFRA_CONTAINER_ID=sandbox-1;K8S_POD_UID=u-1"

func gate(t *testing.T, h cnigate.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cni.sock")
	s, err := cnigate.Listen(path, h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) }) //nolint:errcheck // ends with ctx
	t.Cleanup(func() { cancel(); wg.Wait() })
	return path
}

// TestAddHandsThePodToAgentd: ADD sends agentd the pod of CNI_ARGS with
// the addresses of the previous result, and passes that result on
// unchanged once agentd answered.
func TestAddHandsThePodToAgentd(t *testing.T) {
	reqs := make(chan cnigate.Request, 1)
	path := gate(t, func(_ context.Context, r cnigate.Request, _ *os.File) cnigate.Reply {
		reqs <- r
		return cnigate.Reply{Captured: true}
	})
	out, err := run(t, "ADD", conf(path), k8sArgs)
	if err != nil {
		t.Fatalf("ADD: %v\n%s", err, out)
	}
	r := <-reqs
	if r.UID != "u-1" || r.Namespace != "team" || r.Name != "agent" || r.ContainerID != "sandbox-1" ||
		fmt.Sprint(r.IPs) != "[10.88.0.7 fd00::7]" {
		t.Errorf("agentd got %+v", r)
	}
	var got, want map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("ADD printed %q: %v", out, err)
	}
	json.Unmarshal([]byte(prevResult), &want) //nolint:errcheck // a constant
	if fmt.Sprint(got["ips"]) != fmt.Sprint(want["ips"]) || fmt.Sprint(got["interfaces"]) != fmt.Sprint(want["interfaces"]) {
		t.Errorf("ADD printed %s, want the previous result %s", out, prevResult)
	}
}

// TestAddFailsClosed: when agentd refuses the pod or is not there, the
// ADD fails (the runtime does not start the pod) and says why; a sandbox
// that is not a Kubernetes pod, DEL and CHECK pass without agentd.
func TestAddFailsClosed(t *testing.T) {
	path := gate(t, func(context.Context, cnigate.Request, *os.File) cnigate.Reply {
		return cnigate.Reply{Err: "ztunnel did not set the pod up: no certificate"}
	})
	if out, err := run(t, "ADD", conf(path), k8sArgs); err == nil || !strings.Contains(out, "no certificate") {
		t.Errorf("ADD refused by agentd: %v, printed %s; want a failure naming the reason", err, out)
	}
	none := filepath.Join(t.TempDir(), "none.sock")
	if out, err := run(t, "ADD", conf(none), k8sArgs); err == nil || !strings.Contains(out, "is agentd running") {
		t.Errorf("ADD without agentd: %v, printed %s; want a failure", err, out)
	}
	if out, err := run(t, "ADD", conf(none), "IgnoreUnknown=1"); err != nil {
		t.Errorf("ADD of a non-Kubernetes sandbox without agentd: %v\n%s", err, out)
	}
	for _, cmd := range []string{"DEL", "CHECK"} {
		if out, err := run(t, cmd, conf(none), k8sArgs); err != nil {
			t.Errorf("%s without agentd: %v\n%s", cmd, err, out)
		}
	}
	if out, err := run(t, "ADD", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"lab","type":"agentmesh-cni","socket":%q}`, path), k8sArgs); err == nil || !strings.Contains(out, "chained") {
		t.Errorf("ADD without a previous result: %v, printed %s; want a failure", err, out)
	}
}
