package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// meshServer is a Server with a CA that signs nothing.
type meshServer struct{ *Server }

func (meshServer) SignCertificate(context.Context, *configapi.SignRequest) (*configapi.SignResponse, error) {
	return nil, errors.New("no CA here")
}

// serve runs s over gRPC on loopback and returns its address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	configapi.Register(g, meshServer{s})
	go g.Serve(lis)
	t.Cleanup(func() { g.Stop(); s.Wait() })
	return lis.Addr().String()
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func open(t *testing.T, ctx context.Context, cc *grpc.ClientConn, node string) configapi.ConfigClient {
	t.Helper()
	st, err := configapi.NewClient(cc).StreamConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&configapi.ConfigRequest{Node: node, Component: configapi.ComponentZtunnel}); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestSlowNodeGetsNewerViewNotQueue: a node that stops reading holds up
// nobody, and nothing queues up for it. The slow node's connection has
// fixed 64 KiB flow-control windows, so its stream stalls inside the full
// view; meanwhile 300 changes go to a node that keeps up. When the slow
// one reads again it gets the rest of that view and then at most a couple
// of versions that end at the latest view (the merge of the changes it
// missed, or a newer full view), not one per change.
func TestSlowNodeGetsNewerViewNotQueue(t *testing.T) {
	h := NewHub(All)
	srv := NewServer(Options{Hub: h, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(h.Close)
	addr := serve(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	view := bigSnap(5000, 2, 100, 1) // a full view of about 1 MB: far more than the windows
	h.Update(view)
	slow := open(t, ctx, dial(t, addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)), "n0")
	fast := open(t, ctx, dial(t, addr), "n1")
	const changes = 300
	latest := ""
	for k := 1; k <= changes; k++ {
		latest = fmt.Sprintf("change-%d", k)
		next := *view // the hub keeps pointers into the snapshot's slices: a new one per change
		next.Services = slices.Clone(view.Services)
		next.Services[0].Ports = []meshconfig.ServicePort{{Name: latest, Port: 80}}
		h.Update(&next)
		// The fast node follows every change before the next.
		waitFor(t, fast, latest)
	}
	// The slow node: everything it gets, until it has the latest.
	versions, sawLatest := 0, false
	for {
		r, err := slow.Recv()
		if err != nil {
			t.Fatal(err)
		}
		sawLatest = sawLatest || hasPort(r, latest) // a full view has its services in a chunk before the last
		if r.More {
			continue
		}
		versions++
		if sawLatest {
			break
		}
		if versions > 3 {
			t.Fatalf("the slow node got %d versions and still not the latest: a queue", versions)
		}
	}
	t.Logf("the slow node caught up in %d versions after %d changes", versions, changes)
}

// waitFor reads st until a version names port in service 0 ("s000").
func waitFor(t *testing.T, st configapi.ConfigClient, port string) {
	t.Helper()
	deadline := time.AfterFunc(30*time.Second, func() { t.Errorf("no version with %s within 30s", port) })
	defer deadline.Stop()
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", port, err)
		}
		if hasPort(r, port) {
			return
		}
	}
}

func hasPort(r *configapi.ConfigResponse, port string) bool {
	for _, s := range r.Services {
		if s.Name == "s000" && len(s.Ports) > 0 && s.Ports[0].Name == port {
			return true
		}
	}
	return false
}
