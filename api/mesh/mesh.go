// Package mesh holds the constants every AgentMesh component agrees on:
// the ports inside an enrolled pod's network namespace, the socket mark that
// tells the eBPF programs a socket belongs to ztunnel, and default paths.
package mesh

// Ports inside every enrolled pod network namespace.
const (
	// OutboundPort is where cgroup/connect4 and connect6 redirect the pod's
	// outgoing connections (127.0.0.1 and [::1]).
	OutboundPort = 15001
	// InboundPlaintextPort receives connections from outside the pod to any
	// port other than HBONEPort (steered there by sk_lookup).
	InboundPlaintextPort = 15006
	// HBONEPort is the mutual-TLS HTTP/2 CONNECT listener.
	HBONEPort = 15008
	// DNSPort is ztunnel's DNS proxy.
	DNSPort = 15053
)

// Ports of ztunnel itself, in its own (the node's) network namespace.
const (
	AdminPort     = 15000 // localhost only
	MetricsPort   = 15020
	ReadinessPort = 15021
)

// SocketMark is set (SO_MARK) on every socket ztunnel opens inside a pod
// network namespace, so that the capture programs let it through.
const SocketMark = 0x539

// Deliveries from the caller's address: ztunnel connects to the app in a
// pod netns from the caller's IP (IP_TRANSPARENT), with DeliveryMark
// instead of SocketMark (the capture lets both through). In the pod netns
// net.ipv4.tcp_fwmark_accept gives the app's accepted socket that mark,
// and a rule (DeliveryRulePriority: fwmark DeliveryMark lookup
// DeliveryRouteTable, whose one route is local default dev lo, IPv4 and
// IPv6) keeps its replies to the caller's address inside the netns, where
// ztunnel's socket takes them.
const (
	DeliveryMark         = 0x53a
	DeliveryRouteTable   = 0x53a
	DeliveryRulePriority = 0x53a
)

// Default locations on a node.
const (
	DefaultPinDir       = "/sys/fs/bpf/agentmesh"
	DefaultAgentdSocket = "/var/run/agentmesh/agentd.sock"
	DefaultTrustDomain  = "cluster.local"
)
