package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/internal/configclient"
	"github.com/agentmesh/agentmesh/test/lab"
)

// TestControllerRefuses: the CA signs only identities of pods on the
// caller's node, only for node tokens; a stream for another node is
// refused; garbage on :15012 does not disturb the nodes' streams.
func TestControllerRefuses(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "shop", true, "client", "echo")
	cli := startPod(ctx, t, l, echoPod("shop", "client", "client", "n1", nil), true)
	startPod(ctx, t, l, echoPod("shop", "echo", "echo", "n2", nil), true)
	fwd, err := l.ForwardFromNode(1, lab.ControllerAddr(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Close() })
	dir := t.TempDir()
	podTok, err := l.PodToken(ctx, "shop", "client", lab.TokenAudience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{"node": l.NodeTokenFile(1), "bad": writeFile(t, dir, "bad", "not-a-token"),
		"workload": writeFile(t, dir, "workload", podTok)}

	for _, tc := range []struct {
		name, token, ns, sa string
		want                codes.Code
	}{
		{"own pod's identity", "node", "shop", "client", codes.OK},
		{"identity of a pod on another node", "node", "shop", "echo", codes.PermissionDenied},
		{"identity with no pod", "node", "shop", "nobody", codes.PermissionDenied},
		{"bad token", "bad", "shop", "client", codes.Unauthenticated},
		{"workload token", "workload", "shop", "client", codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sign(ctx, t, l, fwd.Addr(), tokens[tc.token], tc.ns, tc.sa)
			if got := status.Code(err); got != tc.want {
				t.Errorf("sign %s/%s with the %s token: %v (code %s), want %s", tc.ns, tc.sa, tc.token, err, got, tc.want)
			}
		})
	}
	t.Run("stream for another node", func(t *testing.T) {
		if err := streamAs(ctx, t, l, 0, fwd.Addr(), l.NodeTokenFile(1), "n2"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("n1's token streaming n2's config: %v, want PermissionDenied", err)
		}
		if err := streamAs(ctx, t, l, 0, fwd.Addr(), l.NodeTokenFile(1), "n1"); err != nil {
			t.Errorf("n1's token streaming n1's config: %v", err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		before := streamsSince(ctx, t, l)
		garbage(t, l)
		fresh := startPod(ctx, t, l, echoPod("shop", "fresh", "echo", "n2", nil), true)
		mustSend(ctx, t, l, cli, fresh.IPv4(), "after-garbage")
		if after := streamsSince(ctx, t, l); !after.Equal(before) {
			t.Errorf("node streams reconnected after garbage: before %v, after %v", before, after)
		}
	})
}

// sign asks the controller (at addr, as node n1) to sign a CSR for ns/sa.
func sign(ctx context.Context, t *testing.T, l *lab.Lab, addr, tokenFile, ns, sa string) ([][]byte, error) {
	t.Helper()
	c, err := configclient.New(configclient.Options{Addr: addr, CAFile: l.ControllerCAFile(), TokenFile: tokenFile,
		ServerName: lab.ControllerServerName, Node: "n1", Component: configapi.ComponentZtunnel})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffeID(ns, sa))
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	chain, err := c.Sign(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err == nil {
		leaf, perr := x509.ParseCertificate(chain[0])
		if perr != nil || len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffeID(ns, sa) {
			t.Errorf("signed leaf for %s/%s: %v %v", ns, sa, leaf, perr)
		}
	}
	return chain, err
}

// streamAs opens a config stream for node with the token in tokenFile at
// addr (a forward to controller replica) and returns the error of the
// first response (nil: a snapshot came). It returns once the controller has dropped the stream again: /status shows
// one stream per node and component, the newest, so a stream still being
// torn down would stand in for the node's own ztunnel in a later snapshot.
func streamAs(ctx context.Context, t *testing.T, l *lab.Lab, replica int, addr, tokenFile, node string) error {
	t.Helper()
	opened := time.Now()
	defer waitStreamDropped(ctx, t, l, replica, node, opened)
	return openStream(ctx, t, l, addr, tokenFile, node)
}

// waitStreamDropped waits until the status of controller replica (the one
// addr reached) no longer shows a ztunnel stream of node opened at or after
// opened.
func waitStreamDropped(ctx context.Context, t *testing.T, l *lab.Lab, replica int, node string, opened time.Time) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := l.ControllerStatusOf(ctx, replica)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := st.Nodes[node][configapi.ComponentZtunnel]
		if !ok || s.ConnectedSince.Before(opened) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller still lists the test's %s stream (since %s) 10s after it ended", node, s.ConnectedSince)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openStream is streamAs without the wait.
func openStream(ctx context.Context, t *testing.T, l *lab.Lab, addr, tokenFile, node string) error {
	t.Helper()
	pemBytes, err := os.ReadFile(l.ControllerCAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: pool, ServerName: lab.ControllerServerName, MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(configapi.WithToken(ctx, string(tok)), 10*time.Second)
	defer cancel()
	s, err := configapi.NewClient(cc).StreamConfig(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&configapi.ConfigRequest{Node: node, Component: configapi.ComponentZtunnel}); err != nil {
		return err
	}
	resp, err := s.Recv()
	if err == nil && !resp.Full {
		t.Errorf("first response for %s is not a full snapshot", node)
	}
	return err
}

// garbage sends random bytes and a half-open connection to the
// controller from node 2.
func garbage(t *testing.T, l *lab.Lab) {
	t.Helper()
	fwd, err := l.ForwardFromNode(2, lab.ControllerAddr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	for range 20 {
		c, err := net.Dial("tcp", fwd.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(junk)
		c.Close()
	}
	idle, err := net.Dial("tcp", fwd.Addr()) // says nothing, stays open during the checks
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idle.Close() })
	idle.Write([]byte{0x16, 0x03, 0x01}) // the start of a TLS record, never finished
}

// streams are the ConnectedSince of every node component's stream.
type streams map[string]time.Time

// Equal reports whether s and o have the same streams.
func (s streams) Equal(o streams) bool {
	if len(s) != len(o) {
		return false
	}
	for k, v := range s {
		if !o[k].Equal(v) {
			return false
		}
	}
	return true
}

// streamsSince reads the controller's status: every component's stream.
func streamsSince(ctx context.Context, t *testing.T, l *lab.Lab) streams {
	t.Helper()
	st, err := l.ControllerStatusOf(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := streams{}
	for node, comps := range st.Nodes {
		for comp, s := range comps {
			out[node+"/"+comp] = s.ConnectedSince
		}
	}
	if len(out) != 2*l.Nodes() {
		t.Fatalf("controller status has %d streams, want %d: %+v", len(out), 2*l.Nodes(), st.Nodes)
	}
	return out
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
