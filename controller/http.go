package controller

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentmesh/agentmesh/controller/debug"
	"github.com/agentmesh/agentmesh/controller/stream"
)

// statusDoc is the /status document.
type statusDoc struct {
	ID       string                                       `json:"id"`
	Leader   bool                                         `json:"leader"`
	LeaderID string                                       `json:"leaderID,omitempty"`
	Versions map[string]uint64                            `json:"versions"` // node -> current view version
	Nodes    map[string]map[string]stream.ComponentStatus `json:"nodes"`    // node -> component -> stream
}

func adminHandler(reg *prometheus.Registry, srv *stream.Server, hub *stream.Hub, l *leader, id string, dbg debugWorkload) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+debug.WorkloadPath, dbg)
	mux.Handle("GET "+debug.ServicePath, debugService{hub: hub})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-hub.Ready():
			w.Write([]byte("ok\n"))
		default:
			http.Error(w, "informer caches not synced", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		d := statusDoc{ID: id, Versions: hub.Versions(), Nodes: srv.Status()}
		d.Leader, d.LeaderID = l.status()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(d)
	})
	return mux
}
