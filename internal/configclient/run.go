package configclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/agentmesh/agentmesh/api/configapi"
)

// Backoff bounds between stream attempts.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Run keeps a config stream open until ctx is done, resuming with backoff
// (200ms doubling to 5s, reset after a snapshot arrived) after any failure.
// While disconnected, OnConfig is not called: the last good config stays.
// It returns nil when ctx is done.
func (c *Client) Run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		got, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			attempt = 0
		}
		wait := retryWait(attempt)
		c.log.Warn("config stream ended, retrying", "addr", c.o.Addr, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// retryWait is 200ms doubling per attempt up to 5s, with up to 20% jitter.
func retryWait(attempt int) time.Duration {
	d := min(maxBackoff, minBackoff<<min(attempt, 8))
	return d - rand.N(d/5+1)
}

// session runs one stream; got reports whether a snapshot was received.
func (c *Client) session(ctx context.Context) (got bool, err error) {
	conn, err := c.connection()
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := configapi.NewClient(conn).StreamConfig(ctx)
	if err != nil {
		return false, fmt.Errorf("open config stream: %w", err)
	}
	if err := st.Send(&configapi.ConfigRequest{Node: c.o.Node, Component: c.o.Component}); err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	v := newView()
	for {
		resp, err := st.Recv()
		if err != nil {
			return got, fmt.Errorf("receive config: %w", err)
		}
		got = got || resp.Full
		ack := &configapi.ConfigRequest{Node: c.o.Node, Component: c.o.Component, AckVersion: resp.Version}
		err = c.apply(v, resp)
		if resp.More {
			continue // the version is acked after its last chunk
		}
		if err != nil {
			c.log.Error("refusing config version, keeping the previous one", "version", resp.Version, "err", err)
			ack.Error = err.Error()
		}
		if err := st.Send(ack); err != nil {
			return got, fmt.Errorf("ack: %w", err)
		}
	}
}

// errNoSnapshot is a delta before any full snapshot on a stream.
var errNoSnapshot = errors.New("delta before a full snapshot")
