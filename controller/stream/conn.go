package stream

import (
	"maps"
	"time"

	"github.com/agentmesh/agentmesh/api/configapi"
)

// conn is one open stream's bookkeeping, guarded by Server.mu.
type conn struct {
	node, component string
	since           time.Time
	sentVersion     uint64
	ackedVersion    uint64
	nackedVersion   uint64
	lastError       string
	sentAt          map[uint64]time.Time // versions sent and not yet acked
	gone            chan struct{}        // closed by DropNode
	dropped         bool                 // gone is closed
}

// ComponentStatus is one node component's stream, for admins.
type ComponentStatus struct {
	ConnectedSince time.Time `json:"connectedSince"`
	SentVersion    uint64    `json:"sentVersion"`
	AckedVersion   uint64    `json:"ackedVersion"`
	NackedVersion  uint64    `json:"nackedVersion,omitempty"`
	LastError      string    `json:"lastError,omitempty"`
}

func (s *Server) open(node, component string) *conn {
	c := &conn{node: node, component: component, since: time.Now(), sentAt: map[uint64]time.Time{}, gone: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[c] = struct{}{}
	s.m.streams.WithLabelValues(component).Inc()
	s.m.nodes.Set(float64(s.nodeCountLocked()))
	s.log.Info("config stream opened", "node", node, "component", component)
	return c
}

func (s *Server) close(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, c)
	s.m.streams.WithLabelValues(c.component).Dec()
	s.m.nodes.Set(float64(s.nodeCountLocked()))
	if !s.hasStreamLocked(c.node, c.component) {
		s.m.acked.DeleteLabelValues(c.node, c.component)
	}
	s.log.Info("config stream closed", "node", c.node, "component", c.component, "acked", c.ackedVersion)
}

func (s *Server) nodeCountLocked() int {
	nodes := map[string]bool{}
	for c := range s.streams {
		nodes[c.node] = true
	}
	return len(nodes)
}

func (s *Server) hasStreamLocked(node, component string) bool {
	for c := range s.streams {
		if c.node == node && c.component == component {
			return true
		}
	}
	return false
}

// sending counts p and records when it is handed to c's stream, for the
// ack latency. It runs before sending: the node's ack may be read before
// the send returns. (A failed send ends the stream.)
func (s *Server) sending(c *conn, p *Push) {
	kind := "delta"
	if p.Full {
		kind = "full"
	}
	s.m.pushes.WithLabelValues(c.component, kind).Inc()
	s.m.pushBytes.WithLabelValues(c.component, kind).Add(float64(p.Bytes()))
	s.mu.Lock()
	defer s.mu.Unlock()
	c.sentVersion = p.Version
	c.sentAt[p.Version] = time.Now()
}

// ack records an ack or nack of a version.
func (s *Server) ack(c *conn, req *configapi.ConfigRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := c.sentAt[req.AckVersion]; ok {
		s.m.ackLatency.WithLabelValues(c.component).Observe(time.Since(at).Seconds())
	}
	maps.DeleteFunc(c.sentAt, func(v uint64, _ time.Time) bool { return v <= req.AckVersion })
	if req.Error != "" {
		c.nackedVersion, c.lastError = req.AckVersion, req.Error
		s.m.nacks.WithLabelValues(c.component).Inc()
		s.log.Warn("config version refused by node", "node", c.node, "component", c.component,
			"version", req.AckVersion, "err", req.Error)
		return
	}
	if req.AckVersion > c.ackedVersion {
		c.ackedVersion = req.AckVersion
		s.m.acked.WithLabelValues(c.node, c.component).Set(float64(req.AckVersion))
	}
}

// Status returns node -> component -> stream status. When a component has
// more than one stream (a reconnect overlapping the old one), the newest
// wins.
func (s *Server) Status() map[string]map[string]ComponentStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]ComponentStatus{}
	for c := range s.streams {
		if out[c.node] == nil {
			out[c.node] = map[string]ComponentStatus{}
		}
		if old, ok := out[c.node][c.component]; ok && old.ConnectedSince.After(c.since) {
			continue
		}
		out[c.node][c.component] = ComponentStatus{ConnectedSince: c.since, SentVersion: c.sentVersion,
			AckedVersion: c.ackedVersion, NackedVersion: c.nackedVersion, LastError: c.lastError}
	}
	return out
}

// DropNode ends every stream of node (its Node object was deleted). Each
// stream ends with PermissionDenied; as it ends, the node's per-node state
// goes with it: its hub version, its status entry and its metric series.
func (s *Server) DropNode(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.streams {
		if c.node == node && !c.dropped {
			c.dropped = true
			close(c.gone)
			n++
		}
	}
	if n > 0 {
		s.log.Info("closing config streams of a deleted node", "node", node, "streams", n)
	}
}
