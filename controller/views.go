package controller

import (
	"sync/atomic"

	"github.com/agentmesh/agentmesh/controller/policystatus"
	"github.com/agentmesh/agentmesh/controller/stream"
	"github.com/agentmesh/agentmesh/controller/view"
)

// views is the watcher's view.Sink: it takes every snapshot to the hub
// (the nodes' config streams), the policy status writer and the debug
// endpoint (latest), and every deleted Node to the stream server, which
// ends that node's streams.
type views struct {
	hub      *stream.Hub
	statuses *policystatus.Writer
	streams  *stream.Server
	latest   atomic.Pointer[view.Snapshot] // nil until the caches synced
}

var _ view.Sink = (*views)(nil)

// Snapshot hands s on, on the watcher's goroutine.
func (v *views) Snapshot(s *view.Snapshot) {
	v.hub.Update(s)
	v.latest.Store(s)
	v.statuses.Update(s)
}

// NodeDeleted ends the config streams of node.
func (v *views) NodeDeleted(node string) { v.streams.DropNode(node) }
