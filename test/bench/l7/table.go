package l7

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// rowNotes say how each row's traffic went.
var rowNotes = [...]string{
	Direct:   "pod IP, outside the mesh",
	L4:       "Service VIP, port appProtocol tcp: bytes over HBONE",
	L7:       "Service VIP, appProtocol http / agentmesh.io/mcp: per request in the source tunnel",
	L7Policy: "as mesh L7, and an AgentPolicy with http and mcp rules: the destination tunnel decides each request",
}

// WriteTable prints the HTTP and the MCP table of r, with each mesh row's
// ratio to direct and what the tunnels spent.
func WriteTable(w io.Writer, r *Result) {
	o := r.Options
	fmt.Fprintf(w, "L7: HTTP/1.1 keep-alive requests n1 -> n2, open loop at %.0f req/s over %d connections, %d-byte bodies each way, %v per row\n",
		o.Rate, o.Conns, o.Size, o.Duration)
	fmt.Fprintf(w, "(ztunnels run with --http-per-request; CPU is both ztunnels' per 1000 answered requests, RSS both after the row)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "row\tp50\tp99\tp50 vs direct\tp99 vs direct\tanswered\tztunnel CPU /1000 req\tztunnel RSS\trequests counted src/dst\t")
	direct := r.find(Direct)
	for _, row := range r.Rows {
		h := row.HTTP.Result
		var d50, d99 float64
		if direct != nil {
			d50, d99 = direct.HTTP.Result.P50us, direct.HTTP.Result.P99us
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t\n", row.Kind, us(h.P50us), us(h.P99us),
			vs(row.Kind, h.P50us, d50, true), vs(row.Kind, h.P99us, d99, true), h.Count, h.Scheduled,
			cpu(row.HTTP.Cost), rss(row.HTTP.Cost), counted(row.Kind, row.HTTP.Src, row.HTTP.Dst))
	}
	tw.Flush()

	fmt.Fprintf(w, "\nL7: MCP tools/call (go-sdk client and server, streamable HTTP), %d sessions calling back to back for %v per row\n", o.Sessions, o.MCPDuration)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "row\tcalls/s\tvs direct\tp50\tp99\terrors\tztunnel CPU /1000 calls\tztunnel RSS\trequests counted src/dst\t")
	for _, row := range r.Rows {
		m := row.MCP.Result
		var drate float64
		if direct != nil {
			drate = direct.MCP.Result.PerSecond
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t\n", row.Kind, m.PerSecond, vs(row.Kind, m.PerSecond, drate, false),
			us(m.P50us), us(m.P99us), m.Errors, cpu(row.MCP.Cost), rss(row.MCP.Cost), counted(row.Kind, row.MCP.Src, row.MCP.Dst))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, row := range r.Rows {
		fmt.Fprintf(w, "  %-17s %s\n", row.Kind.String()+":", rowNotes[row.Kind])
		if row.Err != nil {
			fmt.Fprintf(w, "  %-17s FAILED: %v\n", "", row.Err)
		}
	}
}

func (r *Result) find(k Kind) *Row {
	for i := range r.Rows {
		if r.Rows[i].Kind == k {
			return &r.Rows[i]
		}
	}
	return nil
}

func us(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", v)
}

// vs is v against the direct row's base: a ratio, and for latencies
// (added) the difference too.
func vs(k Kind, v, base float64, added bool) string {
	if k == Direct || base == 0 || v == 0 {
		return "-"
	}
	if added {
		return fmt.Sprintf("x%.2f (%+.0f µs)", v/base, v-base)
	}
	return fmt.Sprintf("x%.2f", v/base)
}

func cpu(c *Cost) string {
	if c == nil {
		return "-"
	}
	return c.CPUPer1000.Round(100 * time.Microsecond).String()
}

func rss(c *Cost) string {
	if c == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(c.RSS)/(1<<20))
}

func counted(k Kind, src, dst float64) string {
	if k == Direct {
		return "-"
	}
	return strings.TrimSpace(fmt.Sprintf("%.0f/%.0f", src, dst))
}
