package meshconfig

import "net/netip"

// Index answers lookups on one Config. It is immutable: build a new one for
// every new Config and swap it atomically.
type Index struct {
	Config *Config
	byUID  map[string]*Workload
	byIP   map[netip.Addr]*Workload
	byVIP  map[netip.Addr]*Service
	byName map[string]*Service // "namespace/name"
	// limited: workload uid -> the Services it backs whose traffic
	// policy has rate limits.
	limited map[string][]*Service
}

// NewIndex indexes c.
func NewIndex(c *Config) *Index {
	x := &Index{
		Config: c,
		byUID:  map[string]*Workload{},
		byIP:   map[netip.Addr]*Workload{},
		byVIP:  map[netip.Addr]*Service{},
		byName: map[string]*Service{},
	}
	for i := range c.Workloads {
		w := &c.Workloads[i]
		x.byUID[w.UID] = w
		for _, ip := range w.IPs {
			x.byIP[ip.Unmap()] = w
		}
	}
	for i := range c.Services {
		s := &c.Services[i]
		x.byName[s.Key()] = s
		for _, ip := range s.VIPs {
			x.byVIP[ip.Unmap()] = s
		}
		if s.Traffic != nil && s.Traffic.RateLimit != nil {
			if x.limited == nil {
				x.limited = map[string][]*Service{}
			}
			for _, e := range s.Endpoints {
				// A dual-stack pod is an endpoint of each family: once.
				if l := x.limited[e.WorkloadUID]; e.WorkloadUID != "" && (len(l) == 0 || l[len(l)-1] != s) {
					x.limited[e.WorkloadUID] = append(l, s)
				}
			}
		}
	}
	return x
}

// RateLimited returns the Services with rate limits (Traffic.RateLimit)
// that workload uid backs on its port: those whose target port there is
// port.
func (x *Index) RateLimited(uid string, port uint16) []*Service {
	var out []*Service
	for _, s := range x.limited[uid] {
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			if e.WorkloadUID != uid {
				continue
			}
			for j := range s.Ports {
				if e.TargetPort(&s.Ports[j]) == port {
					out = append(out, s)
					break
				}
			}
			break
		}
	}
	return out
}

// ByUID returns the workload with uid, or nil.
func (x *Index) ByUID(uid string) *Workload { return x.byUID[uid] }

// ByIP returns the workload that owns ip, or nil.
func (x *Index) ByIP(ip netip.Addr) *Workload { return x.byIP[ip.Unmap()] }

// ServiceByVIP returns the Service whose virtual IP is ip, or nil.
func (x *Index) ServiceByVIP(ip netip.Addr) *Service { return x.byVIP[ip.Unmap()] }

// Service returns the Service namespace/name, or nil.
func (x *Index) Service(namespace, name string) *Service { return x.byName[namespace+"/"+name] }

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
