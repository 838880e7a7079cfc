// Package cnigate is the contract between the AgentMesh CNI plugin and
// agentd: on a pod's CNI ADD the plugin sends agentd the pod and its
// network namespace (the open file, so agentd need not see the runtime's
// netns mounts) and waits until agentd has captured the pod and ztunnel
// serves it, or has decided the pod is not in the mesh. The runtime starts
// the pod's containers only after the ADD returned, so a meshed pod's first
// connection is already captured.
//
// One request and one reply per connection, each one SOCK_SEQPACKET packet
// of JSON; the request carries the netns as SCM_RIGHTS.
package cnigate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/fdpass"
)

// DefaultSocket is where agentd listens for the plugin.
const DefaultSocket = "/var/run/agentmesh/cni.sock"

// maxPacket caps a request or reply.
const maxPacket = 16 << 10

// Request is one pod's CNI ADD.
type Request struct {
	ContainerID string `json:"containerID"`
	// Netns is the runtime's path of the pod netns, for logs only: the
	// namespace itself comes with the request.
	Netns     string       `json:"netns"`
	Namespace string       `json:"namespace"`
	Name      string       `json:"name"`
	UID       string       `json:"uid,omitempty"` // K8S_POD_UID, where the runtime sets it
	IPs       []netip.Addr `json:"ips"`           // from the earlier plugins' result
}

// Reply is agentd's answer. Err set: the pod must not start (the ADD
// fails and the kubelet retries the sandbox); else Captured says whether
// the pod's traffic is in the mesh from its first packet, Reason why not.
type Reply struct {
	Captured bool   `json:"captured"`
	Reason   string `json:"reason,omitempty"`
	Err      string `json:"error,omitempty"`
}

// Handler answers one request; netns is closed after it returns.
type Handler func(ctx context.Context, req Request, netns *os.File) Reply

// Call sends req with netns to agentd at socket and waits for the reply
// until ctx is done.
func Call(ctx context.Context, socket string, req Request, netns *os.File) (Reply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", socket)
	if err != nil {
		return Reply{}, fmt.Errorf("agentd at %s: %w", socket, err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	stop := context.AfterFunc(ctx, func() { uc.SetDeadline(time.Now()) }) //nolint:errcheck // best effort wake-up
	defer stop()
	data, err := json.Marshal(req)
	if err != nil {
		return Reply{}, fmt.Errorf("encode request: %w", err)
	}
	if err := fdpass.Write(uc, data, netns); err != nil {
		return Reply{}, fmt.Errorf("agentd at %s: %w", socket, err)
	}
	p, err := fdpass.Read(uc, maxPacket)
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return Reply{}, fmt.Errorf("agentd at %s: no reply: %w", socket, err)
	}
	p.CloseFiles()
	var r Reply
	if err := json.Unmarshal(p.Data, &r); err != nil {
		return Reply{}, fmt.Errorf("agentd at %s: bad reply %q: %w", socket, p.Data, err)
	}
	return r, nil
}

// Server serves requests on a unix socket.
type Server struct {
	ln  *net.UnixListener
	h   Handler
	log *slog.Logger
}

// Listen creates the socket at path (fdpass.Listen).
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	ln, err := fdpass.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("cni gate socket: %w", err)
	}
	return &Server{ln: ln, h: h, log: log}, nil
}

// Close closes a server that is not running (Run closes its own socket).
func (s *Server) Close() error { return s.ln.Close() }

// Run serves until ctx is done, then closes the socket and waits for the
// requests in flight (their handlers see ctx done).
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.ln.Close()
			return fmt.Errorf("cni gate accept: %w", err)
		}
		wg.Go(func() { s.serve(ctx, c) })
	}
}

func (s *Server) serve(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // a plugin sends at once
	p, err := fdpass.Read(c, maxPacket)
	if err != nil {
		s.log.Warn("cni gate: bad request", "err", err)
		return
	}
	defer p.CloseFiles()
	var req Request
	var r Reply
	switch err := json.Unmarshal(p.Data, &req); {
	case err != nil:
		r.Err = fmt.Sprintf("bad request: %v", err)
	case len(p.Files) != 1:
		r.Err = fmt.Sprintf("want the pod netns with the request, got %d files", len(p.Files))
	case req.Namespace == "" || req.Name == "":
		r.Err = "request without the pod's namespace and name (K8S_POD_NAMESPACE, K8S_POD_NAME)"
	default:
		r = s.h(ctx, req, p.Files[0])
	}
	if r.Err != "" {
		s.log.Warn("cni gate: pod may not start yet", "pod", req.Namespace+"/"+req.Name, "uid", req.UID, "container", req.ContainerID, "err", r.Err)
	}
	data, err := json.Marshal(r)
	if err == nil {
		err = fdpass.Write(c, data, nil)
	}
	if err != nil {
		s.log.Warn("cni gate: reply not sent", "pod", req.Namespace+"/"+req.Name, "err", err)
	}
}
