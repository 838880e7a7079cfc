package hbone

import (
	"errors"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// serveStream answers one request on a connection.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, c *connState) {
	if !c.enter() {
		return
	}
	defer c.active.Done()
	start := time.Now()
	req := &Request{PeerID: c.peer, PeerAddr: c.remote, LocalAddr: c.local, Header: r.Header}
	var res Result
	defer func() {
		res.Duration = time.Since(start)
		if s.onDone != nil {
			s.onDone(req, res)
		}
	}()
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		res.Status, res.Err = http.StatusMethodNotAllowed, errors.New("method "+r.Method+" not allowed")
		http.Error(w, "method not allowed", res.Status)
		return
	}
	auth, err := ParseAuthority(r.Host)
	if err != nil {
		res.Status, res.Err = http.StatusBadRequest, err
		http.Error(w, "bad authority", res.Status)
		return
	}
	req.Authority = auth
	up, err := c.h.ServeHBONE(r.Context(), req)
	if err != nil {
		res.Status, res.Err = statusFor(err), err
		http.Error(w, http.StatusText(res.Status), res.Status)
		return
	}
	defer up.Close()
	res.Status = http.StatusOK
	w.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(w).Flush(); err != nil {
		res.Err = err
		return
	}
	res.BytesIn, res.BytesOut, res.Err = splice(r.Context(), w, r.Body, up)
}

func statusFor(err error) int {
	if errors.Is(err, ErrDenied) {
		return http.StatusUnauthorized
	}
	return http.StatusServiceUnavailable
}

// connState is what the streams of one connection share.
type connState struct {
	peer          spiffe.ID
	remote, local netip.AddrPort
	h             Handler

	mu      sync.Mutex
	done    bool           // no new streams; guarded by mu
	streams int            // streams ever entered; guarded by mu
	active  sync.WaitGroup // stream handlers; Add only under mu while !done
}

// enter registers a stream handler; false once the connection is done.
func (c *connState) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return false
	}
	c.streams++
	c.active.Add(1)
	return true
}

// closeAndWait stops new streams, waits for the running ones and returns
// how many the connection carried.
func (c *connState) closeAndWait() int {
	c.mu.Lock()
	c.done = true
	n := c.streams
	c.mu.Unlock()
	c.active.Wait()
	return n
}
