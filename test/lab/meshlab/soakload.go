package meshlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// soakPods are the pods of a soak: client (n1, enrolled) calls server
// (n2, enrolled) and local (n1, enrolled); outside (n1, not enrolled)
// calls server in plaintext.
type soakPods struct {
	client, server, local, outside *lab.Pod
}

// tally counts calls.
type tally struct{ ok, failed int }

func (t *tally) add(o tally) { t.ok, t.failed = t.ok+o.ok, t.failed+o.failed }

// soakLoad runs a soak's traffic in the lab's pods and counts its calls.
// Its processes run until stop (or the lab's Close).
type soakLoad struct {
	l    *lab.Lab
	pods soakPods
	opts soakOptions

	dialers []*dialerTail
	streams []*lab.Process
	bursts  tally
	churn   tally
	churned int      // pods added and removed
	notes   []string // what failed, for the report
}

// dialerTail follows the output of an `app dialer` and counts its
// attempts.
type dialerTail struct {
	name string
	proc *lab.Process
	off  int64  // read so far
	rest []byte // an incomplete last line
	tally
	lastErr string
}

// startSoakLoad starts the streams and dialers.
func startSoakLoad(ctx context.Context, l *lab.Lab, pods soakPods, opts soakOptions) (*soakLoad, error) {
	s := &soakLoad{l: l, pods: pods, opts: opts}
	app := addrOf
	targets := []netip.AddrPort{app(pods.server), netip.AddrPortFrom(pods.server.IPv6(), soakEchoPort), app(pods.local)}
	run := (opts.duration + 10*time.Minute).String() // stopped by stop
	for k := range opts.streams {
		p, err := pods.client.Start(ctx, fmt.Sprintf("stream-%d", k), l.Bin("meshlab"), "app", "stream",
			"--to", targets[k%len(targets)].String(), "--interval", "100ms", "--duration", run)
		if err != nil {
			return s, err
		}
		s.streams = append(s.streams, p)
	}
	for _, d := range []struct {
		name     string
		from     *lab.Pod
		to       netip.AddrPort
		interval time.Duration
	}{
		{"mesh cross-node", pods.client, app(pods.server), opts.dialInterval},
		{"mesh same-node", pods.client, app(pods.local), 4 * opts.dialInterval},
		{"plaintext from outside", pods.outside, app(pods.server), 4 * opts.dialInterval},
	} {
		p, err := d.from.Start(ctx, "dialer-"+strconv.Itoa(len(s.dialers)), l.Bin("meshlab"), "app", "dialer",
			"--to", d.to.String(), "--interval", d.interval.String(), "--timeout", "5s", "--duration", run)
		if err != nil {
			return s, err
		}
		s.dialers = append(s.dialers, &dialerTail{name: d.name, proc: p})
	}
	return s, nil
}

// calls counts every call so far.
func (s *soakLoad) calls() tally {
	var t tally
	for _, d := range s.dialers {
		d.read()
		t.add(d.tally)
	}
	t.add(s.bursts)
	t.add(s.churn)
	return t
}

// streamsUp counts the streams still running.
func (s *soakLoad) streamsUp() int {
	n := 0
	for _, p := range s.streams {
		if p.ExitStatus() == "" {
			n++
		}
	}
	return n
}

// burst opens opts.burstConns connections from client to server at once.
func (s *soakLoad) burst(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	to := addrOf(s.pods.server)
	out, err := s.pods.client.Run(ctx, s.l.Bin("meshlab"), "app", "burst", "--to", to.String(),
		"--conns", strconv.Itoa(s.opts.burstConns), "--hold", "2s", "--timeout", "20s")
	var res BurstResult
	if jerr := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil || jerr != nil {
		s.bursts.failed += s.opts.burstConns
		s.note("burst: %v", errors.Join(err, jerr))
		return
	}
	s.bursts.add(tally{ok: res.Echoed, failed: res.Failed})
	if res.Failed > 0 {
		s.note("burst of %d: %d failed: %v", res.Conns, res.Failed, res.Errors)
	}
}

// churnPod adds an enrolled pod with an echo server, calls it once from
// client and removes it: a config change every ztunnel and agentd sees.
func (s *soakLoad) churnPod(ctx context.Context) {
	k := s.churned
	s.churned++
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	name := fmt.Sprintf("churn-%d", k)
	p, err := s.l.AddPod(ctx, lab.PodSpec{Name: name, Namespace: "soak", ServiceAccount: "churn", Node: 1 + k%2, Enrolled: true})
	if err != nil {
		s.churn.failed++
		s.note("churn: add %s: %v", name, err)
		return
	}
	err = startEchoIn(ctx, s.l, p)
	if err == nil {
		err = s.sendUntil(ctx, addrOf(p))
	}
	if rerr := s.l.RemovePod(ctx, name); rerr != nil {
		err = errors.Join(err, fmt.Errorf("remove: %w", rerr))
	}
	if err != nil {
		s.churn.failed++
		s.note("churn: %s: %v", name, err)
		return
	}
	s.churn.ok++
}

// sendUntil calls to from client until it answers (its echo server is
// starting) or ctx ends.
func (s *soakLoad) sendUntil(ctx context.Context, to netip.AddrPort) error {
	for {
		_, err := s.pods.client.Run(ctx, s.l.Bin("meshlab"), "app", "send", "--to", to.String(), "--timeout", "2s")
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop stops every process of the load, counts the last calls and says
// which streams broke (ended before they were stopped, or with an error).
func (s *soakLoad) stop() []string {
	var broken []string
	for _, p := range s.streams {
		if st := p.ExitStatus(); st != "" {
			broken = append(broken, fmt.Sprintf("%s ended early (%s): %s", p.Name, st, lastOutput(p)))
			continue
		}
		p.Stop()
		out, _ := p.Output()
		var st StreamStats
		if err := json.Unmarshal(bytes.TrimSpace(out), &st); err != nil || st.Error != "" || st.Echoed == 0 {
			broken = append(broken, fmt.Sprintf("%s: %s", p.Name, bytes.TrimSpace(out)))
		}
	}
	for _, d := range s.dialers {
		d.proc.Stop()
		d.read()
	}
	return broken
}

func (s *soakLoad) note(format string, args ...any) {
	s.notes = append(s.notes, time.Now().Format("15:04:05 ")+fmt.Sprintf(format, args...))
}

// read counts the attempts the dialer printed since the last read.
func (d *dialerTail) read() {
	f, err := os.Open(d.proc.LogPath)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(d.off, io.SeekStart); err != nil {
		return
	}
	data, _ := io.ReadAll(f)
	d.off += int64(len(data))
	data = append(d.rest, data...)
	end := bytes.LastIndexByte(data, '\n') + 1
	d.rest = append([]byte(nil), data[end:]...)
	for line := range bytes.SplitSeq(data[:end], []byte("\n")) {
		var a DialAttempt
		if json.Unmarshal(line, &a) != nil || a.At.IsZero() {
			continue
		}
		if a.OK {
			d.ok++
		} else {
			d.failed++
			d.lastErr = a.Error
		}
	}
}

// lastOutput is the last line a process printed.
func lastOutput(p *lab.Process) string {
	out, _ := p.Output()
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	return string(lines[len(lines)-1])
}

// addrOf is p's echo server.
func addrOf(p *lab.Pod) netip.AddrPort { return netip.AddrPortFrom(p.IPv4(), soakEchoPort) }

// startEchoIn starts the soak's echo server in p.
func startEchoIn(ctx context.Context, l *lab.Lab, p *lab.Pod) error {
	_, err := p.Start(ctx, "echo", l.Bin("meshlab"), "app", "echo", "--listen", ":"+strconv.Itoa(soakEchoPort))
	return err
}
