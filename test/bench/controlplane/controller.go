package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentmesh/agentmesh/internal/freeport"
	"github.com/agentmesh/agentmesh/test/lab"
)

// controller is the running controller binary.
type controller struct {
	o       Options
	args    []string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // set before done is closed
	grpc    string        // host:port of the config stream
	admin   string        // host:port of /metrics, /status, /readyz
	logPath string
}

// startController runs bin/controller with the given kubeconfig on free
// loopback ports and waits for /readyz.
func startController(ctx context.Context, o Options, kubeconfig, dir string) (*controller, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	c := &controller{o: o, grpc: ports[0], admin: ports[1], logPath: filepath.Join(dir, "controller.log")}
	c.args = []string{"--kubeconfig", kubeconfig, "--namespace", lab.MeshNamespace, "--listen", c.grpc,
		"--serving-names", lab.ControllerServerName + ",127.0.0.1", "--metrics-addr", c.admin, "--id", "bench",
		"--node-service-accounts", lab.MeshNamespace + "/" + lab.NodeServiceAccount, "--token-audience", lab.TokenAudience,
		"--log-level", "warn"}
	if o.Debounce > 0 {
		c.args = append(c.args, "--debounce", o.Debounce.String())
	}
	if err := c.start(ctx, true); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, errors.Join(err, c.stop())
	}
	return c, nil
}

// start starts the controller process (again, after stop: same ports,
// its log appended). Only the first run writes the profiles.
func (c *controller) start(ctx context.Context, profile bool) error {
	args := c.args
	if profile && c.o.ProfileDir != "" {
		if err := os.MkdirAll(c.o.ProfileDir, 0o755); err != nil {
			return fmt.Errorf("profile dir: %w", err)
		}
		args = append(slices.Clone(args), "--cpu-profile", filepath.Join(c.o.ProfileDir, "controller.cpu.prof"),
			"--alloc-profile", filepath.Join(c.o.ProfileDir, "controller.alloc.prof"))
	}
	log, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("controller log: %w", err)
	}
	defer log.Close()
	c.done = make(chan struct{})
	c.cmd = exec.CommandContext(ctx, filepath.Join(c.o.BinDir, "controller"), args...)
	c.cmd.Cancel = func() error { return c.cmd.Process.Signal(syscall.SIGTERM) }
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("start controller: %w", err)
	}
	done := c.done
	go func() { c.waitErr = c.cmd.Wait(); close(done) }()
	c.o.Logger.Info("started", "process", "controller", "pid", c.cmd.Process.Pid)
	return nil
}

func (c *controller) waitReady(ctx context.Context) error {
	err := poll(ctx, time.Minute, "controller /readyz", func() (bool, error) {
		select {
		case <-c.done:
			return false, fmt.Errorf("controller exited: %v", c.waitErr)
		default:
		}
		code, _, err := httpGet(ctx, "http://"+c.admin+"/readyz")
		return err == nil && code == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%w\n--- %s ---\n%s", err, c.logPath, tail(c.logPath, 20))
	}
	return nil
}

// stop sends SIGTERM to the controller's PID, SIGKILL after 10s, and waits.
func (c *controller) stop() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	c.cmd.Process.Kill()
	<-c.done
	return fmt.Errorf("controller (pid %d) did not stop on SIGTERM", c.cmd.Process.Pid)
}

// memory is the controller's resident set size (VmRSS of
// /proc/PID/status) and Go heap in use (go_memstats_heap_inuse_bytes).
func (c *controller) memory(ctx context.Context) (rss, heap uint64, err error) {
	if rss, err = vmRSS(c.cmd.Process.Pid); err != nil {
		return 0, 0, err
	}
	code, body, err := httpGet(ctx, "http://"+c.admin+"/metrics")
	if err != nil || code != http.StatusOK {
		return 0, 0, fmt.Errorf("controller metrics: %d %v", code, err)
	}
	heap, err = metricValue(body, "go_memstats_heap_inuse_bytes")
	return rss, heap, err
}

// vmRSS reads VmRSS (kB) of pid in bytes.
func vmRSS(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse rss: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// metricValue is the value of an unlabelled sample in Prometheus text.
func metricValue(body []byte, name string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s: %w", name, err)
			}
			return uint64(v), nil
		}
	}
	return 0, fmt.Errorf("no %s in metrics", name)
}

// pushedBytes is the controller's agentmesh_controller_config_push_bytes_total
// of kind (full or delta), summed over components.
func (c *controller) pushedBytes(ctx context.Context, kind string) (uint64, error) {
	code, body, err := httpGet(ctx, "http://"+c.admin+"/metrics")
	if err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("controller metrics: %d %v", code, err)
	}
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && strings.HasPrefix(f[0], "agentmesh_controller_config_push_bytes_total{") && strings.Contains(f[0], `kind="`+kind+`"`) {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("parse push bytes: %w", err)
			}
			sum += v
		}
	}
	return uint64(sum), nil
}

// status is the part of the controller's /status the bench checks.
type status struct {
	Versions map[string]uint64                               `json:"versions"`
	Nodes    map[string]map[string]lab.ControllerStreamState `json:"nodes"`
}

// allAcked reports whether every node's ztunnel stream acked the node's
// current version, per the controller's /status.
func (c *controller) allAcked(ctx context.Context, nodes int) (bool, error) {
	code, body, err := httpGet(ctx, "http://"+c.admin+"/status")
	if err != nil || code != http.StatusOK {
		return false, fmt.Errorf("controller status: %d %v", code, err)
	}
	var s status
	if err := json.Unmarshal(body, &s); err != nil {
		return false, fmt.Errorf("decode controller status: %w", err)
	}
	for i := range nodes {
		st, ok := s.Nodes[nodeName(i)][ztunnel]
		if v := s.Versions[nodeName(i)]; !ok || v == 0 || st.AckedVersion != v {
			return false, nil
		}
	}
	return true, nil
}

func httpGet(ctx context.Context, url string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// freePorts returns n free loopback host:ports (free together right now;
// from below the ephemeral range, see internal/freeport).
func freePorts(n int) ([]string, error) {
	return freeport.Addrs(netip.MustParseAddr("127.0.0.1"), n)
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
