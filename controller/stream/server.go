package stream

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentmesh/agentmesh/api/configapi"
)

// Options configure a Server.
type Options struct {
	Hub *Hub
	// Authorize checks that the caller of ctx may receive node's view; its
	// error (a gRPC status) ends the stream. Nil allows everyone (tests).
	Authorize func(ctx context.Context, node string) error
	// NodeExists says whether node has a Node object; a stream for a node
	// without one is refused. It is asked once the hub has its first view
	// (the caches have synced). Nil: every node exists (tests).
	NodeExists func(node string) bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Server implements the StreamConfig half of agentmesh.v1.Mesh.
type Server struct {
	hub       *Hub
	authorize func(context.Context, string) error
	exists    func(string) bool
	log       *slog.Logger
	m         *metrics
	wg        sync.WaitGroup // receive goroutines

	mu      sync.Mutex
	streams map[*conn]struct{} // guarded by mu
}

// NewServer returns a Server on o.Hub.
func NewServer(o Options) *Server {
	s := &Server{hub: o.Hub, authorize: o.Authorize, exists: o.NodeExists, log: o.Logger, m: newMetrics(o.Registerer),
		streams: map[*conn]struct{}{}}
	o.Hub.SetEncodeStats(func(kind string, n int) { s.m.encoded.WithLabelValues(kind).Add(float64(n)) })
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// StreamConfig serves one node component: a full snapshot, then deltas,
// until the client goes away or the hub closes.
func (s *Server) StreamConfig(st configapi.ConfigStream) error {
	ctx := st.Context()
	first, err := st.Recv()
	if err != nil {
		return err
	}
	if first.Node == "" || !configapi.ValidComponent(first.Component) {
		return status.Errorf(codes.InvalidArgument, "first request must name the node and a component (agentd or ztunnel), got node %q component %q", first.Node, first.Component)
	}
	if s.authorize != nil {
		if err := s.authorize(ctx, first.Node); err != nil {
			return err
		}
	}
	select {
	case <-s.hub.Ready():
	case <-s.hub.Done():
		return status.Error(codes.Unavailable, "controller shutting down")
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	unsubscribe := s.hub.Subscribe(first.Node)
	defer unsubscribe()
	c := s.open(first.Node, first.Component)
	defer s.close(c)
	// Asked after open: a Node deleted from here on finds c in DropNode.
	if s.exists != nil && !s.exists(first.Node) {
		return status.Errorf(codes.PermissionDenied, "node %q has no Node object: the controller serves only nodes registered in the cluster", first.Node)
	}
	recvErr := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		recvErr <- s.receive(st, c)
	}()
	return s.push(ctx, st, c, recvErr)
}

// push sends every new version of the node's view until the stream ends.
func (s *Server) push(ctx context.Context, st configapi.ConfigStream, c *conn, recvErr <-chan error) error {
	var cur Cursor
	for {
		p, next, wake, closed, err := s.hub.NextPush(c.node, cur)
		if closed {
			return status.Error(codes.Unavailable, "controller shutting down")
		}
		if err != nil {
			s.log.Error("config not sent", "node", c.node, "component", c.component, "err", err)
			return status.Error(codes.Internal, err.Error())
		}
		if p != nil {
			s.sending(c, p) // before sending: the ack may be read before SendMsg returns
			for _, m := range p.Msgs {
				if err := st.SendMsg(m); err != nil {
					return err
				}
			}
		}
		cur = next
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-c.gone:
			return status.Errorf(codes.PermissionDenied, "node %q was deleted from the cluster", c.node)
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-wake:
		}
	}
}

// receive reads acks and nacks until the stream ends.
func (s *Server) receive(st configapi.ConfigStream, c *conn) error {
	for {
		req, err := st.Recv()
		if err != nil {
			return err
		}
		s.ack(c, req)
	}
}

// Wait waits for the receive goroutines of ended streams; call it after
// the gRPC server has stopped.
func (s *Server) Wait() { s.wg.Wait() }
