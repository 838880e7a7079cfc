package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// Controller ports (as deploy/ sets them).
const (
	ControllerPort      = 15012 // gRPC config stream and CA
	ControllerAdminPort = 15014 // /metrics, /status, /readyz
)

// MaxControllers is how many controller replicas a lab can run.
const MaxControllers = 2

// ControllerAddr is replica r's gRPC address in the wire netns: replica 0
// listens on 198.18.0.254 (where node components connect), replica 1 on
// 198.18.0.253.
func ControllerAddr(r int) netip.AddrPort {
	return netip.AddrPortFrom(controllerIP(r), ControllerPort)
}

// controllerIP is replica r's address on the bridge.
func controllerIP(r int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, 0, byte(254 - r)})
}

// ControllerLog is replica r's log file.
func (l *Lab) ControllerLog(r int) string {
	return filepath.Join(l.state, "controller-"+strconv.Itoa(r)+".log")
}

// ControllerID is replica r's leader election identity.
func ControllerID(r int) string { return "controller-" + strconv.Itoa(r) }

// controllerKubeconfig is the controller's kubeconfig: a TokenRequest
// token of ServiceAccount agentmesh-controller (as in a pod), so RBAC is
// what applies to it.
func (l *Lab) controllerKubeconfig() string { return filepath.Join(l.state, "controller.kubeconfig") }

// writeControllerKubeconfig writes controllerKubeconfig.
func (l *Lab) writeControllerKubeconfig(ctx context.Context) error {
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(nodeTokenTTL / time.Second))}}
	tok, err := l.kube.client.CoreV1().ServiceAccounts(MeshNamespace).CreateToken(ctx, ControllerServiceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("controller token: %w", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: l.KubeAPIServer(), CertificateAuthority: l.KubeCAFile()}
	cfg.AuthInfos["controller"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "controller"}
	cfg.CurrentContext = "lab"
	if err := clientcmd.WriteToFile(*cfg, l.controllerKubeconfig()); err != nil {
		return fmt.Errorf("write controller kubeconfig: %w", err)
	}
	return nil
}

// controllerArgs is replica r's command line.
func (l *Lab) controllerArgs(r int) []string {
	ip := controllerIP(r)
	args := []string{l.Bin("controller"), "--kubeconfig", l.controllerKubeconfig(),
		"--namespace", MeshNamespace, "--listen", ControllerAddr(r).String(),
		"--serving-names", ControllerServerName + "," + ip.String(),
		"--trust-domain", l.opts.TrustDomain, "--cert-lifetime", max(l.opts.CertLifetime, time.Minute).String(),
		"--node-service-accounts", MeshNamespace + "/" + NodeServiceAccount, "--token-audience", TokenAudience,
		"--metrics-addr", netip.AddrPortFrom(ip, ControllerAdminPort).String(),
		"--id", ControllerID(r), "--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "1s"}
	return append(args, l.opts.ControllerArgs...)
}

// StartController starts controller replica r (0 or 1) in the wire netns,
// under supervision, and waits until its /readyz answers 200.
func (l *Lab) StartController(ctx context.Context, r int) error {
	if l.kube == nil {
		return errNotKube
	}
	if r < 0 || r >= MaxControllers {
		return fmt.Errorf("no controller replica %d", r)
	}
	if r > 0 {
		if err := l.addWireAddr(controllerIP(r)); err != nil {
			return err
		}
	}
	spec := l.controllerSpec(r)
	p, err := l.sup.start(ControllerID(r), spec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	if err := spec.ready(ctx, p); err != nil {
		return fmt.Errorf("controller %d not ready: %w\n--- last lines of %s ---\n%s",
			r, err, l.ControllerLog(r), logTail(l.ControllerLog(r), 20))
	}
	return nil
}

// controllerSpec says how to start replica r and when it serves: once
// its /readyz answers 200.
func (l *Lab) controllerSpec(r int) unitSpec {
	ps := procSpec{name: ControllerID(r), netns: l.wireName(), cgroup: l.kubeCgroup(),
		args: l.controllerArgs(r), logPath: l.ControllerLog(r)}
	return unitSpec{
		start: func() (*Process, error) { return startProcess(ps) },
		ready: func(ctx context.Context, p *Process) error { return l.waitControllerReady(ctx, r, p) },
	}
}

// waitControllerReady polls replica r's /readyz until it answers 200.
func (l *Lab) waitControllerReady(ctx context.Context, r int, p *Process) error {
	url := l.controllerURL(r, "/readyz")
	for {
		code, _, err := httpGetIn(ctx, l.wireName(), url)
		if err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %d %v)", url, ctx.Err(), code, err)
		case <-p.Done():
			return fmt.Errorf("exited early: %v", p.Wait())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// StopController stops replica r (SIGTERM, then SIGKILL); a stopped one
// is a no-op. The lab does not restart it.
func (l *Lab) StopController(r int) error { return l.sup.stop(ControllerID(r)) }

// KillController kills replica r with SIGKILL (no graceful handover). The
// lab asked for it, so it does not restart it; to crash it, kill its PID.
func (l *Lab) KillController(r int) error { return l.sup.kill(ControllerID(r)) }

// stopControllers stops every replica.
func (l *Lab) stopControllers() []error {
	var errs []error
	for r := range MaxControllers {
		errs = append(errs, l.StopController(r))
	}
	return errs
}

// ControllerAdminURL is replica r's HTTP endpoint (/metrics, /status,
// /debug/...), reachable from the node netns.
func ControllerAdminURL(r int) string {
	return "http://" + netip.AddrPortFrom(controllerIP(r), ControllerAdminPort).String()
}

// controllerURL is replica r's admin URL for path.
func (l *Lab) controllerURL(r int, path string) string { return ControllerAdminURL(r) + path }

// ControllerStatus is a controller's /status document.
type ControllerStatus struct {
	ID       string                                      `json:"id"`
	Leader   bool                                        `json:"leader"`
	LeaderID string                                      `json:"leaderID,omitempty"`
	Versions map[string]uint64                           `json:"versions"`
	Nodes    map[string]map[string]ControllerStreamState `json:"nodes"`
}

// ControllerStreamState is one node component's stream in ControllerStatus.
type ControllerStreamState struct {
	ConnectedSince time.Time `json:"connectedSince"`
	SentVersion    uint64    `json:"sentVersion"`
	AckedVersion   uint64    `json:"ackedVersion"`
	NackedVersion  uint64    `json:"nackedVersion,omitempty"`
	LastError      string    `json:"lastError,omitempty"`
}

// ControllerStatusOf fetches replica r's /status.
func (l *Lab) ControllerStatusOf(ctx context.Context, r int) (*ControllerStatus, error) {
	code, body, err := httpGetIn(ctx, l.wireName(), l.controllerURL(r, "/status"))
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("controller status: %d", code)
	}
	var s ControllerStatus
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("decode controller status: %w", err)
	}
	return &s, nil
}

// AllAcked reports whether both components of every node 1..nodes acked
// the node's current version.
func (s *ControllerStatus) AllAcked(nodes int) bool {
	for i := 1; i <= nodes; i++ {
		n, v := s.Nodes[nodeName(i)], s.Versions[nodeName(i)]
		for _, c := range []string{agentdKind, ztunnelKind} {
			if st, ok := n[c]; !ok || st.AckedVersion == 0 || (v != 0 && st.AckedVersion != v) {
				return false
			}
		}
	}
	return true
}
