package meshconfig

import "net/netip"

// Service is a Kubernetes Service as the mesh sees it: its virtual IPs, its
// ports and the workloads behind it.
type Service struct {
	Name      string        `json:"name"`
	Namespace string        `json:"namespace"`
	VIPs      []netip.Addr  `json:"vips,omitempty"`
	Ports     []ServicePort `json:"ports,omitempty"`
	Endpoints []Endpoint    `json:"endpoints,omitempty"`
	// ExternalName is the DNS name an ExternalName Service stands for
	// (it has no VIPs, ports or endpoints); "" for every other type.
	ExternalName string `json:"externalName,omitempty"`
	// Routes are the HTTPRoute and GRPCRoute rules whose parent is this
	// Service, flattened one match each, in Gateway API precedence
	// order (Route): requests to the Service over L7 follow the first
	// that fits.
	Routes []Route `json:"routes,omitempty"`
	// Traffic is the TrafficPolicy that targets this Service, nil: the
	// mesh's defaults.
	Traffic *TrafficPolicy `json:"traffic,omitempty"`
}

// Key returns "namespace/name", the service's identity in config deltas.
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// ServicePort is one port of a Service.
type ServicePort struct {
	Name        string `json:"name,omitempty"`
	Port        uint16 `json:"port"`
	TargetPort  uint16 `json:"targetPort,omitempty"` // 0: a named target port, resolved per endpoint
	Protocol    string `json:"protocol,omitempty"`   // TCP, UDP, SCTP
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Endpoint is one backend of a Service.
type Endpoint struct {
	// WorkloadUID is the backing pod's uid ("" for an endpoint that is not a pod).
	WorkloadUID string       `json:"workloadUID,omitempty"`
	IPs         []netip.Addr `json:"ips"`
	Ready       bool         `json:"ready"`
	// Ports maps a port name to the endpoint's port number, for named target ports.
	Ports map[string]uint16 `json:"ports,omitempty"`
}

// Port returns the service port numbered port, or nil.
func (s *Service) Port(port uint16) *ServicePort {
	for i := range s.Ports {
		if s.Ports[i].Port == port {
			return &s.Ports[i]
		}
	}
	return nil
}

// TargetPort is the port endpoint e serves service port p on: p's target
// port by number, else e's port of that name (0 when e has none).
func (e *Endpoint) TargetPort(p *ServicePort) uint16 {
	if p.TargetPort != 0 {
		return p.TargetPort
	}
	return e.Ports[p.Name]
}
