//go:build ignore

// Outbound capture: cgroup/connect4 and cgroup/connect6 redirect TCP
// connections made inside enrolled pod network namespaces to ztunnel's
// outbound listener (127.0.0.1:15001, [::1]:15001) and remember the original
// destination by socket cookie; sockops moves it to a map keyed by the
// connection's 4-tuple once established, where ztunnel looks it up.
#include "common.h"

char __license[] SEC("license") = "Dual MIT/GPL";

// Pod network namespaces whose connections are captured.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PODS);
	__type(key, __u64); // netns cookie
	__type(value, __u8);
} enrolled_netns SEC(".maps");

// Original destinations by socket cookie, between connect and ESTABLISHED.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // socket cookie
	__type(value, struct orig_addr);
} orig_dst_cookie SEC(".maps");

// Original destinations by 4-tuple, read (and deleted) by ztunnel.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tuple_key);
	__type(value, struct orig_addr);
} orig_dst SEC(".maps");

// should_capture reports whether a connect() of ctx is to be redirected:
// TCP, from an enrolled netns, without ztunnel's mark.
static __always_inline bool should_capture(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
		return false;
	__u64 ns = bpf_get_netns_cookie(ctx);
	if (!bpf_map_lookup_elem(&enrolled_netns, &ns))
		return false;
	if (is_mesh_mark(ctx->sk->mark)) {
		STAT_INC(connect_bypassed);
		return false;
	}
	return true;
}

// save stores dst for the socket; 0 on success.
static __always_inline int save(struct bpf_sock_addr *ctx, struct orig_addr *dst)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_dst_cookie, &cookie, dst, BPF_ANY)) {
		STAT_INC(connect_errors);
		return -1;
	}
	STAT_INC(connect_redirected);
	return 0;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	if (!should_capture(ctx))
		return 1;
	struct orig_addr dst = {};
	addr_set4(dst.addr, ctx->user_ip4);
	if (addr_is_local(dst.addr))
		return 1;
	dst.port = bpf_ntohs(ctx->user_port);
	if (save(ctx, &dst))
		return 0; // fail closed: the app sees EPERM
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(OUTBOUND_PORT);
	return 1;
}

// connect6 sends real IPv6 destinations to [::1]:15001 and v4-mapped ones
// (dual-stack sockets talking IPv4) to ::ffff:127.0.0.1:15001, which the
// kernel connects over IPv4 to ztunnel's 127.0.0.1:15001.
SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	if (!should_capture(ctx))
		return 1;
	struct orig_addr dst = {};
	addr_set6(dst.addr, CTX_U32(ctx, user_ip6[0]), CTX_U32(ctx, user_ip6[1]),
		  CTX_U32(ctx, user_ip6[2]), CTX_U32(ctx, user_ip6[3]));
	if (addr_is_local(dst.addr))
		return 1;
	dst.port = bpf_ntohs(ctx->user_port);
	if (save(ctx, &dst))
		return 0;
	if (addr_is_mapped(dst.addr)) {
		CTX_U32(ctx, user_ip6[0]) = 0;
		CTX_U32(ctx, user_ip6[1]) = 0;
		CTX_U32(ctx, user_ip6[2]) = bpf_htonl(0x0000ffff);
		CTX_U32(ctx, user_ip6[3]) = bpf_htonl(0x7f000001);
	} else {
		CTX_U32(ctx, user_ip6[0]) = 0;
		CTX_U32(ctx, user_ip6[1]) = 0;
		CTX_U32(ctx, user_ip6[2]) = 0;
		CTX_U32(ctx, user_ip6[3]) = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(OUTBOUND_PORT);
	return 1;
}

// tuple_from_skops fills the connection's key as ztunnel sees it.
static __always_inline void tuple_from_skops(struct bpf_sock_ops *skops, struct tuple_key *key)
{
	key->netns_cookie = bpf_get_netns_cookie(skops);
	if (skops->family == AF_INET) {
		addr_set4(key->src_addr, skops->local_ip4);
		addr_set4(key->dst_addr, skops->remote_ip4);
	} else {
		addr_set6(key->src_addr, CTX_U32(skops, local_ip6[0]), CTX_U32(skops, local_ip6[1]),
			  CTX_U32(skops, local_ip6[2]), CTX_U32(skops, local_ip6[3]));
		addr_set6(key->dst_addr, CTX_U32(skops, remote_ip6[0]), CTX_U32(skops, remote_ip6[1]),
			  CTX_U32(skops, remote_ip6[2]), CTX_U32(skops, remote_ip6[3]));
	}
	key->src_port = skops->local_port;
	// remote_port holds the big-endian port in its upper 16 bits.
	key->dst_port = bpf_ntohl(skops->remote_port);
	key->family = addr_is_mapped(key->dst_addr) ? AF_INET : AF_INET6;
}

SEC("sockops")
int sock_ops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct orig_addr *dst = bpf_map_lookup_elem(&orig_dst_cookie, &cookie);
	if (!dst)
		return 1;
	struct tuple_key key = {};
	tuple_from_skops(skops, &key);
	if (bpf_map_update_elem(&orig_dst, &key, dst, BPF_ANY))
		STAT_INC(sockops_errors);
	else
		STAT_INC(sockops_recorded);
	bpf_map_delete_elem(&orig_dst_cookie, &cookie);
	return 1;
}
