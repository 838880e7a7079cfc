package ztunnel

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentmesh/agentmesh/ztunnel/debug"
)

// AdminHandler serves the admin API (bind it to localhost only):
//
//	GET /healthz  200 "ok" while the process runs
//	GET /pods     handed-over pods with their listeners (JSON)
//	GET /certs    workload certificates (JSON)
//	GET /config   the mesh config in force (JSON)
//	GET /debug/authz?from=<ns/pod|ip>&to=<ns/pod>&port=<n>
//	              what the policy in force decides for that connection
//	              (debug.Authz as JSON). from an enrolled workload is mTLS
//	              with its identity; from any other workload or a bare ip
//	              it is plaintext from that address. to must run on this
//	              node (400 otherwise: only its node has its policy data);
//	              404 for an unknown workload, 400 for a bad port.
//	GET /debug/services[?service=<namespace>/<name>]
//	              the Services this node routes (all, or the one named;
//	              404 for one it does not know): VIPs, ports, endpoints with
//	              workload, identity, readiness, HBONE or plain, and the
//	              balancer's state (connect latency EWMA, open connections,
//	              picks, failures) as []debug.Service JSON.
//	GET /debug/requests[?workload=<namespace>/<name>][&limit=<n>]
//	              the last requests proxied per request that the node
//	              keeps (--recent-requests), newest first, those from or
//	              to the workload named (its Deployment, ... or its pod)
//	              or all, at most limit, as debug.Requests JSON; 400 for a
//	              bad workload or limit.
//	GET /debug/pprof/...
//	              Go's runtime profiles (net/http/pprof): heap, allocs,
//	              goroutine, profile?seconds=N (CPU), trace.
func (n *Node) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /pods", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, n.Pods())
	})
	mux.HandleFunc("GET /certs", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, n.opts.Certs.Snapshot())
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, n.Index().Config)
	})
	mux.HandleFunc("GET "+debug.AuthzPath, n.serveAuthzCheck)
	mux.HandleFunc("GET "+debug.ServicesPath, n.serveServices)
	mux.HandleFunc("GET "+debug.RequestsPath, n.serveRequests)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// ReadyHandler serves GET /healthz/ready: 200 once Ready, else 503 with the
// reason.
func (n *Node) ReadyHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := n.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		// The pid tells apart two ztunnels sharing the port (an upgrade).
		fmt.Fprintf(w, "ready (pid %d)\n", os.Getpid())
	})
	return mux
}

// MetricsHandler serves GET /metrics from reg.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
