package kubelet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// fakeRuntime is an in-memory PodRuntime: sandboxes are records and
// processes are channels; DialNode succeeds while listening is set and
// the port is not down.
type fakeRuntime struct {
	mu        sync.Mutex // guards the fields below
	sandboxes map[string]*fakeSandbox
	listening bool
	down      map[uint16]bool
	dials     map[uint16]int // by port
	nextPID   int
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{sandboxes: map[string]*fakeSandbox{}, listening: true, down: map[uint16]bool{},
		dials: map[uint16]int{}, nextPID: 100}
}

func (r *fakeRuntime) CreateSandbox(_ context.Context, s SandboxSpec) (Sandbox, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sandboxes[s.UID] != nil {
		return nil, errors.New("sandbox exists")
	}
	sb := &fakeSandbox{r: r, spec: s, ips: []netip.Addr{netip.MustParseAddr("198.19.1.2"), netip.MustParseAddr("fd00:19:1::2")}}
	r.sandboxes[s.UID] = sb
	return sb, nil
}

func (r *fakeRuntime) DialNode(_ context.Context, _, addr string) (net.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	port := netip.MustParseAddrPort(addr).Port()
	r.dials[port]++
	if !r.listening || r.down[port] {
		return nil, syscall.ECONNREFUSED
	}
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

// setDown makes dials to port fail (or work again).
func (r *fakeRuntime) setDown(port uint16, down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down[port] = down
}

// dialed is how often port was dialed.
func (r *fakeRuntime) dialed(port uint16) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dials[port]
}

func (r *fakeRuntime) setListening(v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listening = v
}

// sandbox returns the sandbox of uid, or nil.
func (r *fakeRuntime) sandbox(uid string) *fakeSandbox {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sandboxes[uid]
}

type fakeSandbox struct {
	r    *fakeRuntime
	spec SandboxSpec
	ips  []netip.Addr

	mu      sync.Mutex // guards the fields below
	procs   []*fakeProc
	removed bool
}

func (s *fakeSandbox) IPs() []netip.Addr { return s.ips }

func (s *fakeSandbox) Start(c ContainerSpec) (Process, error) {
	s.r.mu.Lock()
	s.r.nextPID++
	pid := s.r.nextPID
	s.r.mu.Unlock()
	p := &fakeProc{pid: pid, args: c.Args, env: c.Env, hosts: c.Hosts, done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = append(s.procs, p)
	return p, nil
}

func (s *fakeSandbox) Remove(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		p.exit(137)
	}
	s.removed = true
	return nil
}

// last is the newest process, or nil.
func (s *fakeSandbox) last() *fakeProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.procs) == 0 {
		return nil
	}
	return s.procs[len(s.procs)-1]
}

func (s *fakeSandbox) isRemoved() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removed
}

type fakeProc struct {
	pid   int
	args  []string
	env   []string
	hosts []byte
	done  chan struct{}

	mu      sync.Mutex // guards the fields below
	code    int
	exited  bool
	signals []os.Signal
	first   time.Time // when the first signal came
}

func (p *fakeProc) PID() int              { return p.pid }
func (p *fakeProc) Done() <-chan struct{} { return p.done }

func (p *fakeProc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

func (p *fakeProc) Signal(sig os.Signal) error {
	p.mu.Lock()
	if len(p.signals) == 0 {
		p.first = time.Now()
	}
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	if s, ok := sig.(syscall.Signal); ok {
		p.exit(128 + int(s))
	}
	return nil
}

// exit makes the process exit with code (once).
func (p *fakeProc) exit(code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	p.exited, p.code = true, code
	close(p.done)
}

// firstSignal is when the first signal came (zero: none yet).
func (p *fakeProc) firstSignal() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first
}

func (p *fakeProc) gotSignals() []os.Signal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]os.Signal(nil), p.signals...)
}
