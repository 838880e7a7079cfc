package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/agentmesh/agentmesh/api/configapi"
)

// TestNodeLifecycle: only nodes with a Node object get a config stream, and
// deleting a Node ends its streams and drops its per-node state (status,
// hub version, acked metric) while other nodes keep streaming.
func TestNodeLifecycle(t *testing.T) {
	tests := []struct {
		name  string
		nodes []string         // Node objects at start
		after func(h *harness) // once n1's streams have their first snapshot
		code  codes.Code       // how n1's streams end; OK: they stay up
		msg   string
	}{
		{name: "registered node", nodes: []string{"n1"}, code: codes.OK},
		{name: "no Node object", code: codes.PermissionDenied, msg: `node "n1" has no Node object`},
		{name: "another node deleted", nodes: []string{"n1", "n2"}, after: deleteNode("n2"), code: codes.OK},
		{name: "Node deleted", nodes: []string{"n1", "n2"}, after: deleteNode("n1"),
			code: codes.PermissionDenied, msg: `node "n1" was deleted`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := []runtime.Object{nsObj("apps", true)}
			for _, n := range tt.nodes {
				objs = append(objs, nodeObj(n))
			}
			h := startController(t, objs...)
			h.token("tok", nodeSA, "n1")
			cc := h.dial()
			var streams []configapi.ConfigClient
			for _, comp := range []string{configapi.ComponentAgentd, configapi.ComponentZtunnel} {
				st := h.subscribe(cc, "tok", "n1", comp)
				if tt.msg != "" && tt.after == nil {
					wantEnd(t, st, tt.code, tt.msg)
					continue
				}
				r := recv(t, st)
				ack(t, st, r.Version, "")
				h.waitAcked("n1", comp, r.Version)
				streams = append(streams, st)
			}
			if tt.after != nil {
				tt.after(h)
			}
			if tt.code != codes.OK {
				for _, st := range streams {
					wantEnd(t, st, tt.code, tt.msg)
				}
				h.waitNodeGone("n1")
				return
			}
			h.createPod("apps", "p1", "web", "n1", "10.0.0.1")
			for _, st := range streams {
				if r := recv(t, st); len(r.Workloads) != 1 {
					t.Fatalf("stream of n1 after the change: %+v, want a delta with p1", r)
				}
			}
		})
	}
}

func deleteNode(name string) func(*harness) {
	return func(h *harness) {
		if err := h.client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			h.t.Fatal(err)
		}
	}
}

// wantEnd waits for st to end with code and a message containing msg.
func wantEnd(t *testing.T, st configapi.ConfigClient, code codes.Code, msg string) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		if s := status.Convert(err); s.Code() != code || !strings.Contains(s.Message(), msg) {
			t.Fatalf("stream ended with %v, want %v containing %q", err, code, msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("stream did not end within 10s, want %v", code)
	}
}

// waitNodeGone waits until nothing per-node of node is left: no status
// entry, no hub version, no acked-version series.
func (h *harness) waitNodeGone(node string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := h.status()
		_, st := d.Nodes[node]
		_, ver := d.Versions[node]
		series := h.metric("agentmesh_controller_config_acked_version", `node="`+node+`"`)
		if !st && !ver && series == "" {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("state of node %s still there after 10s: status %v, version %v, acked series %q", node, st, ver, series)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
