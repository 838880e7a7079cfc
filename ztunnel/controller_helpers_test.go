package ztunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcstatus "google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/auth"
	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/controller/stream"
	"github.com/agentmesh/agentmesh/controller/view"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// Identity of the node component the test controller accepts.
const (
	ctrlNodeSA   = "agentmesh-system/agentmesh-node"
	ctrlAudience = "agentmesh"
)

// testController is the controller's real gRPC side in process: the stream
// hub and server, the TokenReview authenticator and the CA, on loopback
// TLS with a serving certificate from the CA root. Kubernetes is replaced
// by a fake TokenReviewer (tokens are "tok-<node>") and a pod table; the
// view is pushed with update instead of computed from informers.
type testController struct {
	t        *testing.T
	hub      *stream.Hub
	reg      *prometheus.Registry
	addr     string
	caFile   string
	rootPEM  []byte
	local    *pki.LocalCA // the same root, for test-side peers
	stopOnce func()
}

// startTestController serves until the test ends or stop is called.
// pods are the pods the CA signs for, by node.
func startTestController(t *testing.T, pods map[string][]*corev1.Pod) *testController {
	t.Helper()
	certPEM, keyPEM, err := pki.GenerateCA(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	local, err := pki.NewLocalCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := &testController{t: t, hub: stream.NewHub(stream.All), reg: prometheus.NewRegistry(), rootPEM: certPEM, local: local}
	authority, err := ca.New(ca.Options{CertPEM: certPEM, KeyPEM: keyPEM, TrustDomain: td, Lifetime: 2 * time.Hour,
		Pods: podTable(pods), ServiceAccounts: podTable(pods), Logger: discard, Registerer: c.reg})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := authority.NewServing([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c.hub.SetTrustBundle(certPEM)
	authn := auth.New(auth.Options{Reviewer: tokenTable{}, Audiences: []string{ctrlAudience},
		NodeServiceAccounts: []string{ctrlNodeSA}, Logger: discard})
	streams := stream.NewServer(stream.Options{Hub: c.hub, Authorize: auth.AuthorizeNode, Logger: discard, Registerer: c.reg})
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: serving.GetCertificate, NextProtos: []string{"h2"}})),
		grpc.UnaryInterceptor(authn.Unary), grpc.StreamInterceptor(authn.Stream))
	configapi.Register(gs, meshService{Server: streams, ca: authority})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = lis.Addr().String()
	c.caFile = filepath.Join(t.TempDir(), "controller-ca.pem")
	if err := os.WriteFile(c.caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); gs.Serve(lis) }()
	c.stopOnce = sync.OnceFunc(func() {
		c.hub.Close()
		gs.Stop()
		<-done
		streams.Wait()
	})
	t.Cleanup(c.stopOnce)
	return c
}

// stop takes the controller away.
func (c *testController) stop() { c.stopOnce() }

// update pushes a new view.
func (c *testController) update(cfg *meshconfig.Config) {
	// The hub keeps pointers into the snapshot: give it its own copy.
	c.hub.Update(&view.Snapshot{TrustDomain: cfg.TrustDomain, Workloads: slices.Clone(cfg.Workloads), Services: slices.Clone(cfg.Services)})
}

// tokenFile writes the token of node's node component.
func (c *testController) tokenFile(node string) string {
	p := filepath.Join(c.t.TempDir(), "token")
	if err := os.WriteFile(p, []byte("tok-"+node+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// issued is the CA's count of signed certificates.
func (c *testController) issued() float64 {
	mfs, err := c.reg.Gather()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "agentmesh_controller_certificates_issued_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// meshService is agentmesh.v1.Mesh as the controller assembles it.
type meshService struct {
	*stream.Server
	ca *ca.CA
}

func (m meshService) SignCertificate(ctx context.Context, req *configapi.SignRequest) (*configapi.SignResponse, error) {
	c, ok := auth.CallerFrom(ctx)
	if !ok {
		return nil, grpcstatus.Error(codes.Unauthenticated, "no caller")
	}
	chain, err := m.ca.Sign(ctx, c.NodeName, req.CSRPEM)
	var re *ca.RefusedError
	if errors.As(err, &re) {
		return nil, grpcstatus.Error(codes.PermissionDenied, err.Error())
	}
	if err != nil {
		return nil, grpcstatus.Error(codes.Internal, err.Error())
	}
	return &configapi.SignResponse{ChainPEM: chain}, nil
}

// tokenTable reviews "tok-<node>" as the node service account bound to a
// pod on <node>.
type tokenTable struct{}

func (tokenTable) Review(_ context.Context, tok string, auds []string) (authnv1.TokenReviewStatus, error) {
	node, ok := strings.CutPrefix(tok, "tok-")
	if !ok || node == "" {
		return authnv1.TokenReviewStatus{Error: "unknown token"}, nil
	}
	return authnv1.TokenReviewStatus{Authenticated: true, Audiences: auds, User: authnv1.UserInfo{
		Username: "system:serviceaccount:agentmesh-system:agentmesh-node",
		Extra:    map[string]authnv1.ExtraValue{auth.ExtraPodName: {"ztunnel-" + node}, auth.ExtraNodeName: {node}},
	}}, nil
}

// podTable is ca.Pods from a map.
type podTable map[string][]*corev1.Pod

func (p podTable) PodsOnNode(node string) []*corev1.Pod { return p[node] }

// ServiceAccountExists: the table's service accounts are those its pods use.
func (p podTable) ServiceAccountExists(namespace, name string) bool {
	for _, pods := range p {
		for _, pod := range pods {
			if pod.Namespace == namespace && pod.Spec.ServiceAccountName == name {
				return true
			}
		}
	}
	return false
}

// kubePod is a running pod of namespace agents with service account sa.
func kubePod(name, sa string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "agents", Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: sa}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
}
