package kube

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
)

// TestRootRotation: with workload certificates of one minute, a rotation
// asked for with the Secret's annotation adds a new root to the trust
// bundle (the ConfigMap, the tunnels' bundle), then signs with it: every
// workload certificate moves to it at its next renewal; then the old root
// leaves the bundle. A stream opened before the rotation runs through
// every step unbroken, new connections work at each step, and a tunnel
// restarted afterwards trusts the controller with the new root alone.
func TestRootRotation(t *testing.T) {
	const propagation = 5 * time.Second
	l := newLab(t, 2, func(o *lab.Options) {
		o.CertLifetime = time.Minute
		o.ControllerArgs = []string{"--ca-propagation", propagation.String()}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "shop", true, "client", "echo")
	cli := startPod(ctx, t, l, echoPod("shop", "client", "client", "n1", nil), true)
	srv := startPod(ctx, t, l, echoPod("shop", "echo", "echo", "n2", nil), true)
	mustSend(ctx, t, l, cli, srv.IPv4(), "before-rotation")
	secrets := l.Client().CoreV1().Secrets(lab.MeshNamespace)
	s, err := secrets.Get(ctx, "agentmesh-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldRoot := s.Data[ca.SecretCertKey]
	stream := streamAsync(ctx, l, cli, srv.IPv4(), 100*time.Second)

	start := time.Now()
	s.Annotations = map[string]string{ca.AnnotationRotate: "e2e"}
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	step := func(name string, done func() (bool, error), within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			ok, err := done()
			if ok {
				t.Logf("%s at t=%.1fs", name, time.Since(start).Seconds())
				return
			}
			select {
			case err := <-stream:
				t.Fatalf("waiting for %s: the stream ended early: %v", name, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s (last error: %v)", name, within, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	phase := func(want string) func() (bool, error) {
		return func() (bool, error) {
			s, err := secrets.Get(ctx, "agentmesh-ca", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return s.Annotations[ca.AnnotationPhase] == want && s.Annotations[ca.AnnotationRotate] == "", nil
		}
	}
	published := func(want int) func() (bool, error) {
		return func() (bool, error) {
			cm, err := l.Client().CoreV1().ConfigMaps(lab.MeshNamespace).Get(ctx, ca.RootConfigMap, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return len(certsOf(t, []byte(cm.Data[ca.RootCertKey]))) == want, nil
		}
	}

	step("trusting: a new root joined the bundle", phase(ca.PhaseTrusting), 10*time.Second)
	step("trusting: the ConfigMap holds both roots", published(2), 10*time.Second)
	if err := l.RefreshMeshRoot(ctx); err != nil {
		t.Fatal(err)
	}
	mustSend(ctx, t, l, cli, srv.IPv4(), "trusting")

	step("retiring: the new root signs", phase(ca.PhaseRetiring), propagation+10*time.Second)
	s, err = secrets.Get(ctx, "agentmesh-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	newRoot := s.Data[ca.SecretCertKey]
	if bytes.Equal(newRoot, oldRoot) || !bytes.Equal(s.Data[ca.SecretPreviousCertKey], oldRoot) {
		t.Fatal("retiring: the signing root did not change, or the old one is not kept as previous")
	}
	newKeyID := hex.EncodeToString(certsOf(t, newRoot)[0].SubjectKeyId)
	mustSend(ctx, t, l, cli, srv.IPv4(), "retiring")
	step("every workload certificate is from the new root", func() (bool, error) {
		for i := 1; i <= l.Nodes(); i++ {
			b, err := l.ZtunnelAdmin(ctx, i, "/certs")
			if err != nil {
				return false, err
			}
			var certs []identity.CertInfo
			if err := json.Unmarshal(b, &certs); err != nil {
				return false, err
			}
			if len(certs) == 0 {
				return false, fmt.Errorf("n%d has no certificates", i)
			}
			for _, c := range certs {
				if c.AuthorityKeyID != newKeyID {
					return false, fmt.Errorf("n%d: %s from %s", i, c.ID, c.AuthorityKeyID)
				}
			}
		}
		return true, nil
	}, 70*time.Second)
	mustSend(ctx, t, l, cli, srv.IPv4(), "renewed")

	step("done: the old root left", phase(ca.PhaseNone), time.Minute+propagation+10*time.Second)
	step("done: the ConfigMap holds the new root alone", published(1), 10*time.Second)
	if err := l.RefreshMeshRoot(ctx); err != nil {
		t.Fatal(err)
	}
	mustSend(ctx, t, l, cli, srv.IPv4(), "retired")

	if err := <-stream; err != nil {
		t.Fatalf("the stream opened before the rotation broke: %v", err)
	}
	t.Logf("the stream opened before the rotation ran unbroken until t=%.1fs", time.Since(start).Seconds())

	// A tunnel started now trusts the controller through the new root
	// alone (its CA file), and peers with its new certificate.
	if err := l.RestartZtunnel(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var sendErr error
	step("restarted tunnel", func() (bool, error) {
		sendErr = send(ctx, l, cli, srv.IPv4(), "after-restart")
		return sendErr == nil, sendErr
	}, 30*time.Second)
}

// certsOf parses the certificates of a PEM bundle.
func certsOf(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}
