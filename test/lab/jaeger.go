package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Jaeger all-in-one (built from source by `make jaeger` into BinDir) runs
// in the wire netns of a Kubernetes-mode lab: the node tunnels export
// their spans to it (ZtunnelArgs --otlp-endpoint=JaegerOTLP()), and tests
// read traces back from its query API.

// jaegerIP is Jaeger's address on the wire bridge.
var jaegerIP = netip.AddrFrom4([4]byte{198, 18, 0, 250})

// JaegerOTLP is where Jaeger receives OTLP/gRPC.
func JaegerOTLP() netip.AddrPort { return netip.AddrPortFrom(jaegerIP, 4317) }

// jaegerQuery is Jaeger's query API (HTTP).
func jaegerQuery() string { return "http://" + netip.AddrPortFrom(jaegerIP, 16686).String() }

// JaegerLog is Jaeger's log file.
func (l *Lab) JaegerLog() string { return filepath.Join(l.state, "jaeger.log") }

// StartJaeger starts Jaeger (in-memory storage) and waits until its query
// API answers. It is stopped with the lab.
func (l *Lab) StartJaeger(ctx context.Context) error {
	if l.kube == nil {
		return errNotKube
	}
	bin, err := jaegerBin(ctx)
	if err != nil {
		return err
	}
	if err := l.addWireAddr(jaegerIP); err != nil {
		return err
	}
	p, err := startProcess(procSpec{name: "jaeger", netns: l.wireName(), cgroup: l.kubeCgroup(),
		args: []string{bin}, env: append(os.Environ(), "JAEGER_LISTEN_HOST="+jaegerIP.String()), logPath: l.JaegerLog()})
	if err != nil {
		return fmt.Errorf("start jaeger: %w", err)
	}
	l.kube.mu.Lock()
	l.kube.procs = append(l.kube.procs, p)
	l.kube.mu.Unlock()
	if err := l.pids.record(p.PID, "jaeger"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		code, _, err := httpGetIn(ctx, l.wireName(), jaegerQuery()+"/api/services")
		if err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("jaeger not answering: %w (last: %d %v)\n--- last lines of %s ---\n%s",
				ctx.Err(), code, err, l.JaegerLog(), logTail(l.JaegerLog(), 20))
		case <-p.Done():
			return fmt.Errorf("jaeger exited\n--- last lines of %s ---\n%s", l.JaegerLog(), logTail(l.JaegerLog(), 20))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// jaegerBin is $AGENTMESH_JAEGER_BIN or <module>/bin/jaeger (`make
// jaeger`).
func jaegerBin(ctx context.Context) (string, error) {
	bin := os.Getenv("AGENTMESH_JAEGER_BIN")
	if bin == "" {
		root, err := ModuleRoot(ctx)
		if err != nil {
			return "", err
		}
		bin = filepath.Join(root, "bin", "jaeger")
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("jaeger (make jaeger builds it, or set AGENTMESH_JAEGER_BIN): %w", err)
	}
	return bin, nil
}

// JaegerSpan is a span as Jaeger's query API returns it.
type JaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
	ProcessID string `json:"processID"`
	// StartTime (Unix) and Duration are in microseconds.
	StartTime int64 `json:"startTime"`
	Duration  int64 `json:"duration"`
}

// Tag is the span's tag key as text ("" when absent).
func (s JaegerSpan) Tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

// Parent is the span's CHILD_OF parent ("" for a root).
func (s JaegerSpan) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// JaegerTrace fetches trace id (32 hex digits) from Jaeger: its spans, or
// an error when Jaeger does not have it (yet).
func (l *Lab) JaegerTrace(ctx context.Context, id string) ([]JaegerSpan, error) {
	code, body, err := httpGetIn(ctx, l.wireName(), jaegerQuery()+"/api/traces/"+id)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("jaeger: trace %s: status %d: %s", id, code, body)
	}
	var out struct {
		Data []struct {
			Spans []JaegerSpan `json:"spans"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("jaeger: trace %s: %w", id, err)
	}
	if len(out.Data) == 0 {
		return nil, errors.New("jaeger: no such trace")
	}
	return out.Data[0].Spans, nil
}
