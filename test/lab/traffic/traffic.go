// Package traffic runs steady, legitimate traffic from a lab pod while a
// test disturbs the mesh (kills a daemon, floods a port): `meshlab app
// dialer` opening a new short echo connection every interval, and `meshlab
// app stream`s holding long echo exchanges. The processes log to files
// the test reads while they run.
package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// Options shape a Load.
type Options struct {
	Interval time.Duration // between new connections (default 50ms)
	Timeout  time.Duration // of one new connection (default 2s)
	Duration time.Duration // how long the processes run at most (default 10m)
	// StreamDuration is how long the streams run, when shorter than
	// Duration (0: Duration).
	StreamDuration time.Duration
	Tag            string // suffix of the processes' names
}

// Load is a dialer and streams started in one pod.
type Load struct {
	Dialer  *lab.Process
	Streams []*lab.Process
}

// Start starts a dialer from p to dial and one stream to each of streams.
// On error what was started is stopped.
func Start(ctx context.Context, l *lab.Lab, p *lab.Pod, dial netip.AddrPort, streams []netip.AddrPort, o Options) (*Load, error) {
	if o.Interval == 0 {
		o.Interval = 50 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Minute
	}
	if o.StreamDuration == 0 {
		o.StreamDuration = o.Duration
	}
	ld := &Load{}
	for k, dst := range streams {
		s, err := p.Start(ctx, fmt.Sprintf("stream%s-%d", o.Tag, k), l.Bin("meshlab"), "app", "stream",
			"--to", dst.String(), "--interval", "50ms", "--duration", o.StreamDuration.String(), "--progress")
		if err != nil {
			return nil, errors.Join(fmt.Errorf("start stream: %w", err), ld.Stop())
		}
		ld.Streams = append(ld.Streams, s)
	}
	d, err := p.Start(ctx, "dialer"+o.Tag, l.Bin("meshlab"), "app", "dialer", "--to", dial.String(),
		"--interval", o.Interval.String(), "--timeout", o.Timeout.String(), "--duration", o.Duration.String())
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start dialer: %w", err), ld.Stop())
	}
	ld.Dialer = d
	return ld, nil
}

// Attempts are the dialer's connection attempts so far.
func (ld *Load) Attempts() []meshlab.DialAttempt {
	out, _ := ld.Dialer.Output()
	return meshlab.ParseDialAttempts(out)
}

// StreamStats are the streams' latest stats; an error names a stream that
// printed none.
func (ld *Load) StreamStats() ([]meshlab.StreamStats, error) {
	var stats []meshlab.StreamStats
	for _, s := range ld.Streams {
		out, _ := s.Output()
		st, ok := meshlab.LastStreamStats(out)
		if !ok {
			return stats, fmt.Errorf("stream %s printed no stats: %s", s.Name, out)
		}
		stats = append(stats, st)
	}
	return stats, nil
}

// StreamsUp reports whether every stream has had an echo and none broke;
// state says where they stand.
func (ld *Load) StreamsUp() (ok bool, state string) {
	stats, err := ld.StreamStats()
	if err != nil {
		return false, err.Error()
	}
	for i, st := range stats {
		if st.Echoed == 0 || st.Error != "" {
			return false, fmt.Sprintf("stream %s: %+v", ld.Streams[i].Name, st)
		}
	}
	return true, "streams up"
}

// Good reports whether n connections begun at or after since worked;
// state says where it stands.
func (ld *Load) Good(n int, since time.Time) (ok bool, state string) {
	got, last := 0, meshlab.DialAttempt{}
	for _, a := range ld.Attempts() {
		if !a.At.Before(since) {
			last = a
			if a.OK {
				got++
			}
		}
	}
	return got >= n, fmt.Sprintf("%d good new connections so far, last %+v", got, last)
}

// Stop stops the processes (each one's output stays readable).
func (ld *Load) Stop() error {
	var err error
	for _, p := range append([]*lab.Process{ld.Dialer}, ld.Streams...) {
		if p != nil {
			err = errors.Join(err, p.Stop())
		}
	}
	return err
}
