package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"
)

// newMeshLab builds a lab running agentd and ztunnel.
func newMeshLab(t *testing.T, nodes int) *Lab {
	t.Helper()
	requireLab(t)
	bin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := New(ctx, Options{Nodes: nodes, BinDir: bin, StartMesh: true,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
		checkGone(t, l.ID())
	})
	return l
}

// sendResult mirrors meshlab's `app send` output.
type sendResult struct {
	EchoOK bool   `json:"echo_ok"`
	Error  string `json:"error"`
}

// send runs `meshlab app send` in p, retrying while the server starts.
func send(t *testing.T, l *Lab, p *Pod, to netip.AddrPort, payload string) {
	t.Helper()
	var last error
	for range 30 {
		out, err := p.Run(context.Background(), l.Bin("meshlab"), "app", "send", "--to", to.String(), "--payload", payload, "--timeout", "3s")
		var res sendResult
		if err == nil && json.Unmarshal(out, &res) == nil && res.EchoOK {
			return
		}
		last = fmt.Errorf("%v: %s", err, out)
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s -> %s: %v\nztunnel n%d:\n%s", p.Name, to, last, p.Node, logTail(l.DaemonLog(p.Node, ztunnelKind), 15))
}

func TestMeshEncryptsBetweenNodes(t *testing.T) {
	l := newMeshLab(t, 2)
	ctx := context.Background()
	add := func(name string, node int, enrolled bool) *Pod {
		p, err := l.AddPod(ctx, PodSpec{Name: name, Namespace: "agents", ServiceAccount: name, Node: node, Enrolled: enrolled})
		if err != nil {
			t.Fatalf("add pod %s: %v", name, err)
		}
		return p
	}
	client, server, legacy := add("client", 1, true), add("server", 2, true), add("legacy", 2, false)
	for _, p := range []*Pod{server, legacy} {
		if _, err := p.Start(ctx, "echo", l.Bin("meshlab"), "app", "echo", "--listen", ":8080"); err != nil {
			t.Fatal(err)
		}
	}
	capt, err := l.Capture(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer capt.Stop()
	send(t, l, client, netip.AddrPortFrom(server.IPv4(), 8080), "mesh-secret-v4")
	send(t, l, client, netip.AddrPortFrom(server.IPv6(), 8080), "mesh-secret-v6")
	send(t, l, client, netip.AddrPortFrom(legacy.IPv4(), 8080), "legacy-plain")
	segs, err := capt.Stop()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"mesh-secret-v4", "mesh-secret-v6"} {
		if f := FlowsContaining(segs, []byte(m)); len(f) > 0 {
			t.Errorf("%s crossed the wire in clear: %v", m, f)
		}
	}
	if f := FlowsContaining(segs, []byte("legacy-plain")); len(f) == 0 {
		t.Errorf("plaintext to the pod outside the mesh not captured (capture broken?)")
	}
	if DstPorts(segs)[15008] == 0 {
		t.Errorf("no HBONE (15008) traffic on the wire; ports: %v", DstPorts(segs))
	}
	checkAccessLog(t, l, 1, "outbound", server.IPv4(), "spiffe://cluster.local/ns/agents/sa/server")
	checkAccessLog(t, l, 2, "inbound", server.IPv4(), "spiffe://cluster.local/ns/agents/sa/client")

	if err := l.RestartZtunnel(ctx, 1); err != nil {
		t.Fatalf("restart ztunnel: %v", err)
	}
	send(t, l, client, netip.AddrPortFrom(server.IPv4(), 8080), "after-restart")
	if err := l.RemovePod(ctx, "client"); err != nil {
		t.Fatalf("remove pod: %v", err)
	}
	if uids, err := l.ZtunnelPods(ctx, 1); err != nil || uids[client.UID] {
		t.Errorf("ztunnel still lists removed pod (err %v)", err)
	}
}

// checkAccessLog waits for an mTLS access line on node to dst:8080 with
// the given peer identity.
func checkAccessLog(t *testing.T, l *Lab, node int, direction string, dst netip.Addr, peer string) {
	t.Helper()
	var logs []AccessLog
	for range 50 {
		var err error
		logs, err = l.AccessLogs(node)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range logs {
			seen := a.DstIdentity
			if direction == "inbound" {
				seen = a.SrcIdentity
			}
			if a.Direction == direction && a.Dst().Addr().Unmap() == dst && a.MTLS && seen == peer {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("node %d: no %s mTLS access log to %s with peer %s in %+v", node, direction, dst, peer, logs)
}
