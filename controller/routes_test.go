package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/controller/debug"
)

// lockedBuffer is a bytes.Buffer for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRunsWithoutGatewayAPI: without the Gateway API CRDs (the fake
// apiserver serves none) the controller says once that routes are off and
// serves, Services without routes; /debug/service shows them.
func TestRunsWithoutGatewayAPI(t *testing.T) {
	client := fake.NewClientset(nsObj(testNS, false), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Port: 80}}}})
	o, err := parseFlags([]string{"--namespace", testNS, "--metrics-addr", "", "--leader-elect=false", "--serving-names", "127.0.0.1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	lis, admin := listen(t), listen(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, o, deps{client: client, dynamic: fakeDynamic(t), reviewer: &fakeReviewer{}, listener: lis, admin: admin, log: log})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	base := "http://" + admin.Addr().String() + debug.ServicePath
	get := func(query string) (int, string) {
		resp, err := http.Get(base + query)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var body string
	waitFor(t, "the view of apps/web", func() bool {
		var code int
		code, body = get("?service=apps/web")
		return code == http.StatusOK
	})
	var s meshconfig.Service
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.Key() != "apps/web" || len(s.Routes) != 0 {
		t.Errorf("apps/web: %v %+v, want it without routes", err, s)
	}
	if code, _ := get("?service=apps/nope"); code != http.StatusNotFound {
		t.Errorf("unknown service: %d, want 404", code)
	}
	if code, _ := get("?service=nope"); code != http.StatusBadRequest {
		t.Errorf("malformed service: %d, want 400", code)
	}
	const msg = "Gateway API resources not served, not watched"
	if n := strings.Count(logs.String(), msg); n != 1 {
		t.Errorf("%d log lines %q, want 1; logs:\n%s", n, msg, logs.String())
	}
	if strings.Contains(logs.String(), "level=ERROR") || strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("errors or warnings without the Gateway API:\n%s", logs.String())
	}
}
