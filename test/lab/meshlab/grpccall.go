package meshlab

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// GRPCCallResult is the line of `app grpc-call`: how many calls were
// made, their status codes by name, and the agents that answered them
// (GRPCAgentHeader) with their counts.
type GRPCCallResult struct {
	Calls int            `json:"calls"`
	Codes map[string]int `json:"codes"`
	By    map[string]int `json:"by"`
	Error string         `json:"error,omitempty"`
}

// appGRPCCall is `app grpc-call --to HOST:PORT [--method Check|List] [--n
// N] [--metadata k=v,...]`: N calls of the gRPC health service's method
// over one client connection (grpc-go, one HTTP/2 connection whose
// streams the mesh routes one by one), printing a GRPCCallResult.
func appGRPCCall(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app grpc-call", flag.ContinueOnError)
	to := fs.String("to", "", "the server, host:port (a Service name resolves through DNS)")
	method := fs.String("method", "Check", "the grpc.health.v1.Health method: Check or List")
	n := fs.Int("n", 1, "calls to make")
	md := fs.String("metadata", "", "request metadata, k=v comma separated")
	timeout := fs.Duration("timeout", 5*time.Second, "bound of each call")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *to == "" || *n < 1 || (*method != "Check" && *method != "List") {
		return fmt.Errorf("%w: grpc-call needs --to, --n >= 1 and --method Check or List", ErrUsage)
	}
	var pairs []string
	if *md != "" {
		for kv := range strings.SplitSeq(*md, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("%w: metadata %q: want k=v", ErrUsage, kv)
			}
			pairs = append(pairs, k, v)
		}
	}
	res := GRPCCallResult{Codes: map[string]int{}, By: map[string]int{}}
	// passthrough: the Go resolver (A and AAAA, which ztunnel's DNS proxy
	// answers for Services). grpc-go's dns resolver would also ask TXT
	// _grpc_config.<name>, which only the cluster DNS answers, and the
	// lab runs none behind kube-dns: the channel would wait for that
	// query to time out first.
	cc, err := grpc.NewClient("passthrough:///"+*to, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		res.Error = err.Error()
		return writeJSON(stdout, res)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	for range *n {
		cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, pairs...), *timeout)
		var header metadata.MD
		if *method == "List" {
			_, err = hc.List(cctx, &healthpb.HealthListRequest{}, grpc.Header(&header))
		} else {
			_, err = hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Header(&header))
		}
		cancel()
		res.Calls++
		res.Codes[status.Code(err).String()]++
		if a := header.Get(GRPCAgentHeader); len(a) > 0 {
			res.By[a[0]]++
		}
		if err != nil && res.Error == "" {
			res.Error = err.Error()
		}
	}
	return writeJSON(stdout, res)
}
