//go:build ignore

// DNS capture: UDP port 53 from enrolled pod network namespaces goes to
// ztunnel's DNS proxy (127.0.0.1:15053, [::1]:15053) in the same netns.
//
//   connect4/6   a connected UDP socket (glibc, Go): the socket is bound to
//                a port first (bpf_bind; the kernel would only autobind
//                after this hook), the upstream recorded, the connect
//                rewritten to the proxy.
//   sendmsg4/6   an unconnected sendto (musl, dig): the kernel autobound
//                the socket before this hook; likewise recorded and
//                rewritten.
//   recvmsg4/6   a reply from the proxy shows the upstream's address as
//   getpeername4/6  its source, and a connected socket the upstream as its
//                peer: resolvers check both.
//
// The proxy learns the upstream a query was addressed to from dns_upstream,
// keyed by (netns cookie, family as the proxy sees it, client port): the
// query arrives from 127.0.0.1 or ::1 and that port.
#include "common.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define DNS_PORT 53

// The ephemeral range bpf_bind picks a port from in connect4/6: the
// kernel's default net.ipv4.ip_local_port_range (a netns may set
// another; a program cannot read it).
#define EPHEMERAL_LO 32768
#define EPHEMERAL_HI 60999
#define BIND_TRIES 8

// The same map as capture.c's (one map when loaded: shared by name).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PODS);
	__type(key, __u64); // netns cookie
	__type(value, __u8);
} enrolled_netns SEC(".maps");

// A DNS client socket as ztunnel's proxy sees it: the pod netns, the
// family of the proxy socket the query reached (AF_INET for IPv4 and
// v4-mapped upstreams, else AF_INET6), the client's port.
struct dns_key {
	__u64 netns_cookie;
	__u16 port;
	__u16 family;
	__u32 pad;
};

// Upstreams the queries were addressed to, read by ztunnel.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct dns_key);
	__type(value, struct orig_addr);
} dns_upstream SEC(".maps");

// The upstream of each captured socket, for recvmsg and getpeername.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // socket cookie
	__type(value, struct orig_addr);
} dns_sock SEC(".maps");

// dns_capture reports whether a UDP connect or sendmsg of ctx is a DNS
// query to capture: port 53, from an enrolled netns, not ztunnel's own.
static __always_inline bool dns_capture(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
		return false;
	if (ctx->user_port != bpf_htons(DNS_PORT))
		return false;
	__u64 ns = bpf_get_netns_cookie(ctx);
	if (!bpf_map_lookup_elem(&enrolled_netns, &ns))
		return false;
	if (is_mesh_mark(ctx->sk->mark)) {
		STAT_INC(dns_bypassed);
		return false;
	}
	return true;
}

// record stores the upstream dst of the socket under its client port;
// 0 on success.
static __always_inline int record(struct bpf_sock_addr *ctx, __u16 port, struct orig_addr *dst)
{
	struct dns_key key = {
		.netns_cookie = bpf_get_netns_cookie(ctx),
		.port = port,
		.family = addr_is_mapped(dst->addr) ? AF_INET : AF_INET6,
	};
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&dns_upstream, &key, dst, BPF_ANY) ||
	    bpf_map_update_elem(&dns_sock, &cookie, dst, BPF_ANY)) {
		STAT_INC(dns_errors);
		return -1;
	}
	STAT_INC(dns_redirected);
	return 0;
}

// bind_port returns the socket's local port, binding it to a random
// ephemeral port on the wildcard address first when it has none (as
// autobind would); 0 when no port was free.
static __always_inline __u16 bind_port(struct bpf_sock_addr *ctx, bool v6)
{
	__u16 port = ctx->sk->src_port;
	if (port)
		return port;
	for (int i = 0; i < BIND_TRIES; i++) {
		port = EPHEMERAL_LO + bpf_get_prandom_u32() % (EPHEMERAL_HI - EPHEMERAL_LO + 1);
		long err;
		if (v6) {
			struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = bpf_htons(port)};
			err = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
		} else {
			struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = bpf_htons(port)};
			err = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
		}
		if (!err)
			return port;
	}
	return 0;
}

static __always_inline void redirect4(struct bpf_sock_addr *ctx)
{
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(DNS_PROXY_PORT);
}

// redirect6 sends IPv6 upstreams to [::1]:15053 and v4-mapped ones to
// ::ffff:127.0.0.1:15053 (the proxy's IPv4 socket).
static __always_inline void redirect6(struct bpf_sock_addr *ctx, const struct orig_addr *dst)
{
	CTX_U32(ctx, user_ip6[0]) = 0;
	CTX_U32(ctx, user_ip6[1]) = 0;
	if (addr_is_mapped(dst->addr)) {
		CTX_U32(ctx, user_ip6[2]) = bpf_htonl(0x0000ffff);
		CTX_U32(ctx, user_ip6[3]) = bpf_htonl(0x7f000001);
	} else {
		CTX_U32(ctx, user_ip6[2]) = 0;
		CTX_U32(ctx, user_ip6[3]) = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(DNS_PROXY_PORT);
}

static __always_inline void upstream6(struct bpf_sock_addr *ctx, struct orig_addr *dst)
{
	addr_set6(dst->addr, CTX_U32(ctx, user_ip6[0]), CTX_U32(ctx, user_ip6[1]),
		  CTX_U32(ctx, user_ip6[2]), CTX_U32(ctx, user_ip6[3]));
	dst->port = DNS_PORT;
}

// A failure leaves the query uncaptured (it goes to its upstream): DNS
// keeps working without the mesh's answers.
SEC("cgroup/connect4")
int dns_connect4(struct bpf_sock_addr *ctx)
{
	if (!dns_capture(ctx))
		return 1;
	struct orig_addr dst = {.port = DNS_PORT};
	addr_set4(dst.addr, ctx->user_ip4);
	__u16 port = bind_port(ctx, false);
	if (!port) {
		STAT_INC(dns_errors);
		return 1;
	}
	if (!record(ctx, port, &dst))
		redirect4(ctx);
	return 1;
}

SEC("cgroup/connect6")
int dns_connect6(struct bpf_sock_addr *ctx)
{
	if (!dns_capture(ctx))
		return 1;
	struct orig_addr dst = {};
	upstream6(ctx, &dst);
	__u16 port = bind_port(ctx, true);
	if (!port) {
		STAT_INC(dns_errors);
		return 1;
	}
	if (!record(ctx, port, &dst))
		redirect6(ctx, &dst);
	return 1;
}

SEC("cgroup/sendmsg4")
int dns_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (!dns_capture(ctx))
		return 1;
	struct orig_addr dst = {.port = DNS_PORT};
	addr_set4(dst.addr, ctx->user_ip4);
	__u16 port = ctx->sk->src_port; // autobound before the hook
	if (!port) {
		STAT_INC(dns_errors);
		return 1;
	}
	if (!record(ctx, port, &dst))
		redirect4(ctx);
	return 1;
}

SEC("cgroup/sendmsg6")
int dns_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (!dns_capture(ctx))
		return 1;
	struct orig_addr dst = {};
	upstream6(ctx, &dst);
	__u16 port = ctx->sk->src_port;
	if (!port) {
		STAT_INC(dns_errors);
		return 1;
	}
	if (!record(ctx, port, &dst))
		redirect6(ctx, &dst);
	return 1;
}

// restore4 shows the upstream instead of 127.0.0.1:15053 on a captured
// socket.
static __always_inline int restore4(struct bpf_sock_addr *ctx)
{
	if (ctx->user_port != bpf_htons(DNS_PROXY_PORT) || ctx->user_ip4 != bpf_htonl(0x7f000001))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_addr *dst = bpf_map_lookup_elem(&dns_sock, &cookie);
	if (!dst || !addr_is_mapped(dst->addr))
		return 1;
	ctx->user_ip4 = ((__u32 *)dst->addr)[3];
	ctx->user_port = bpf_htons(dst->port);
	STAT_INC(dns_restored);
	return 1;
}

// is_proxy_addr reports ::1 and ::ffff:127.0.0.1, the proxy's addresses.
static __always_inline bool is_proxy_addr(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	if (addr_is_mapped(a))
		return w[3] == bpf_htonl(0x7f000001);
	return w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1);
}

// restore6 shows the upstream instead of [::1]:15053 or
// ::ffff:127.0.0.1:15053 on a captured socket.
static __always_inline int restore6(struct bpf_sock_addr *ctx)
{
	if (ctx->user_port != bpf_htons(DNS_PROXY_PORT))
		return 1;
	struct orig_addr from = {};
	upstream6(ctx, &from);
	if (!is_proxy_addr(from.addr))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_addr *dst = bpf_map_lookup_elem(&dns_sock, &cookie);
	if (!dst)
		return 1;
	const __u32 *a = (const __u32 *)dst->addr;
	CTX_U32(ctx, user_ip6[0]) = a[0];
	CTX_U32(ctx, user_ip6[1]) = a[1];
	CTX_U32(ctx, user_ip6[2]) = a[2];
	CTX_U32(ctx, user_ip6[3]) = a[3];
	ctx->user_port = bpf_htons(dst->port);
	STAT_INC(dns_restored);
	return 1;
}

SEC("cgroup/recvmsg4")
int dns_recvmsg4(struct bpf_sock_addr *ctx) { return restore4(ctx); }

SEC("cgroup/recvmsg6")
int dns_recvmsg6(struct bpf_sock_addr *ctx) { return restore6(ctx); }

SEC("cgroup/getpeername4")
int dns_getpeername4(struct bpf_sock_addr *ctx) { return restore4(ctx); }

SEC("cgroup/getpeername6")
int dns_getpeername6(struct bpf_sock_addr *ctx) { return restore6(ctx); }
