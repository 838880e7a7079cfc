// Shared types, maps and helpers of the AgentMesh eBPF programs.
// Addresses are 16 bytes, IPv4 as v4-mapped IPv6 (::ffff:a.b.c.d), in network
// byte order; ports are in host byte order.
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2

// CTX_U32 is the 32-bit context field at its fixed UAPI offset. The verifier
// rewrites context accesses and rejects the pointer arithmetic that CO-RE
// relocations of array elements (user_ip6[i], local_ip6[i]) produce, so
// these are addressed without relocation.
#define CTX_U32(ctx, field) \
	(*(volatile __u32 *)((void *)(ctx) + __builtin_offsetof(typeof(*(ctx)), field)))

// Kept in sync with internal/mesh.
#define OUTBOUND_PORT 15001
#define INBOUND_PLAINTEXT_PORT 15006
#define HBONE_PORT 15008
#define DNS_PROXY_PORT 15053
#define SOCKET_MARK 0x539

// The enrolled pods a node holds (bpf.MaxPods): enrolled_netns has an
// entry per pod, listeners four (15006 and 15008, IPv4 and IPv6).
#define MAX_PODS 16384
// ztunnel's delivery sockets that connect from the caller's address
// (IP_TRANSPARENT); the capture lets them through like SOCKET_MARK.
#define DELIVERY_MARK 0x53a

// is_mesh_mark reports a socket of ztunnel's (either mark).
#define is_mesh_mark(m) ((m) == SOCKET_MARK || (m) == DELIVERY_MARK)

// The original destination of a redirected connection.
struct orig_addr {
	__u8 addr[16] __attribute__((aligned(4)));
	__u16 port;
	__u16 pad;
};

// An app socket's connection as ztunnel sees it after the redirect:
// src = the app's address, dst = 127.0.0.1:15001 or [::1]:15001.
// family is AF_INET when dst_addr is v4-mapped, else AF_INET6.
struct tuple_key {
	__u64 netns_cookie;
	__u8 src_addr[16];
	__u8 dst_addr[16];
	__u16 src_port;
	__u16 dst_port;
	__u16 family;
	__u16 pad;
};

// A pod IP and one of ztunnel's inbound ports (15006 or 15008).
struct listener_key {
	__u8 addr[16] __attribute__((aligned(4)));
	__u16 port;
	__u16 pad;
};

// A connection ztunnel is delivering to an app from the caller's address:
// the app's end (local) and the caller's (remote), as sk_lookup sees its
// SYN.
struct delivery_key {
	__u8 local_addr[16] __attribute__((aligned(4)));
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
};

// Per-CPU counters, one entry at key 0.
struct counters {
	__u64 connect_redirected; // connect4/6: rewritten to ztunnel's 15001
	__u64 connect_bypassed;   // connect4/6: enrolled netns, socket has SocketMark
	__u64 connect_errors;     // connect4/6: orig_dst_cookie full; connect refused
	__u64 sockops_recorded;   // sockops: orig_dst entry written
	__u64 sockops_errors;     // sockops: orig_dst update failed
	__u64 lookup_steered;     // sk_lookup: assigned to a ztunnel listener
	__u64 lookup_dropped;     // sk_lookup: no listener, refused (fail closed)
	__u64 lookup_errors;      // sk_lookup: bpf_sk_assign failed, refused
	__u64 dns_redirected;     // dns connect/sendmsg: UDP port 53 sent to ztunnel's 15053
	__u64 dns_bypassed;       // dns connect/sendmsg: enrolled netns, socket has SocketMark
	__u64 dns_errors;         // dns connect/sendmsg: no port or map full; left uncaptured
	__u64 dns_restored;       // dns recvmsg/getpeername: 15053 shown as the upstream again
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

static __always_inline struct counters *stats_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&stats, &zero);
}

#define STAT_INC(field)                          \
	do {                                     \
		struct counters *s__ = stats_get(); \
		if (s__)                         \
			s__->field++;            \
	} while (0)

// addr_set4 stores the IPv4 address ip4 (network order) v4-mapped.
static __always_inline void addr_set4(__u8 *dst, __u32 ip4)
{
	__u32 *d = (__u32 *)dst;
	d[0] = 0;
	d[1] = 0;
	d[2] = bpf_htonl(0x0000ffff);
	d[3] = ip4;
}

static __always_inline void addr_set6(__u8 *dst, __u32 a0, __u32 a1, __u32 a2, __u32 a3)
{
	__u32 *d = (__u32 *)dst;
	d[0] = a0;
	d[1] = a1;
	d[2] = a2;
	d[3] = a3;
}

static __always_inline bool addr_is_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

// addr_is_local reports loopback or unspecified addresses (127/8, 0.0.0.0,
// ::1, ::), which never leave the namespace.
static __always_inline bool addr_is_local(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	if (addr_is_mapped(a))
		return a[12] == 127 || w[3] == 0;
	return w[0] == 0 && w[1] == 0 && w[2] == 0 && (w[3] == 0 || w[3] == bpf_htonl(1));
}

static __always_inline bool addr_equal(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}
