package meshlab

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/agentmesh/agentmesh/test/lab"
)

// printReports prints one row per call and a short legend.
func printReports(w io.Writer, reports []*callReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALL\tADDR\tHTTP\tLATENCY\tMTLS\tCALLER'S ZTUNNEL SAW\tCALLEE'S ZTUNNEL SAW\tBYTES OUT/IN\tON THE WIRE")
	for _, r := range reports {
		fmt.Fprintf(tw, "%s -> %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.from, r.to, r.addr, httpStatus(r), fmt.Sprintf("%.1fms", r.result.LatencyMS),
			mtls(r), peer(r.out, true), peer(r.in, false), bytesOf(r), wire(r))
	}
	tw.Flush()
	fmt.Fprintln(w, `
MTLS: whether each ztunnel carried the connection over mutual TLS (HBONE), from the access logs;
  local: both pods on one node, joined inside its ztunnel, which knows both identities (nothing on the network)
of both nodes; the identities are the SPIFFE ids each side verified in the other's certificate.
ON THE WIRE: whether the reply crossed the bridge between the nodes readable, from a packet capture.`)
}

func httpStatus(r *callReport) string {
	if r.result.Error != "" {
		return "error: " + r.result.Error
	}
	return fmt.Sprint(r.result.Status)
}

// mtls combines the two ends' view.
func mtls(r *callReport) string {
	switch {
	case r.out == nil && r.in == nil:
		return "no access log"
	case r.out != nil && r.in != nil && r.out.MTLS && r.in.MTLS:
		return "yes (both ends)"
	case r.out != nil && r.in != nil && r.out.Protocol == "local" && r.in.Protocol == "local":
		return "local (same node, no network)"
	case r.out != nil && !r.out.MTLS && r.in == nil:
		return "no (" + orDash(r.out.Result) + ")"
	case r.sameNode && r.out != nil && r.in != nil && !r.out.MTLS && !r.in.MTLS:
		return "no (same node, in-process)"
	}
	return fmt.Sprintf("out=%v in=%v", r.out != nil && r.out.MTLS, r.in != nil && r.in.MTLS)
}

// peer is the identity one side saw of the other: the destination's for
// the caller's ztunnel, the source's for the callee's.
func peer(a *lab.AccessLog, outbound bool) string {
	switch {
	case a == nil:
		return "-"
	case outbound:
		return orDash(a.DstIdentity)
	}
	return orDash(a.SrcIdentity)
}

func bytesOf(r *callReport) string {
	if r.out == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", r.out.BytesSent, r.out.BytesReceived)
}

func wire(r *callReport) string {
	switch {
	case r.sameNode:
		return "same node (never on the wire)"
	case r.clear:
		return "PLAINTEXT"
	}
	return "encrypted"
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
