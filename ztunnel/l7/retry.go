package l7

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Retry is when a request whose try got a response is tried again on
// another endpoint (Attempt.Retry; a try whose connection failed before
// anything was sent is tried again within Forwarder.Attempts anyway).
type Retry struct {
	// Codes are response statuses a route asks to retry (Gateway API's
	// retry.codes): such a response is tried again up to Attempts more
	// times, whatever the method, since the route said so.
	Codes    []int
	Attempts int
	// Backoff is the least wait before a retry; it doubles with each
	// retry of the request, up to MaxBackoff (0: 10 times itself), with
	// jitter above it. 0: DefaultBackoff.
	Backoff, MaxBackoff time.Duration
	// Allow, when set, is asked before every retry (a retry budget); false
	// gives the app the response it got.
	Allow func() bool
}

// DefaultBackoff is the base wait before a retry when none is set.
const DefaultBackoff = 25 * time.Millisecond

// NotDelivered reports whether resp is the destination tunnel saying it
// did not reach the app (its Agentmesh-Error reasons for a request that
// never left it): a request that provably did nothing, tried again
// within Forwarder.Attempts like a failed connect.
func NotDelivered(resp *http.Response) bool {
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	switch resp.Header.Get("Agentmesh-Error") {
	case "connect_failed", "no_endpoint", "overloaded":
		return true
	}
	return false
}

// backoff waits before retry n (1 for the first) of r: base·2^(n-1), at
// most MaxBackoff (10·base when unset), plus up to as much again at
// random; false when ctx ended first.
func (r *Retry) backoff(ctx context.Context, n int) bool {
	d := r.wait(n)
	d += rand.N(d + 1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// wait is the backoff of retry n before its jitter.
func (r *Retry) wait(n int) time.Duration {
	base := r.Backoff
	if base <= 0 {
		base = DefaultBackoff
	}
	ceiling := r.MaxBackoff
	if ceiling <= 0 {
		ceiling = 10 * base
	}
	ceiling = max(ceiling, base)
	d := base
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

func (r *Retry) codeRetries(status int) bool { return slices.Contains(r.Codes, status) }

// replayLimit bounds the request body kept to try a request again: a
// larger body's request is not retried once a try has read it.
const replayLimit = 64 << 10

// replayBody is a request body shared by the tries of one request. It
// counts what was read and says whether anything was (touched); it keeps
// what was read, up to replayLimit, so that a later try reads it again
// from the start (rewind); a try's Close (the transport closes the body
// of a failed try) does not end it for the next try: the server closes
// the real one.
type replayBody struct {
	rc      io.ReadCloser
	n       *atomic.Int64
	touched atomic.Bool
	decided bool // keep was called (by the request's first try)

	mu   sync.Mutex // held across a read: one try reads at a time
	buf  []byte     // what rc gave, while it fits in replayLimit
	over bool       // rc gave more: no rewind
	pos  int        // the current try's offset in buf
	err  error      // rc's last error (io.EOF at its end)
}

func (b *replayBody) Read(p []byte) (int, error) {
	b.touched.Store(true)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pos < len(b.buf) {
		n := copy(p, b.buf[b.pos:])
		b.pos += n
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	if !b.over {
		if len(b.buf)+n <= replayLimit {
			b.buf = append(b.buf, p[:n]...)
			b.pos = len(b.buf)
		} else {
			b.over, b.buf, b.pos = true, nil, 0
		}
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// keep says, before the first Read, whether what is read is kept for a
// retry: only a request whose retry policy names status codes may be sent
// again after a try read its body; any other is tried again only while
// nothing of it was read (over from the start).
func (b *replayBody) keep(keep bool) {
	b.mu.Lock()
	if !b.decided {
		b.decided, b.over = true, !keep
	}
	b.mu.Unlock()
}

// rewind makes the next Read start from the body's first byte again;
// false when what was read is no longer all kept.
func (b *replayBody) rewind() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over {
		return !b.touched.Load() // nothing read: nothing to send again
	}
	b.pos = 0
	if b.err != nil && b.err != io.EOF {
		return false // the app's body broke: nothing to send again
	}
	return true
}

func (b *replayBody) Close() error { return nil }

// discard reads a little of a response not given to the app and closes
// it.
func discard(body io.ReadCloser) {
	io.CopyN(io.Discard, body, 4<<10) //nolint:errcheck // only to let a small body end cleanly
	body.Close()
}
