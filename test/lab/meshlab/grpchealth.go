package meshlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// GRPCAgentHeader is the response header (gRPC metadata) in which the
// health service of `app http --grpc-health` names its agent, so a
// caller can tell which replica answered.
const GRPCAgentHeader = "agent"

// startGRPCHealth serves the gRPC health service, answering SERVING, on
// addr (nothing when addr is ""), every answer naming agent in its
// GRPCAgentHeader; the server's end goes to done. stop ends it.
func startGRPCHealth(agent, addr string, stdout io.Writer, done chan<- error) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	fmt.Fprintf(stdout, "grpc health listening on %s\n", ln.Addr())
	md := metadata.Pairs(GRPCAgentHeader, agent)
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			_ = grpc.SetHeader(ctx, md)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			_ = ss.SetHeader(md)
			return h(srv, ss)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer()) // "" is SERVING
	go func() {
		err := srv.Serve(ln)
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			err = fmt.Errorf("serve grpc health: %w", err)
		} else {
			err = nil
		}
		done <- err
	}()
	return srv.Stop, nil
}
