package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"
)

// AccessLog is one "access" line of ztunnel's JSON log: one proxied
// connection.
type AccessLog struct {
	Time          time.Time `json:"time"`
	Direction     string    `json:"direction"` // "outbound" or "inbound"
	Protocol      string    `json:"protocol"`
	SrcAddr       string    `json:"src_addr"`
	DstAddr       string    `json:"dst_addr"`
	SrcIdentity   string    `json:"src_identity"`
	DstIdentity   string    `json:"dst_identity"`
	MTLS          bool      `json:"mtls"`
	BytesSent     int64     `json:"bytes_sent"`
	BytesReceived int64     `json:"bytes_received"`
	DurationMS    float64   `json:"duration_ms"`
	Result        string    `json:"result"`
	// Authz is the policy decision's reason when it refused or closed the
	// connection, or admitted it as a kubelet probe ("kubelet-probe").
	Authz string `json:"authz"`
	// DstService is the Service (namespace/name) whose VIP the connection
	// was addressed to, Upstream the endpoint it went to.
	DstService   string `json:"dst_service"`
	UpstreamAddr string `json:"upstream_addr"`
	Attempts     int    `json:"attempts"`
	// AppProtocol is what an outbound flow carries (tcp, http1, ...) and
	// AppProtocolBy how that was decided (declared, sniffed, ...).
	AppProtocol   string `json:"app_protocol"`
	AppProtocolBy string `json:"app_protocol_by"`
}

// Upstream parses UpstreamAddr (zero if it is not ip:port).
func (a AccessLog) Upstream() netip.AddrPort { ap, _ := netip.ParseAddrPort(a.UpstreamAddr); return ap }

// Src parses SrcAddr (zero if it is not ip:port).
func (a AccessLog) Src() netip.AddrPort { ap, _ := netip.ParseAddrPort(a.SrcAddr); return ap }

// Dst parses DstAddr (zero if it is not ip:port).
func (a AccessLog) Dst() netip.AddrPort { ap, _ := netip.ParseAddrPort(a.DstAddr); return ap }

// AccessLogs returns the access lines node i's ztunnel has logged so far
// (across restarts: they share one log file).
func (l *Lab) AccessLogs(i int) ([]AccessLog, error) {
	f, err := os.Open(l.DaemonLog(i, ztunnelKind))
	if err != nil {
		return nil, fmt.Errorf("read access logs: %w", err)
	}
	defer f.Close()
	return ParseAccessLogs(f)
}

// ParseAccessLogs reads JSON log lines and keeps those with msg "access".
// Other lines, JSON or not, are skipped.
func ParseAccessLogs(r io.Reader) ([]AccessLog, error) {
	var out []AccessLog
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Bytes()
		if !bytes.Contains(line, []byte(`"access"`)) {
			continue
		}
		var probe struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(line, &probe) != nil || probe.Msg != "access" {
			continue
		}
		var a AccessLog
		if err := json.Unmarshal(line, &a); err != nil {
			return out, fmt.Errorf("decode access log %q: %w", line, err)
		}
		out = append(out, a)
	}
	if err := s.Err(); err != nil {
		return out, fmt.Errorf("read access logs: %w", err)
	}
	return out, nil
}

// WaitAccessLog waits until node i's ztunnel has logged an access line
// that match accepts, and returns it.
func (l *Lab) WaitAccessLog(ctx context.Context, i int, match func(AccessLog) bool) (AccessLog, error) {
	for {
		logs, err := l.AccessLogs(i)
		if err != nil {
			return AccessLog{}, err
		}
		for _, a := range logs {
			if match(a) {
				return a, nil
			}
		}
		select {
		case <-ctx.Done():
			return AccessLog{}, fmt.Errorf("wait for access log on %s (%d lines so far): %w", nodeName(i), len(logs), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
