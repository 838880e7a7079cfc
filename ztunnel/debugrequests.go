package ztunnel

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/ztunnel/debug"
)

// serveRequests answers debug.RequestsPath: the requests the recorder
// kept, newest first.
func (n *Node) serveRequests(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	workload := q.Get("workload")
	if workload != "" && !isNamespaced(workload) {
		http.Error(w, "bad workload "+strconv.Quote(workload)+": want namespace/name", http.StatusBadRequest)
		return
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l <= 0 {
			http.Error(w, "bad limit "+strconv.Quote(v)+": want a positive number", http.StatusBadRequest)
			return
		}
		limit = l
	}
	out := debug.Requests{Node: n.opts.NodeName, Capacity: n.rec.RecentCapacity(), Requests: n.rec.Recent(workload, limit)}
	for i := range out.Requests {
		out.Requests[i].Node = n.opts.NodeName
	}
	writeJSON(w, out)
}

// isNamespaced reports whether s is namespace/name, both parts set.
func isNamespaced(s string) bool {
	ns, name, ok := strings.Cut(s, "/")
	return ok && ns != "" && name != "" && !strings.Contains(name, "/")
}
