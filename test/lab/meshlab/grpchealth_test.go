package meshlab

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// lockedBuffer is a bytes.Buffer safe for one writer and one reader.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestAppHTTPPortsAndGRPCHealth: `app http` serves every --listen address
// and, with --grpc-health, the gRPC health service answering SERVING; it
// stops with its context.
func TestAppHTTPPortsAndGRPCHealth(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"app", "http", "--name", "probed", "--listen", "127.0.0.1:0,127.0.0.1:0",
			"--grpc-health", "127.0.0.1:0"}, out)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("app http: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("app http did not stop")
		}
	}()
	re := regexp.MustCompile(`(agent probed|grpc health) listening on (\S+)`)
	var found [][]string
	for deadline := time.Now().Add(5 * time.Second); len(found) < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("app http did not report three listeners: %q", out.String())
		}
		found = re.FindAllStringSubmatch(out.String(), -1)
	}
	for _, f := range found {
		if f[1] == "grpc health" {
			checkServing(t, f[2])
			checkGRPCCall(t, f[2])
			continue
		}
		resp, err := http.Get("http://" + f[2] + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", f[2], resp.StatusCode)
		}
	}
}

func checkServing(t *testing.T, addr string) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("grpc health on %s: %v %v, want SERVING", addr, resp, err)
	}
}

// checkGRPCCall: `app grpc-call` makes its calls over one connection and
// counts them by the agent each answer names.
func checkGRPCCall(t *testing.T, addr string) {
	t.Helper()
	for _, method := range []string{"Check", "List"} {
		var out bytes.Buffer
		if err := Run(context.Background(), []string{"app", "grpc-call", "--to", addr, "--method", method, "--n", "3", "--metadata", "x-variant=b"}, &out); err != nil {
			t.Fatal(err)
		}
		var res GRPCCallResult
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("grpc-call: %v: %s", err, out.Bytes())
		}
		if res.Calls != 3 || res.Codes["OK"] != 3 || res.By["probed"] != 3 || res.Error != "" {
			t.Errorf("grpc-call %s: %+v, want 3 OK answers by probed", method, res)
		}
	}
}
