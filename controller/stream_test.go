package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// dial opens a raw gRPC connection to the harness's controller over TLS,
// verifying it against the published root.
func (h *harness) dial() *grpc.ClientConn {
	h.t.Helper()
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(h.caFile)
	if !pool.AppendCertsFromPEM(pem) {
		h.t.Fatal("no root")
	}
	cc, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { cc.Close() })
	return cc
}

// subscribe opens a stream as tok for node/component.
func (h *harness) subscribe(cc *grpc.ClientConn, tok, node, component string) configapi.ConfigClient {
	h.t.Helper()
	ctx, cancel := context.WithCancel(configapi.WithToken(context.Background(), tok))
	h.t.Cleanup(cancel)
	st, err := configapi.NewClient(cc).StreamConfig(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := st.Send(&configapi.ConfigRequest{Node: node, Component: component}); err != nil {
		h.t.Fatal(err)
	}
	return st
}

// recv reads one version within 10s: its chunks (More) assembled into one
// response, a later chunk's workload replacing an earlier one's.
func recv(t *testing.T, st configapi.ConfigClient) *configapi.ConfigResponse {
	t.Helper()
	out := recvChunk(t, st)
	for more := out.More; more; {
		r := recvChunk(t, st)
		for _, w := range r.Workloads {
			out.Workloads = slices.DeleteFunc(out.Workloads, func(x meshconfig.Workload) bool { return x.UID == w.UID })
			out.Workloads = append(out.Workloads, w)
		}
		slices.SortFunc(out.Workloads, func(a, b meshconfig.Workload) int { return strings.Compare(a.UID, b.UID) })
		out.Services = append(out.Services, r.Services...)
		out.Policies = append(out.Policies, r.Policies...)
		out.Version, more = r.Version, r.More
	}
	out.More = false
	return out
}

// recvChunk reads one response within 10s.
func recvChunk(t *testing.T, st configapi.ConfigClient) *configapi.ConfigResponse {
	t.Helper()
	type res struct {
		r   *configapi.ConfigResponse
		err error
	}
	ch := make(chan res, 1)
	go func() { r, err := st.Recv(); ch <- res{r, err} }()
	select {
	case x := <-ch:
		if x.err != nil {
			t.Fatalf("recv: %v", x.err)
		}
		return x.r
	case <-time.After(10 * time.Second):
		t.Fatal("no config response within 10s")
		return nil
	}
}

func ack(t *testing.T, st configapi.ConfigClient, v uint64, errMsg string) {
	t.Helper()
	if err := st.Send(&configapi.ConfigRequest{AckVersion: v, Error: errMsg}); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

func names(ws []meshconfig.Workload) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Name)
	}
	return out
}

func (h *harness) createPod(ns, name, sa, node, ip string) {
	h.t.Helper()
	if _, err := h.client.CoreV1().Pods(ns).Create(context.Background(), podObj(ns, name, sa, node, ip), metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

// status reads /status from the admin endpoint.
func (h *harness) status() statusDoc {
	h.t.Helper()
	resp, err := http.Get("http://" + h.admin + "/status")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var d statusDoc
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		h.t.Fatal(err)
	}
	return d
}

// waitAcked waits until /status shows node/component acked v.
func (h *harness) waitAcked(node, component string, v uint64) statusDoc {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := h.status()
		if d.Nodes[node][component].AckedVersion == v {
			return d
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("status of %s/%s never showed acked version %d: %+v", node, component, v, d.Nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStreamSnapshotDeltasAcks(t *testing.T) {
	h := startController(t, nsObj("apps", true), nodeObj("n1"), podObj("apps", "p1", "web", "n1", "10.0.0.1"))
	tok := "tok-n1"
	h.token(tok, nodeSA, "n1")
	st := h.subscribe(h.dial(), tok, "n1", configapi.ComponentAgentd)

	r := recv(t, st)
	if !r.Full || r.TrustDomain != "td.test" || len(r.TrustBundlePEM) == 0 || !slices.Equal(names(r.Workloads), []string{"p1"}) || !r.Workloads[0].Enrolled {
		t.Fatalf("first response = %+v, want full snapshot with enrolled p1 and the bundle", r)
	}
	ack(t, st, r.Version, "")
	d := h.waitAcked("n1", configapi.ComponentAgentd, r.Version)
	if !d.Leader {
		t.Error("/status: the only replica (no election) is not leader")
	}

	// A pod on another node appears: a delta, newer version.
	h.createPod("apps", "p2", "db", "n2", "10.0.0.2")
	r2 := recv(t, st)
	if r2.Full || r2.Version <= r.Version || !slices.Equal(names(r2.Workloads), []string{"p2"}) {
		t.Fatalf("delta = %+v, want upsert of p2 only, newer than %d", r2, r.Version)
	}
	// Nack it: the controller keeps serving later versions.
	ack(t, st, r2.Version, "cannot apply")
	if err := h.client.CoreV1().Pods("apps").Delete(context.Background(), "p1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r3 := recv(t, st)
	if r3.Version <= r2.Version || !slices.Equal(r3.RemovedWorkloads, []string{"uid-p1"}) {
		t.Fatalf("after nack, delta = %+v, want p1 removed", r3)
	}
	ack(t, st, r3.Version, "")
	d = h.waitAcked("n1", configapi.ComponentAgentd, r3.Version)
	if cs := d.Nodes["n1"][configapi.ComponentAgentd]; cs.NackedVersion != r2.Version || cs.LastError != "cannot apply" {
		t.Errorf("status after nack = %+v, want nacked %d", cs, r2.Version)
	}
	if d.Versions["n1"] != r3.Version {
		t.Errorf("status versions[n1] = %d, want %d", d.Versions["n1"], r3.Version)
	}
	for _, m := range []struct{ name, label, want string }{
		{"agentmesh_controller_connected_nodes", "", "1"},
		{"agentmesh_controller_config_pushes_total", `kind="full"`, "1"},
		{"agentmesh_controller_config_pushes_total", `kind="delta"`, "2"},
		{"agentmesh_controller_config_nacks_total", "agentd", "1"},
		{"agentmesh_controller_config_ack_seconds_count", "agentd", "3"},
		{"agentmesh_controller_config_acked_version", `node="n1"`, strconv.FormatFloat(float64(r3.Version), 'g', -1, 64)},
	} {
		if got := h.metric(m.name, m.label); got != m.want {
			t.Errorf("%s{%s} = %q, want %q", m.name, m.label, got, m.want)
		}
	}
}

func TestStreamRefusals(t *testing.T) {
	h := startController(t, nsObj("apps", true), nodeObj("n1"))
	h.token("good", nodeSA, "n1")
	h.token("other-sa", "someone-else", "n1")
	h.reviewer.add("unbound", testNS, nodeSA, "")
	h.token("no-node", nodeSA, "n9")
	cc := h.dial()
	tests := []struct {
		name, tok, node, component string
		code                       codes.Code
		msg                        string
	}{
		{"no token", "", "n1", "agentd", codes.Unauthenticated, "missing bearer token"},
		{"unknown token", "bogus", "n1", "agentd", codes.Unauthenticated, "not authenticated"},
		{"node mismatch", "good", "n2", "agentd", codes.PermissionDenied, `runs on node "n1" and may not read node "n2"`},
		{"not a node agent", "other-sa", "n1", "agentd", codes.PermissionDenied, "is not a node agent"},
		{"token not bound to a node", "unbound", "n1", "agentd", codes.PermissionDenied, "not bound to a pod on a node"},
		{"unknown component", "good", "n1", "kubelet", codes.InvalidArgument, "component"},
		{"node without a Node object", "no-node", "n9", "agentd", codes.PermissionDenied, `node "n9" has no Node object`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.tok != "" {
				ctx = configapi.WithToken(ctx, tt.tok)
			}
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			st, err := configapi.NewClient(cc).StreamConfig(ctx)
			if err == nil {
				st.Send(&configapi.ConfigRequest{Node: tt.node, Component: tt.component})
				_, err = st.Recv()
			}
			if s := status.Convert(err); s.Code() != tt.code || !strings.Contains(s.Message(), tt.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tt.code, tt.msg)
			}
		})
	}
}

// TestGarbageDoesNotHurtStreams: junk bytes and a half-open TLS connection
// on the port leave an open stream working.
func TestGarbageDoesNotHurtStreams(t *testing.T) {
	h := startController(t, nsObj("apps", true), nodeObj("n1"))
	h.token("tok", nodeSA, "n1")
	st := h.subscribe(h.dial(), "tok", "n1", configapi.ComponentZtunnel)
	r := recv(t, st)
	ack(t, st, r.Version, "")
	for _, junk := range [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), {0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2}, make([]byte, 4096)} {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		defer c.Close()
	}
	h.createPod("apps", "p1", "web", "n1", "10.0.0.1")
	if r := recv(t, st); !slices.Equal(names(r.Workloads), []string{"p1"}) {
		t.Fatalf("after garbage, delta = %+v, want p1", r)
	}
}

// metric returns the value of the sample of name whose labels include
// label, from /metrics ("" if absent).
func (h *harness) metric(name, label string) string {
	h.t.Helper()
	resp, err := http.Get("http://" + h.admin + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name) && strings.Contains(line, label) {
			f := strings.Fields(line)
			return f[len(f)-1]
		}
	}
	return ""
}

// TestManyNodes: one pod change reaches every node's stream as one delta.
func TestManyNodes(t *testing.T) {
	const n = 50
	objs := []runtime.Object{nsObj("apps", true)}
	for i := range n {
		objs = append(objs, nodeObj("node-"+strconv.Itoa(i)))
	}
	h := startController(t, objs...)
	cc := h.dial()
	streams := make([]configapi.ConfigClient, n)
	for i := range streams {
		node := "node-" + strconv.Itoa(i)
		h.token("tok-"+node, nodeSA, node)
		streams[i] = h.subscribe(cc, "tok-"+node, node, configapi.ComponentAgentd)
		ack(t, streams[i], recv(t, streams[i]).Version, "")
	}
	h.createPod("apps", "p1", "web", "node-7", "10.0.0.1")
	for i, st := range streams {
		if r := recv(t, st); r.Full || !slices.Equal(names(r.Workloads), []string{"p1"}) {
			t.Fatalf("node-%d got %+v, want a delta with p1", i, r)
		}
	}
	if got := h.metric("agentmesh_controller_connected_nodes", ""); got != strconv.Itoa(n) {
		t.Errorf("connected nodes = %s, want %d", got, n)
	}
}
