package meshlab

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// TestFaultAgent: the agent's faults, set by flags and changed by POST
// /fault, happen to the share of requests they name (a failure before the
// body, a reset connection, a hang until the caller leaves, a delay),
// and /stats counts every request that arrived.
func TestFaultAgent(t *testing.T) {
	h, err := newFaulty(agentHandler("a"), Fault{FailRate: 1, FailStatus: 503})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	set := func(q url.Values) {
		t.Helper()
		resp, err := srv.Client().Post(srv.URL+"/fault?"+q.Encode(), "", nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST /fault?%s: %v %v", q.Encode(), resp, err)
		}
		resp.Body.Close()
	}
	if code, err := get("/"); code != 503 || err != nil {
		t.Fatalf("fail rate 1: %d %v", code, err)
	}
	set(url.Values{"fail": {"0"}, "reset": {"1"}})
	if _, err := get("/"); !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
		t.Errorf("reset rate 1: %v, want a reset connection", err)
	}
	set(url.Values{"reset": {"0"}, "hang": {"1"}})
	if _, err := get("/"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang rate 1: %v, want the caller's deadline", err)
	}
	set(url.Values{"hang": {"0"}, "delay": {"300ms"}})
	start := time.Now()
	if code, err := get("/"); code != 200 || err != nil || time.Since(start) < 300*time.Millisecond {
		t.Errorf("delay 300ms: %d %v after %v", code, err, time.Since(start))
	}
	set(url.Values{"delay": {"0s"}, "fail": {"0.3"}})
	failed := 0
	for range 1000 {
		if code, _ := get("/"); code == 503 {
			failed++
		}
	}
	if failed < 230 || failed > 370 {
		t.Errorf("fail rate 0.3: %d of 1000 failed", failed)
	}
	resp, err := srv.Client().Get(srv.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st FaultStats
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.Requests != 1004 || st.Reset != 1 || st.Hung != 1 || st.Failed != int64(failed)+1 {
		t.Errorf("stats %+v, want 1004 requests, %d failed, 1 reset, 1 hung", st, failed+1)
	}
	for _, bad := range []url.Values{{"fail": {"2"}}, {"status": {"42"}}, {"delay": {"-1s"}}, {"fail": {"0.6"}, "hang": {"0.6"}}} {
		resp, err := srv.Client().Post(srv.URL+"/fault?"+bad.Encode(), "", nil)
		if err != nil || resp.StatusCode != 400 {
			t.Errorf("POST /fault?%s: %v %v, want 400", bad.Encode(), resp, err)
		}
		resp.Body.Close()
	}
}
