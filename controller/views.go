package controller

import (
	"github.com/agentmesh/agentmesh/controller/policystatus"
	"github.com/agentmesh/agentmesh/controller/routestatus"
	"github.com/agentmesh/agentmesh/controller/stream"
	"github.com/agentmesh/agentmesh/controller/trafficstatus"
	"github.com/agentmesh/agentmesh/controller/view"
)

// views is the watcher's view.DeltaSink: it takes every change to the hub
// (the nodes' config streams), the policy states and warnings to the
// policy status writer, the route states to the route status writer, the
// TrafficPolicy states to theirs, and every deleted Node to the stream server, which ends that node's streams.
type views struct {
	hub      *stream.Hub
	statuses *policystatus.Writer
	routes   *routestatus.Writer
	traffic  *trafficstatus.Writer
	streams  *stream.Server
}

var _ view.DeltaSink = (*views)(nil)

// Changed hands d and st on, on the watcher's goroutine.
func (v *views) Changed(d *view.Delta, st view.Status) {
	v.hub.Apply(d)
	v.statuses.SetStatus(st)
	v.routes.SetStatus(st)
	v.traffic.SetStatus(st)
}

// Snapshot hands s on (the watcher calls Changed instead).
func (v *views) Snapshot(s *view.Snapshot) {
	v.hub.Update(s)
	v.statuses.Update(s)
	v.routes.Update(s)
	v.traffic.Update(s)
}

// NodeDeleted ends the config streams of node.
func (v *views) NodeDeleted(node string) { v.streams.DropNode(node) }
