package meshlab

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Fault is what an `app http` agent is told to do to the requests it
// serves, for the tests, the demo and the benchmark of traffic
// management: wait Delay before answering; answer a FailRate share with
// FailStatus before reading the body; reset the connection of a
// ResetRate share (TCP RST, nothing answered); never answer a HangRate
// share (until the caller gives up). Set with flags at start, and read or
// changed at runtime with GET/POST /fault (query parameters delay,
// fail, status, reset, hang); GET /stats counts what it did.
type Fault struct {
	Delay      time.Duration `json:"delay"`
	FailRate   float64       `json:"failRate"`
	FailStatus int           `json:"failStatus"`
	ResetRate  float64       `json:"resetRate"`
	HangRate   float64       `json:"hangRate"`
}

// FaultStats is what GET /stats answers: the requests the agent got
// (every attempt counts: a retry is one more) and what it did to them.
type FaultStats struct {
	Requests int64 `json:"requests"`
	Failed   int64 `json:"failed"`
	Reset    int64 `json:"reset"`
	Hung     int64 `json:"hung"`
}

func (f *Fault) validate() error {
	for name, r := range map[string]float64{"fail": f.FailRate, "reset": f.ResetRate, "hang": f.HangRate} {
		if !(r >= 0 && r <= 1) {
			return fmt.Errorf("%s rate %v: want 0..1", name, r)
		}
	}
	if f.FailRate+f.ResetRate+f.HangRate > 1 {
		return fmt.Errorf("fail + reset + hang rates %v: want at most 1", f.FailRate+f.ResetRate+f.HangRate)
	}
	if f.FailStatus < 100 || f.FailStatus > 599 || f.Delay < 0 {
		return fmt.Errorf("status %d, delay %s: want a status 100..599 and a delay >= 0", f.FailStatus, f.Delay)
	}
	return nil
}

// faulty wraps an agent's handler with its faults and their counts.
type faulty struct {
	next  http.Handler
	fault atomic.Pointer[Fault]
	stats struct{ requests, failed, reset, hung atomic.Int64 }
}

func newFaulty(next http.Handler, f Fault) (*faulty, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	h := &faulty{next: next}
	h.fault.Store(&f)
	return h, nil
}

func (h *faulty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/fault":
		h.serveFault(w, r)
		return
	case "/stats":
		respondJSON(w, http.StatusOK, FaultStats{Requests: h.stats.requests.Load(), Failed: h.stats.failed.Load(),
			Reset: h.stats.reset.Load(), Hung: h.stats.hung.Load()})
		return
	}
	h.stats.requests.Add(1)
	f := h.fault.Load()
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch x := rand.Float64(); {
	case x < f.FailRate:
		h.stats.failed.Add(1)
		http.Error(w, fmt.Sprintf("injected failure %d", f.FailStatus), f.FailStatus)
		return
	case x < f.FailRate+f.ResetRate:
		h.stats.reset.Add(1)
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // close with RST
			}
			c.Close()
		}
		return
	case x < f.FailRate+f.ResetRate+f.HangRate:
		h.stats.hung.Add(1)
		<-r.Context().Done()
		return
	}
	h.next.ServeHTTP(w, r)
}

// serveFault answers GET /fault with the faults in force; POST /fault
// sets the ones its query names (the others stay).
func (h *faulty) serveFault(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		respondJSON(w, http.StatusOK, h.fault.Load())
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		return
	}
	f := *h.fault.Load()
	q := r.URL.Query()
	var err error
	for name, p := range map[string]*float64{"fail": &f.FailRate, "reset": &f.ResetRate, "hang": &f.HangRate} {
		if v := q.Get(name); v != "" && err == nil {
			*p, err = strconv.ParseFloat(v, 64)
		}
	}
	if v := q.Get("status"); v != "" && err == nil {
		f.FailStatus, err = strconv.Atoi(v)
	}
	if v := q.Get("delay"); v != "" && err == nil {
		f.Delay, err = time.ParseDuration(v)
	}
	if err == nil {
		err = f.validate()
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.fault.Store(&f)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(&f) //nolint:errcheck // the client may be gone
}
