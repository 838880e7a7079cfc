package detect

import (
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/ztunnel/flow"
)

// Options configure a Detector.
type Options struct {
	// Timeout bounds the wait for a client's first bytes; 0 turns
	// sniffing off (undeclared ports are then Opaque).
	Timeout time.Duration
	// OpaquePorts are destination ports (a Service's port or target
	// port, a pod's port) taken as Opaque unless declared.
	OpaquePorts []uint16
}

// Detector decides the application protocol of outbound flows.
type Detector struct {
	timeout time.Duration
	opaque  map[uint16]bool
	bufs    sync.Pool
}

// New returns a Detector.
func New(o Options) *Detector {
	d := &Detector{timeout: o.Timeout, opaque: map[uint16]bool{}}
	for _, p := range o.OpaquePorts {
		d.opaque[p] = true
	}
	d.bufs.New = func() any { b := make([]byte, MaxSniff); return &b }
	return d
}

// Outbound decides what f, an outbound flow the resolve stage has seen,
// carries, and sets f.AppProtocol and f.Detected. c is the app's
// connection; it is only peeked at. Destinations outside the mesh are not
// looked at.
func (d *Detector) Outbound(f *flow.Flow, c Conn) {
	app, by := d.outbound(f, c)
	f.AppProtocol, f.Detected = string(app), string(by)
}

func (d *Detector) outbound(f *flow.Flow, c Conn) (App, By) {
	if f.ServicePort != nil {
		if app, ok := Declared(f.ServicePort.AppProtocol); ok {
			return app, ByDeclared
		}
	}
	switch {
	case f.Service == nil && f.DstWorkload == nil:
		return Opaque, ByNotSniffed
	case d.opaque[f.Dst.Port()] || (f.ServicePort != nil && d.opaque[f.ServicePort.TargetPort]):
		return Opaque, ByOpaquePort
	case d.timeout <= 0 || c == nil:
		return Opaque, ByNotSniffed
	}
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	app, by, err := Look(c, *bp, d.timeout)
	if err != nil {
		return Opaque, ByNotSniffed // the socket failed: the relay will say so
	}
	return app, by
}
