package bpf

import (
	"path/filepath"
	"strconv"
)

// Layout of the pins under a pin directory (default mesh.DefaultPinDir):
//
//	<pin-dir>/maps/<map name>          every map, by the names below
//	<pin-dir>/progs/<program>          connect4, connect6, sockops, sk_lookup, dns_*, accel_*
//	<pin-dir>/links/<program>          connect4, connect6, sockops, dns_*, accel_sockops (cgroup links)
//	<pin-dir>/links/sk_lookup_<cookie> the netns link of each enrolled pod
const (
	MapsDir  = "maps"
	ProgsDir = "progs"
	LinksDir = "links"
)

// Map names, in the ELF objects and under <pin-dir>/maps.
const (
	MapEnrolledNetns = "enrolled_netns"  // HASH: netns cookie (u64) -> u8
	MapOrigDstCookie = "orig_dst_cookie" // LRU_HASH: socket cookie -> struct orig_addr
	MapOrigDst       = "orig_dst"        // LRU_HASH: struct tuple_key -> struct orig_addr
	MapListeners     = "listeners"       // SOCKHASH: struct listener_key -> listening socket
	MapStats         = "stats"           // PERCPU_ARRAY: key 0 -> struct counters
	MapDNSUpstream   = "dns_upstream"    // LRU_HASH: struct dns_key -> struct orig_addr
	MapDNSSock       = "dns_sock"        // LRU_HASH: socket cookie -> struct orig_addr
	MapDeliveries    = "deliveries"      // LRU_HASH: struct delivery_key -> u8, deliveries from the caller's address

	// Loopback-leg acceleration (sockmap.c), only with agentd --sockmap-accel.
	MapAccelSocks   = "accel_socks"    // SOCKHASH: struct sock_key -> established loopback socket
	MapAccelTCPOnly = "accel_tcp_only" // LRU_HASH: struct sock_key -> u8, senders kept on TCP
	MapAccelStats   = "accel_stats"    // PERCPU_ARRAY: key 0 -> struct accel_counters
)

// Program (and link) pin names under <pin-dir>/progs and <pin-dir>/links.
const (
	ProgConnect4 = "connect4"  // cgroup/connect4
	ProgConnect6 = "connect6"  // cgroup/connect6
	ProgSockOps  = "sockops"   // cgroup sock_ops
	ProgSkLookup = "sk_lookup" // sk_lookup, one link per enrolled netns

	// DNS capture (dns.c), each a cgroup link like connect4.
	ProgDNSConnect4     = "dns_connect4"     // cgroup/connect4, UDP port 53
	ProgDNSConnect6     = "dns_connect6"     // cgroup/connect6, UDP port 53
	ProgDNSSendmsg4     = "dns_sendmsg4"     // cgroup/sendmsg4
	ProgDNSSendmsg6     = "dns_sendmsg6"     // cgroup/sendmsg6
	ProgDNSRecvmsg4     = "dns_recvmsg4"     // cgroup/recvmsg4
	ProgDNSRecvmsg6     = "dns_recvmsg6"     // cgroup/recvmsg6
	ProgDNSGetpeername4 = "dns_getpeername4" // cgroup/getpeername4
	ProgDNSGetpeername6 = "dns_getpeername6" // cgroup/getpeername6

	// Loopback-leg acceleration (sockmap.c), only with agentd --sockmap-accel.
	ProgAccelSockOps = "accel_sockops" // cgroup sock_ops, a cgroup link like sockops
	ProgAccelSkMsg   = "accel_sk_msg"  // sk_msg, attached to the accel_socks map (no link)
)

// SkLookupLinkPrefix starts the name of every per-netns sk_lookup link pin.
const SkLookupLinkPrefix = ProgSkLookup + "_"

// MapPin is the pin path of the map name under pinDir.
func MapPin(pinDir, name string) string { return filepath.Join(pinDir, MapsDir, name) }

// ProgPin is the pin path of the program name under pinDir.
func ProgPin(pinDir, name string) string { return filepath.Join(pinDir, ProgsDir, name) }

// LinkPin is the pin path of the link name under pinDir.
func LinkPin(pinDir, name string) string { return filepath.Join(pinDir, LinksDir, name) }

// SkLookupLinkName is the link pin name of the netns with the given cookie.
func SkLookupLinkName(netnsCookie uint64) string {
	return SkLookupLinkPrefix + strconv.FormatUint(netnsCookie, 10)
}
