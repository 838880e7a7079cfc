//go:build ignore

// Loopback-leg acceleration (agentd --sockmap-accel): inside an enrolled pod
// netns, the app's socket and ztunnel's socket of one connection are both
// put into a SOCKHASH once established (sockops), and every message the app
// sends is moved straight into ztunnel's socket's receive queue (sk_msg,
// bpf_msg_redirect_hash with BPF_F_INGRESS) instead of going through the
// loopback TCP stack.
//
// Only the direction toward ztunnel is redirected. Redirected bytes wait in
// the receiving socket's own queue, which recvmsg reads but splice(2) does
// not: a receiver that splices (HAProxy, a Go program's io.Copy between two
// TCP sockets) would see the FIN that follows them and not the bytes. An
// app is never such a receiver here; ztunnel does not splice from a socket
// in accel_socks (bpf.AccelSocks). ztunnel's sockets are the ones accepted
// on its outbound port and the ones it marked with SOCKET_MARK (delivery to
// the app); their key says so (ztunnel = 1) and a sender only looks up a
// ztunnel peer.
//
// Only connections whose ends are both on loopback addresses (127.0.0.0/8,
// ::1) or both on the same address (a pod's own IP, which the kernel also
// routes over lo) are inserted; the key carries the netns cookie, so a
// socket is only ever joined to the other end of its own connection in its
// own netns. A socket leaves the SOCKHASH when it closes.
//
// Ordering: a redirected receiver reads its redirected queue before its TCP
// receive queue, so one direction of a connection must be either all
// redirected or all TCP. The only way to mix them is a sender whose peer is
// not (yet) in the SOCKHASH: the client is inserted at
// ACTIVE_ESTABLISHED, the accepted socket only when the handshake's last
// ACK arrives, or never (a peer outside the cgroup, a full map, an MPTCP
// socket). Such a sender goes on the TCP path and is remembered in
// accel_tcp_only for the rest of its life.
#include "common.h"

char __license[] SEC("license") = "Dual MIT/GPL";

// A socket of one connection: its own address and port and its peer's, in
// the netns with netns_cookie. The peer's key swaps local and remote.
struct sock_key {
	__u64 netns_cookie;
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
	__u16 ztunnel; // 1: a socket of ztunnel's (accepted on 15001, or marked)
	__u16 pad;
};

// Shared with capture.c (maps of the same name are one map).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PODS);
	__type(key, __u64); // netns cookie
	__type(value, __u8);
} enrolled_netns SEC(".maps");

// The established loopback sockets of enrolled netns.
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, __u64);
} accel_socks SEC(".maps");

// The acceleration's own counters (not in the shared stats map, whose
// layout capture.c, steer.c and dns.c pin: an optional feature must not
// change it). Per CPU, summed by bpf.ReadAccelCounters.
struct accel_counters {
	__u64 accel_inserted;      // sockops: loopback socket put into accel_socks
	__u64 accel_insert_errors; // sockops: accel_socks update failed (full, MPTCP)
	__u64 accel_redirected;    // sk_msg: message moved to the peer socket's receive queue
	__u64 accel_passed;        // sk_msg: no peer socket, message sent over TCP
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct accel_counters);
} accel_stats SEC(".maps");

static __always_inline struct accel_counters *accel_stats_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&accel_stats, &zero);
}

#define ACCEL_INC(field)                                        \
	do {                                                    \
		struct accel_counters *c__ = accel_stats_get(); \
		if (c__)                                        \
			c__->field++;                           \
	} while (0)

// Senders that found no peer once: they stay on the TCP path. Cleared when
// a new connection with the same key is established.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, __u8);
} accel_tcp_only SEC(".maps");

static __always_inline bool addr_is_loopback(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	if (addr_is_mapped(a))
		return a[12] == 127;
	return w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1);
}

// key_from_skops fills the key of the socket of skops.
static __always_inline void key_from_skops(struct bpf_sock_ops *skops, struct sock_key *key)
{
	key->netns_cookie = bpf_get_netns_cookie(skops);
	if (skops->family == AF_INET) {
		addr_set4(key->local_addr, skops->local_ip4);
		addr_set4(key->remote_addr, skops->remote_ip4);
	} else {
		addr_set6(key->local_addr, CTX_U32(skops, local_ip6[0]), CTX_U32(skops, local_ip6[1]),
			  CTX_U32(skops, local_ip6[2]), CTX_U32(skops, local_ip6[3]));
		addr_set6(key->remote_addr, CTX_U32(skops, remote_ip6[0]), CTX_U32(skops, remote_ip6[1]),
			  CTX_U32(skops, remote_ip6[2]), CTX_U32(skops, remote_ip6[3]));
	}
	key->local_port = skops->local_port;
	// remote_port holds the big-endian port in its upper 16 bits.
	key->remote_port = bpf_ntohl(skops->remote_port);
	struct bpf_sock *sk = skops->sk;
	if (key->local_port == OUTBOUND_PORT || (sk && sk->mark == SOCKET_MARK))
		key->ztunnel = 1;
}

SEC("sockops")
int accel_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;
	struct sock_key key = {};
	key_from_skops(skops, &key);
	if (!bpf_map_lookup_elem(&enrolled_netns, &key.netns_cookie))
		return 1;
	if (!(addr_is_loopback(key.local_addr) && addr_is_loopback(key.remote_addr)) &&
	    !addr_equal(key.local_addr, key.remote_addr))
		return 1;
	bpf_map_delete_elem(&accel_tcp_only, &key);
	if (bpf_sock_hash_update(skops, &accel_socks, &key, BPF_ANY))
		ACCEL_INC(accel_insert_errors);
	else
		ACCEL_INC(accel_inserted);
	return 1;
}

SEC("sk_msg")
int accel_sk_msg(struct sk_msg_md *msg)
{
	// The peer's key: this socket's with local and remote swapped.
	struct sock_key peer = {};
	peer.netns_cookie = bpf_get_netns_cookie(msg);
	if (msg->family == AF_INET) {
		addr_set4(peer.local_addr, msg->remote_ip4);
		addr_set4(peer.remote_addr, msg->local_ip4);
	} else {
		addr_set6(peer.local_addr, CTX_U32(msg, remote_ip6[0]), CTX_U32(msg, remote_ip6[1]),
			  CTX_U32(msg, remote_ip6[2]), CTX_U32(msg, remote_ip6[3]));
		addr_set6(peer.remote_addr, CTX_U32(msg, local_ip6[0]), CTX_U32(msg, local_ip6[1]),
			  CTX_U32(msg, local_ip6[2]), CTX_U32(msg, local_ip6[3]));
	}
	peer.local_port = bpf_ntohl(msg->remote_port);
	peer.remote_port = msg->local_port;
	peer.ztunnel = 1; // only toward ztunnel

	struct sock_key self = peer;
	__builtin_memcpy(self.local_addr, peer.remote_addr, 16);
	__builtin_memcpy(self.remote_addr, peer.local_addr, 16);
	self.local_port = peer.remote_port;
	self.remote_port = peer.local_port;
	self.ztunnel = 0;
	struct bpf_sock *sk = msg->sk;
	if (self.local_port == OUTBOUND_PORT || (sk && sk->mark == SOCKET_MARK))
		return SK_PASS; // ztunnel's own: toward the app stays on TCP
	if (bpf_map_lookup_elem(&accel_tcp_only, &self)) {
		ACCEL_INC(accel_passed);
		return SK_PASS;
	}
	if (bpf_msg_redirect_hash(msg, &accel_socks, &peer, BPF_F_INGRESS) == SK_PASS) {
		ACCEL_INC(accel_redirected);
		return SK_PASS;
	}
	// No peer: this socket stays on the TCP path from now on.
	__u8 one = 1;
	bpf_map_update_elem(&accel_tcp_only, &self, &one, BPF_ANY);
	ACCEL_INC(accel_passed);
	return SK_PASS;
}
