package deployment

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/internal/freeport"
	"github.com/agentmesh/agentmesh/test/lab/kubecp"
)

// testControllerBinary runs the real controller with only its service
// account's token: it must create its CA Secret, win the Lease, publish the
// root ConfigMap, become ready, write an AgentPolicy's status and record
// events, with no request refused.
func testControllerBinary(ctx context.Context, t *testing.T, cp *kubecp.ControlPlane, ctrl *rest.Config) {
	dir := t.TempDir()
	buildBinaries(ctx, t, dir, "controller")
	bin := filepath.Join(dir, "controller")
	kubeconfig := writeKubeconfig(t, dir, cp, ctrl.BearerToken)
	metrics := freeAddr(t)
	logPath := filepath.Join(dir, "controller.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	seedPolicyObjects(ctx, t, cp.AdminConfig())
	cmd := exec.Command(bin, "--kubeconfig", kubeconfig, "--namespace", meshNS, "--listen", freeAddr(t),
		"--metrics-addr", metrics, "--id", "replica-test", "--leader-elect=true",
		"--node-service-accounts", meshNS+"/"+nodeSA, "--token-audience", audience, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start controller: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill() // the PID we started
			<-exited
		}
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("controller log:\n%s", out)
		}
	})
	if err := waitReady(ctx, "http://"+metrics+"/readyz", exited); err != nil {
		t.Fatalf("controller never ready: %v", err)
	}
	checkControllerState(ctx, t, kubernetes.NewForConfigOrDie(cp.AdminConfig()))
	checkPolicyWrites(ctx, t, cp.AdminConfig())
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("controller exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("controller did not stop within 20s of SIGTERM")
	}
	out, _ := os.ReadFile(logPath)
	if strings.Contains(strings.ToLower(string(out)), "forbidden") {
		t.Errorf("the apiserver refused some request of the controller (see its log)")
	}
}

// buildBinaries builds the named commands (./cmd/NAME) into dir.
func buildBinaries(ctx context.Context, t *testing.T, dir string, names ...string) {
	t.Helper()
	args := []string{"build", "-o", dir + "/"}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	build := exec.CommandContext(ctx, "go", args...)
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// writeKubeconfig writes a kubeconfig that authenticates with token only.
func writeKubeconfig(t *testing.T, dir string, cp *kubecp.ControlPlane, token string) string {
	t.Helper()
	path := filepath.Join(dir, "controller.kubeconfig")
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"kubecp": {Server: cp.URL(), CertificateAuthority: cp.CAFile()}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"controller": {Token: token}},
		Contexts:       map[string]*clientcmdapi.Context{"controller": {Cluster: "kubecp", AuthInfo: "controller"}},
		CurrentContext: "controller",
	}
	if err := clientcmd.WriteToFile(cfg, path); err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	return path
}

// freeAddr is a loopback address with a port free right now, from below
// the ephemeral range (see internal/freeport).
func freeAddr(t *testing.T) string {
	t.Helper()
	addrs, err := freeport.Addrs(netip.MustParseAddr("127.0.0.1"), 1)
	if err != nil {
		t.Fatal(err)
	}
	return addrs[0]
}

// waitReady polls url until it answers 200, the process exits or 90s pass.
func waitReady(ctx context.Context, url string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("controller exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s)", ctx.Err(), last)
		case <-tick.C:
		}
		resp, err := http.Get(url)
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = resp.Status
	}
}

// checkControllerState waits for what a ready leader leaves behind.
func checkControllerState(ctx context.Context, t *testing.T, admin kubernetes.Interface) {
	t.Helper()
	s, err := admin.CoreV1().Secrets(meshNS).Get(ctx, caSecret, metav1.GetOptions{})
	if err != nil || len(s.Data[ca.SecretCertKey]) == 0 {
		t.Fatalf("ca secret after ready: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cm, cmErr := admin.CoreV1().ConfigMaps(meshNS).Get(ctx, rootCM, metav1.GetOptions{})
		lease, lErr := admin.CoordinationV1().Leases(meshNS).Get(ctx, leaseName, metav1.GetOptions{})
		published := cmErr == nil && cm.Data[ca.RootCertKey] == string(s.Data[ca.SecretCertKey])
		leading := lErr == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == "replica-test"
		if published && leading {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: root configmap published=%v (%v), lease held=%v (%v)", published, cmErr, leading, lErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
