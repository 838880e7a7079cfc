package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/test/lab"
)

// kubectl runs the kubectl `make kube` built against a lab from the host,
// with the kubeconfig the lab writes for the host (as `meshlab up`
// prints it), the way a user would.
type kubectl struct {
	t          *testing.T
	bin        string
	kubeconfig string
	home       string // $HOME, so kubectl's cache stays in the test's temp dir
}

// newKubectlLab starts a Kubernetes-mode lab with the mesh on nodes
// nodes and returns it with a kubectl for it. Once the lab is closed, its
// way in from the host is closed too and nothing of it is left.
func newKubectlLab(t *testing.T, nodes int) (*lab.Lab, *kubectl) {
	t.Helper()
	var l *lab.Lab
	t.Cleanup(func() { // registered first: runs after newLab's Close
		if l != nil {
			checkHostAccessGone(t, l)
		}
	})
	l = newLab(t, nodes)
	k := &kubectl{t: t, bin: filepath.Join(l.KubeBinDir(), "kubectl"), kubeconfig: l.HostKubeconfig(), home: t.TempDir()}
	if _, err := os.Stat(k.bin); err != nil {
		t.Fatalf("no kubectl (make kube): %v", err)
	}
	return l, k
}

// checkHostAccessGone: after Close the kubeconfig's server refuses
// connections and nothing of the lab is left.
func checkHostAccessGone(t *testing.T, l *lab.Lab) {
	t.Helper()
	if left, err := lab.Leftovers(l.ID()); len(left) > 0 || err != nil {
		t.Errorf("left after close: %v (%v)", left, err)
	}
	if _, err := os.Stat(l.HostKubeconfig()); err == nil {
		t.Errorf("%s still there after close", l.HostKubeconfig())
	}
	if c, err := net.DialTimeout("tcp", l.HostAPIServer(), time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after close", l.HostAPIServer())
	}
}

// run runs kubectl with args (and stdin, if not empty) and returns its
// stdout; an error carries stderr.
func (k *kubectl) run(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.Env = []string{"KUBECONFIG=" + k.kubeconfig, "HOME=" + k.home, "PATH=" + os.Getenv("PATH")}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// must is run that fails the test on error.
func (k *kubectl) must(ctx context.Context, args ...string) string {
	k.t.Helper()
	out, err := k.run(ctx, "", args...)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}

// apply applies a manifest from stdin.
func (k *kubectl) apply(ctx context.Context, manifest string) {
	k.t.Helper()
	if _, err := k.run(ctx, manifest, "apply", "-f", "-"); err != nil {
		k.t.Fatal(err)
	}
}

// pods lists the pods in ns matching selector, as kubectl shows them.
func (k *kubectl) pods(ctx context.Context, ns, selector string) []corev1.Pod {
	k.t.Helper()
	var list corev1.PodList
	if err := json.Unmarshal([]byte(k.must(ctx, "-n", ns, "get", "pods", "-l", selector, "-o", "json")), &list); err != nil {
		k.t.Fatalf("decode pods: %v", err)
	}
	return list.Items
}

// endpoints is the ready endpoint addresses of Service ns/name's
// EndpointSlices, by address family.
func endpoints(ctx context.Context, l *lab.Lab, ns, name string) (map[discoveryv1.AddressType][]string, error) {
	list, err := l.Client().DiscoveryV1().EndpointSlices(ns).List(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		return nil, err
	}
	out := map[discoveryv1.AddressType][]string{}
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				out[s.AddressType] = append(out[s.AddressType], e.Addresses...)
			}
		}
	}
	return out, nil
}
