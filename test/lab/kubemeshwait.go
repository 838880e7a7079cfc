package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// WaitMeshPod waits until Kubernetes pod ns/name is Ready, its node's
// ztunnel has set it up (enrolled) or not (!enrolled), and every node's
// ztunnel has it in its config with that enrollment. It returns the lab
// Pod, its Enrolled field set.
func (l *Lab) WaitMeshPod(ctx context.Context, ns, name string, enrolled bool) (*Pod, error) {
	if _, err := l.WaitPodReady(ctx, ns, name); err != nil {
		return nil, err
	}
	p := l.KubePod(ns, name)
	if p == nil {
		return nil, fmt.Errorf("pod %s/%s ready but has no sandbox", ns, name)
	}
	l.mu.Lock()
	p.Enrolled = enrolled
	l.mu.Unlock()
	if err := l.waitPodListed(ctx, p, enrolled); err != nil {
		return nil, err
	}
	return p, l.WaitWorkload(ctx, p.UID, func(w *meshconfig.Workload) bool { return w != nil && w.Enrolled == enrolled })
}

// WaitWorkload waits until ok holds for workload uid (nil: absent) in the
// config of every running ztunnel.
func (l *Lab) WaitWorkload(ctx context.Context, uid string, ok func(*meshconfig.Workload) bool) error {
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	for i := 1; i <= l.opts.Nodes; i++ {
		var last error
		for l.Daemon(i, ztunnelKind) != nil {
			c, err := l.ZtunnelConfig(ctx, i)
			if err == nil && ok(findWorkload(c, uid)) {
				break
			}
			last = err
			select {
			case <-ctx.Done():
				return l.daemonError(i, ztunnelKind, fmt.Errorf("workload %s: %w (last error: %v)", uid, ctx.Err(), last))
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// findWorkload is c's workload uid, or nil.
func findWorkload(c *meshconfig.Config, uid string) *meshconfig.Workload {
	for i := range c.Workloads {
		if c.Workloads[i].UID == uid {
			return &c.Workloads[i]
		}
	}
	return nil
}

// ZtunnelConfig returns the config node i's ztunnel has in force (admin
// GET /config on 127.0.0.1:15000 inside the node netns).
func (l *Lab) ZtunnelConfig(ctx context.Context, i int) (*meshconfig.Config, error) {
	return l.ztunnelConfig(ctx, i)
}

// ZtunnelAdmin GETs path from node i's ztunnel admin endpoint and returns
// the body (an error unless the status is 200).
func (l *Lab) ZtunnelAdmin(ctx context.Context, i int, path string) ([]byte, error) {
	url := "http://" + netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), mesh.AdminPort).String() + path
	code, body, err := l.httpGet(ctx, i, url)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %d", url, code)
	}
	return body, nil
}

// Forward listens on 127.0.0.1 in the calling process's netns and
// forwards every connection to target, dialled from inside node i's netns
// (so the peer sees the node's address). Close stops it and its
// connections.
type Forward struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	open map[net.Conn]bool
}

// ForwardFromNode starts a Forward from node i to target.
func (l *Lab) ForwardFromNode(i int, target netip.AddrPort) (*Forward, error) {
	return forwardFrom(l.nodeNetns(i), target)
}

// forwardFrom starts a Forward to target, dialled inside the named netns.
func forwardFrom(ns string, target netip.AddrPort) (*Forward, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("forward listen: %w", err)
	}
	f := &Forward{ln: ln, open: map[net.Conn]bool{}}
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := doInNetns(ns, func() error {
			var err error
			c, err = net.DialTimeout("tcp", target.String(), 5*time.Second)
			return err
		})
		return c, err
	}
	f.wg.Go(func() { f.serve(dial) })
	return f, nil
}

// Addr is the local address to dial.
func (f *Forward) Addr() string { return f.ln.Addr().String() }

// serve accepts until the listener closes.
func (f *Forward) serve(dial func() (net.Conn, error)) {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := dial()
		if err != nil {
			c.Close()
			continue
		}
		if !f.track(c, up) {
			return
		}
		f.wg.Go(func() { pipe(c, up); f.untrack(c, up) })
	}
}

// track records live connections; false (and both closed) after Close.
func (f *Forward) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		f.open[c] = true
	}
	return true
}

func (f *Forward) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		delete(f.open, c)
	}
}

// pipe copies both ways until either side ends, then closes both.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) { _, _ = io.Copy(dst, src); done <- struct{}{} }
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// Close stops the listener and every forwarded connection and waits.
func (f *Forward) Close() error {
	err := f.ln.Close()
	f.mu.Lock()
	for c := range f.open {
		c.Close()
	}
	f.open = nil
	f.mu.Unlock()
	f.wg.Wait()
	return err
}
