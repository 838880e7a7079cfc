// Package ztunnel is AgentMesh's per-node tunnel: one process per node that
// owns listening sockets inside every enrolled pod's network namespace and
// proxies the pods' TCP traffic over HBONE (HTTP/2 CONNECT over mTLS).
//
// # Data path
//
// agentd hands every enrolled pod's netns fd over a unix socket
// (internal/handoff). For each pod the Node enters the netns (netns.Do) and
// opens four sockets there:
//
//	127.0.0.1:15001, [::1]:15001  outbound: the connect4/6 hooks rewrite the
//	                              app's connect() to these
//	[::]:15006                    inbound plaintext: sk_lookup steers every
//	                              other inbound port here
//	[::]:15008                    inbound HBONE
//
// The 15006 and 15008 sockets are registered in the listeners SOCKHASH for
// every pod ip; without them the sk_lookup program refuses inbound
// connections (the mesh fails closed). The pod's SPIFFE identity
// (spiffe://td/ns/NS/sa/SA) gets a certificate from the identity.Manager.
// A pod the mesh config does not know yet stays pending until it does.
//
// Outbound: an accepted 15001 conn's original destination comes from the
// orig_dst map, keyed by (pod netns cookie, conn remote, conn local). If the
// destination ip belongs to an enrolled workload, ztunnel opens an HBONE
// stream to <dst ip>:15008 with :authority <dst ip>:<port>, presenting the
// source pod's certificate and requiring the destination's identity;
// otherwise it connects directly (passthrough, mtls=false). Every upstream
// socket is created inside the source pod's netns with SO_MARK 0x539, so the
// connect hooks let it through and its source address is the pod's.
//
// Inbound HBONE: TLS 1.3 with a client certificate from the mesh CA whose
// SPIFFE id must be the identity of the workload owning the connection's
// source address (no identity spoofing from another address). Each CONNECT
// stream must name one of the pod's addresses; ztunnel then dials the app
// at that address from inside the pod netns (marked) and answers 200, 401
// (denied) or 503 (app unreachable).
//
// Inbound plaintext: sk_lookup keeps the original destination as the
// accepted conn's local address; the connection is delivered to the app if
// the pod's policy admits it (below) and logged with mtls=false.
//
// # Authorization
//
// Every inbound connection is decided by policy.Evaluate with the
// destination workload's current Authz (meshconfig.Workload.Authz, looked
// up per connection in the config in force): an HBONE stream as mTLS from
// its verified identity (and the source workload, if that workload's
// identity is the peer's), a 15006 connection as plaintext from its source
// address (and the workload owning it). A nil Authz is no policy data and
// denies; a STRICT workload refuses all plaintext. A denied HBONE stream is
// answered 401, a denied plaintext connection closed before the app is
// dialed; either logs "connection denied by policy" (Warn) and its access
// line carries authz (the reason) and policy. Admitted connections stay in
// their pod's live set: every SetConfig re-evaluates them and closes those
// the new config denies ("connection closed: no longer allowed by
// policy"), which ends an HBONE stream for its client. Counters:
// ztunnel_policy_decisions_total{decision,policy,reason} per admission
// decision, ztunnel_policy_closed_connections_total{policy,reason} per
// connection closed by a config change. Standalone mode fills in an
// allow-all Authz for workloads the config file gives none (see
// fileSource); Kubernetes mode fills in nothing. GET /debug/authz on the
// admin API shows what the policy decides for a given connection.
//
// Every proxied connection writes one "access" log line (direction,
// protocol, addresses, workloads, identities, mtls, bytes, duration,
// result). Admin (/healthz, /pods, /certs, /config, /debug/authz), readiness
// (/healthz/ready) and Prometheus metrics (/metrics) are served on the
// node's own netns. See Run for the start and shutdown order.
package ztunnel
