// Package ztunnel is AgentMesh's per-node tunnel: one process per node that
// owns listening sockets inside every enrolled pod's network namespace and
// proxies the pods' TCP traffic over HBONE (HTTP/2 CONNECT over mTLS).
//
// This package wires the stages of the connection pipeline together and
// owns the lifecycles; the data path itself reads top to bottom in
// ztunnel/pipeline (see its package comment and docs/internals.md for the
// walk of a connection). Here:
//
//   - Node (node.go): the config in force (SetConfig swaps the index and has
//     the authorizer re-check every live inbound connection), the stages
//     that outlive a connection, and Run, the loop that retries pod set-ups
//     and ends refusal bursts.
//   - Pods (lifecycle.go, pod.go, drain.go, status.go): agentd hands every
//     enrolled pod's netns over (internal/handoff); a pod the config knows
//     gets its certificate, its one listener (podnet) and its SOCKHASH
//     entries (steering.go; without them sk_lookup refuses inbound
//     connections: the mesh fails closed); a pod that opted out is drained.
//   - Connections (conn.go): each accepted socket is told apart by the
//     port it came to (outbound, plaintext or HBONE: podnet.KindOf),
//     admitted by the limits and handed to that pipeline entry on a
//     goroutine the pod owns, which recovers from a panic and closes the
//     socket at the end.
//   - The process (run.go, flags.go, source.go): standalone or
//     Kubernetes mode, the admin API (/healthz, /pods, /certs, /config,
//     /debug/authz, /debug/pprof), readiness, Prometheus metrics, and the
//     start and shutdown order (see Run).
package ztunnel
