package meshconfig

import "net/netip"

// Index answers lookups on one Config. It is immutable: build a new one for
// every new Config and swap it atomically.
type Index struct {
	Config *Config
	byUID  map[string]*Workload
	byIP   map[netip.Addr]*Workload
}

// NewIndex indexes c.
func NewIndex(c *Config) *Index {
	x := &Index{Config: c, byUID: map[string]*Workload{}, byIP: map[netip.Addr]*Workload{}}
	for i := range c.Workloads {
		w := &c.Workloads[i]
		x.byUID[w.UID] = w
		for _, ip := range w.IPs {
			x.byIP[ip.Unmap()] = w
		}
	}
	return x
}

// ByUID returns the workload with uid, or nil.
func (x *Index) ByUID(uid string) *Workload { return x.byUID[uid] }

// ByIP returns the workload that owns ip, or nil.
func (x *Index) ByIP(ip netip.Addr) *Workload { return x.byIP[ip.Unmap()] }

// OnNode returns the workloads scheduled on node.
func (x *Index) OnNode(node string) []*Workload {
	var out []*Workload
	for i := range x.Config.Workloads {
		if w := &x.Config.Workloads[i]; w.Node == node {
			out = append(out, w)
		}
	}
	return out
}
