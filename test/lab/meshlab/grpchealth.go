package meshlab

import (
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startGRPCHealth serves the gRPC health service, answering SERVING, on
// addr (nothing when addr is ""); the server's end goes to done. stop ends
// it.
func startGRPCHealth(addr string, stdout io.Writer, done chan<- error) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	fmt.Fprintf(stdout, "grpc health listening on %s\n", ln.Addr())
	srv := grpc.NewServer()
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
