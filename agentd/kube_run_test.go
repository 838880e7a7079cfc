package agentd

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"

	"github.com/agentmesh/agentmesh/agentd/loader"
	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/auth"
	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/controller/stream"
	"github.com/agentmesh/agentmesh/controller/view"
	"github.com/agentmesh/agentmesh/internal/configsource"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/pki"
)

func TestRunFlagsModes(t *testing.T) {
	kube := []string{"--node", "n", "--controller", "ctl:15012", "--controller-ca", "ca.pem", "--token-file", "tok"}
	o, err := parseRunFlags(append(kube, "--controller-server-name", "ctl.svc"), &strings.Builder{})
	if err != nil || !o.mode.Kubernetes() || o.mode.ControllerCA != "ca.pem" || o.mode.TokenFile != "tok" || o.mode.ControllerServerName != "ctl.svc" {
		t.Fatalf("kubernetes mode: %+v, %v", o, err)
	}
	if o, err := parseRunFlags([]string{"--node", "n", "--config", "c.json"}, &strings.Builder{}); err != nil || o.mode.Kubernetes() {
		t.Fatalf("standalone mode: %+v, %v", o, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(kube, "--config", "c.json"), "--config cannot be used with --controller"},
		{[]string{"--node", "n", "--controller", "ctl:15012", "--token-file", "tok"}, "--controller needs --controller-ca and --token-file"},
		{[]string{"--node", "n", "--controller", "ctl:15012", "--controller-ca", "ca.pem"}, "--controller needs --controller-ca and --token-file"},
		{[]string{"--node", "n", "--config", "c.json", "--token-file", "tok"}, "--token-file only works with --controller"},
		{[]string{"--node", "n", "--config", "c.json", "--controller-server-name", "x"}, "--controller-server-name only works with --controller"},
		{[]string{"--node", "n"}, "--config is required (or --controller"},
	} {
		if _, err := parseRunFlags(tc.args, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseRunFlags(%q) = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// streamServer is the controller's real config stream server (hub, stream
// server, TokenReview authenticator) on loopback TLS, with a fake
// TokenReviewer that accepts "tok-<node>" and views pushed by update.
type streamServer struct {
	hub    *stream.Hub
	addr   string
	caFile string
	stop   func()
}

func startStreamServer(t *testing.T) *streamServer {
	t.Helper()
	certPEM, keyPEM, err := pki.GenerateCA("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New(ca.Options{CertPEM: certPEM, KeyPEM: keyPEM, TrustDomain: "cluster.local", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := authority.NewServing([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	s := &streamServer{hub: stream.NewHub(stream.All), caFile: filepath.Join(t.TempDir(), "ca.pem")}
	if err := os.WriteFile(s.caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s.hub.SetTrustBundle(certPEM)
	quiet := slog.New(slog.DiscardHandler)
	authn := auth.New(auth.Options{Reviewer: nodeTokens{}, NodeServiceAccounts: []string{"agentmesh-system/agentmesh-node"}, Logger: quiet})
	streams := stream.NewServer(stream.Options{Hub: s.hub, Authorize: auth.AuthorizeNode, Logger: quiet})
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13,
		GetCertificate: serving.GetCertificate, NextProtos: []string{"h2"}})),
		grpc.UnaryInterceptor(authn.Unary), grpc.StreamInterceptor(authn.Stream))
	configapi.Register(gs, streamOnly{streams})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); gs.Serve(lis) }()
	s.stop = sync.OnceFunc(func() { s.hub.Close(); gs.Stop(); <-done; streams.Wait() })
	t.Cleanup(s.stop)
	return s
}

func (s *streamServer) update(c *meshconfig.Config) {
	// The hub keeps pointers into the snapshot: give it its own copy.
	s.hub.Update(&view.Snapshot{TrustDomain: c.TrustDomain, Workloads: slices.Clone(c.Workloads)})
}

// streamOnly serves config streams and refuses to sign.
type streamOnly struct{ *stream.Server }

func (streamOnly) SignCertificate(context.Context, *configapi.SignRequest) (*configapi.SignResponse, error) {
	return nil, fmt.Errorf("not in this test")
}

// nodeTokens reviews "tok-<node>" as the node agent bound to a pod on node.
type nodeTokens struct{}

func (nodeTokens) Review(_ context.Context, tok string, auds []string) (authnv1.TokenReviewStatus, error) {
	node, ok := strings.CutPrefix(tok, "tok-")
	if !ok {
		return authnv1.TokenReviewStatus{Error: "unknown token"}, nil
	}
	return authnv1.TokenReviewStatus{Authenticated: true, Audiences: auds, User: authnv1.UserInfo{
		Username: "system:serviceaccount:agentmesh-system:agentmesh-node",
		Extra:    map[string]authnv1.ExtraValue{auth.ExtraNodeName: {node}},
	}}, nil
}

// TestRunKubernetesMode runs agentd against the controller's stream server
// with the real cgroup finder (real cgroups, processes in throwaway netns)
// and a fake datapath: this node's enrolled pods are handed to ztunnel, a
// host-network pod is skipped, an opt-out releases capture before ztunnel,
// and a controller that goes away changes nothing.
func TestRunKubernetesMode(t *testing.T) {
	tree := newCgroupTree(t)
	const uidA, uidB, uidH = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002", "cccccccc-0000-0000-0000-000000000003"
	pidA, _ := tree.start(tree.mkdir("node-1/pod"+uidA), false)
	pidB, _ := tree.start(tree.mkdir("node-1/pod"+uidB), false)
	tree.start(tree.mkdir("node-1/pod"+uidH), true)
	cookieA, cookieB := procCookie(t, pidA), procCookie(t, pidB)
	ctl := startStreamServer(t)

	log, _ := newLog(t)
	ev := &eventLog{}
	dp := newFakeDatapath(ev)
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("tok-"+node), 0o600)
	o := &options{mode: configsource.Flags{Node: node, Controller: ctl.addr, ControllerCA: ctl.caFile, TokenFile: tok}, cgroup: tree.root,
		socket: filepath.Join(dir, "agentd.sock"), retryInterval: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, log, func(loader.Options) (Datapath, error) { return dp, nil }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	other := kubeWorkload("o", true)
	other.Node = "node-2"
	ws := []meshconfig.Workload{kubeWorkload("a", true), kubeWorkload("b", true), kubeWorkload("h", true), other}
	ws[0].UID, ws[1].UID, ws[2].UID = uidA, uidB, uidH
	ctl.update(config(ws...))
	waitForFile(t, o.socket) // served after the first sync
	startZtunnel(t, o.socket, ev, log)
	ev.waitForAnyOrder(t, fmt.Sprintf("dp enroll %d", cookieA), fmt.Sprintf("dp enroll %d", cookieB),
		fmt.Sprintf("zt add %s %d", uidA, cookieA), fmt.Sprintf("zt add %s %d", uidB, cookieB),
		"zt snapshot "+uidA+","+uidB)

	ws[1].Enrolled = false
	ctl.update(config(ws...))
	ev.waitFor(t, fmt.Sprintf("dp unenroll %d", cookieB), "zt del "+uidB)

	ctl.stop()
	time.Sleep(300 * time.Millisecond)
	if got := ev.get(); len(got) != 0 {
		t.Fatalf("the controller going away caused %q", got)
	}
	if got := dp.has(); len(got) != 1 || got[0] != cookieA {
		t.Fatalf("enrolled %v, want only a (%d)", got, cookieA)
	}
}

func procCookie(t *testing.T, pid int) uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := netns.Cookie(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
