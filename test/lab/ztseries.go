package lab

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/api/mesh"
)

// ZtunnelSeries reads node i's ztunnel's series whose name is name, by
// their labels as written in the exposition (`outcome="answered"`; "" for
// an unlabelled series).
func (l *Lab) ZtunnelSeries(ctx context.Context, i int, name string) (map[string]float64, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", mesh.MetricsPort)
	code, body, err := l.httpGet(ctx, i, url)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %d", url, code)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		series, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		n, labels, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[strings.TrimSuffix(labels, "}")] = f
		}
	}
	return out, nil
}
