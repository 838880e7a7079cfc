//go:build ignore

// Inbound steering: an sk_lookup program, attached to every enrolled pod
// network namespace, hands TCP connections that arrive from outside the pod
// to ztunnel's listeners in that namespace: port 15008 to the socket
// registered for HBONE, every other port to the one registered for plaintext
// (15006; ztunnel registers one socket for both and tells them apart by the
// port a connection came to). A connection from inside the pod to its own
// address's port 15008 (a pod calling itself through the mesh) is steered
// too. Without a listener the connection is refused (fail closed).
#include "common.h"

char __license[] SEC("license") = "Dual MIT/GPL";

// ztunnel's listening sockets by pod IP and port (15006, 15008); both
// ports of an IP may hold the same socket.
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 4 * MAX_PODS); // two ports, IPv4 and IPv6
	__type(key, struct listener_key);
	__type(value, __u64);
} listeners SEC(".maps");

// The connections ztunnel is delivering to an app from the caller's address
// (IP_TRANSPARENT), recorded by ztunnel before each connect and deleted once
// it returned: their SYN arrives from a foreign address like a connection
// from outside, and must reach the app, not ztunnel again. LRU: entries of
// a ztunnel that died mid-connect age out.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct delivery_key);
	__type(value, __u8);
} deliveries SEC(".maps");

// from_inside reports connections made inside the pod's own netns: to a
// loopback address, from a loopback address, or from the pod's own address.
// (ingress_ifindex cannot tell: for local traffic it is the device owning
// the address, not lo.) ztunnel therefore delivers to the app from the pod
// IP or loopback, or from the caller's address when it recorded the
// connection in deliveries.
static __always_inline bool from_inside(const __u8 *local, const __u8 *remote)
{
	return addr_is_local(local) || addr_is_local(remote) || addr_equal(local, remote);
}

SEC("sk_lookup")
int steer_inbound(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	struct listener_key key = {};
	__u8 remote[16] __attribute__((aligned(4)));
	if (ctx->family == AF_INET) {
		addr_set4(key.addr, ctx->local_ip4);
		addr_set4(remote, ctx->remote_ip4);
	} else {
		addr_set6(key.addr, CTX_U32(ctx, local_ip6[0]), CTX_U32(ctx, local_ip6[1]),
			  CTX_U32(ctx, local_ip6[2]), CTX_U32(ctx, local_ip6[3]));
		addr_set6(remote, CTX_U32(ctx, remote_ip6[0]), CTX_U32(ctx, remote_ip6[1]),
			  CTX_U32(ctx, remote_ip6[2]), CTX_U32(ctx, remote_ip6[3]));
	}
	// A pod's own call to its address's HBONE port is ztunnel's: steered
	// like one from outside (the socket is not bound to 15008).
	bool own_hbone = ctx->local_port == HBONE_PORT && !addr_is_local(key.addr);
	if (from_inside(key.addr, remote) && !own_hbone)
		return SK_PASS;
	struct delivery_key dk = {.local_port = ctx->local_port, .remote_port = bpf_ntohs(ctx->remote_port)};
	__builtin_memcpy(dk.local_addr, key.addr, sizeof(dk.local_addr));
	__builtin_memcpy(dk.remote_addr, remote, sizeof(dk.remote_addr));
	if (bpf_map_lookup_elem(&deliveries, &dk))
		return SK_PASS;
	key.port = ctx->local_port == HBONE_PORT ? HBONE_PORT : INBOUND_PLAINTEXT_PORT;
	struct bpf_sock *sk = bpf_map_lookup_elem(&listeners, &key);
	if (!sk) {
		STAT_INC(lookup_dropped);
		return SK_DROP;
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		STAT_INC(lookup_errors);
		return SK_DROP;
	}
	STAT_INC(lookup_steered);
	return SK_PASS;
}
