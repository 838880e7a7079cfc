package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// echoPort is where every test pod's echo server listens.
const echoPort = 8080

// newLab builds a lab with the mesh running and removes it (checking that
// nothing is left) when the test ends.
func newLab(t *testing.T, opts lab.Options) *lab.Lab {
	t.Helper()
	opts.BinDir = binDir
	opts.StartMesh = true
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	if testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.New(ctx, opts)
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i := 1; i <= opts.Nodes; i++ {
				t.Logf("ztunnel n%d log tail:\n%s", i, tail(l.DaemonLog(i, "ztunnel"), 30))
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
		left, err := lab.Leftovers(l.ID())
		if err != nil {
			t.Errorf("look for leftovers: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("lab %s left behind: %v", l.ID(), left)
		}
	})
	return l
}

// addPod adds a pod in namespace "agents" whose service account is its name,
// and starts an echo server in it.
func addPod(t *testing.T, l *lab.Lab, name string, node int, enrolled bool) *lab.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := l.AddPod(ctx, lab.PodSpec{Name: name, Namespace: "agents", ServiceAccount: name, Node: node, Enrolled: enrolled})
	if err != nil {
		t.Fatalf("add pod %s: %v", name, err)
	}
	if _, err := p.Start(ctx, "echo", l.Bin("meshlab"), "app", "echo", "--listen", fmt.Sprintf(":%d", echoPort)); err != nil {
		t.Fatalf("start echo in %s: %v", name, err)
	}
	return p
}

// spiffeOf is the SPIFFE id the lab gives pod name.
func spiffeOf(name string) string { return "spiffe://cluster.local/ns/agents/sa/" + name }

// sendResult is what `meshlab app send` prints.
type sendResult struct {
	EchoOK bool    `json:"echo_ok"`
	RTTMS  float64 `json:"rtt_ms"`
	Error  string  `json:"error"`
}

// trySend runs `meshlab app send` once inside from.
func trySend(l *lab.Lab, from *lab.Pod, to netip.AddrPort, payload string) error {
	out, err := from.Run(context.Background(), l.Bin("meshlab"), "app", "send", "--to", to.String(), "--payload", payload, "--timeout", "3s")
	var res sendResult
	if jerr := json.Unmarshal(lastLine(out), &res); jerr != nil {
		return fmt.Errorf("send %s -> %s: %v: %s", from.Name, to, err, out)
	}
	if !res.EchoOK {
		return fmt.Errorf("send %s -> %s: no echo: %s", from.Name, to, res.Error)
	}
	return nil
}

// send sends payload from a pod and expects it echoed, retrying briefly
// while the echo server starts.
func send(t *testing.T, l *lab.Lab, from *lab.Pod, to netip.AddrPort, payload string) {
	t.Helper()
	var err error
	for range 25 {
		if err = trySend(l, from, to, payload); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%v", err)
}

// startStream starts a long-lived echo exchange from a pod; wait checks it
// ran to the end without interruption.
func startStream(t *testing.T, l *lab.Lab, from *lab.Pod, to netip.AddrPort, d time.Duration) (wait func()) {
	t.Helper()
	send(t, l, from, to, "warm-up") // the echo server is up
	p, err := from.Start(context.Background(), "stream", l.Bin("meshlab"), "app", "stream",
		"--to", to.String(), "--duration", d.String(), "--interval", "50ms")
	if err != nil {
		t.Fatalf("start stream: %v", err)
	}
	return func() {
		t.Helper()
		err := p.Wait()
		out, _ := p.Output()
		if err != nil {
			t.Errorf("stream %s -> %s was interrupted: %v\n%s", from.Name, to, err, out)
			return
		}
		var st struct {
			Sent, Echoed int
		}
		if jerr := json.Unmarshal(lastLine(out), &st); jerr != nil || st.Echoed == 0 || st.Echoed != st.Sent {
			t.Errorf("stream %s -> %s: sent/echoed mismatch: %s", from.Name, to, out)
		}
		t.Logf("stream %s -> %s: %s", from.Name, to, bytes.TrimSpace(out))
	}
}

// waitAccess waits for an access log line on node matching match.
func waitAccess(t *testing.T, l *lab.Lab, node int, what string, match func(lab.AccessLog) bool) lab.AccessLog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := l.WaitAccessLog(ctx, node, match)
	if err != nil {
		logs, _ := l.AccessLogs(node)
		t.Fatalf("node %d: no access log %s: %v; have %+v", node, what, err, logs)
	}
	return a
}

// waitLog waits until node's ztunnel log has a line containing every part.
func waitLog(t *testing.T, l *lab.Lab, node int, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(l.DaemonLog(node, "ztunnel"))
		for _, line := range strings.Split(string(data), "\n") {
			if containsAll(line, parts) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d: no ztunnel log line containing %q; tail:\n%s", node, parts, tail(l.DaemonLog(node, "ztunnel"), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// lastLine is the last non-empty line of out.
func lastLine(out []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	return lines[len(lines)-1]
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func addr(ip netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(ip, port) }
