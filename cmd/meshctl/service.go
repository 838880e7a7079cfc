package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"

	ztdebug "github.com/agentmesh/agentmesh/ztunnel/debug"
)

// endpointsFlags are service endpoints' flags.
type endpointsFlags struct {
	service        string
	ztunnel        string
	ztunnelNS      string
	output         string
	requestTimeout time.Duration
}

func parseEndpointsFlags(args []string, stderr io.Writer) (*endpointsFlags, error) {
	var f endpointsFlags
	fs := flag.NewFlagSet("meshctl service endpoints", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: meshctl service endpoints <namespace>/<service> [flags]")
		fs.PrintDefaults()
	}
	fs.StringVar(&f.ztunnel, "ztunnel", "http://127.0.0.1:15000", "admin endpoint of the ztunnel whose view to show (a client's node)")
	fs.StringVar(&f.ztunnelNS, "ztunnel-netns", "", "reach ztunnel from inside this network namespace (path)")
	fs.StringVar(&f.output, "o", "text", "output: text or json")
	fs.DurationVar(&f.requestTimeout, "timeout", 10*time.Second, "timeout of the request")
	// The service may come before or after the flags.
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		f.service, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var errs []error
	rest := fs.Args()
	if f.service == "" && len(rest) > 0 {
		f.service, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", rest))
	}
	if !isPodRef(f.service) {
		errs = append(errs, fmt.Errorf("service %q: want <namespace>/<name>", f.service))
	}
	if f.output != "text" && f.output != "json" {
		errs = append(errs, fmt.Errorf("-o %q: want text or json", f.output))
	}
	return &f, errors.Join(errs...)
}

// serviceEndpoints runs "meshctl service endpoints": the endpoints of a
// Service as one node's ztunnel balances them.
func serviceEndpoints(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, err := parseEndpointsFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "meshctl service endpoints:", err)
		return 2
	}
	zt, err := newEndpoint("ztunnel", f.ztunnel, f.ztunnelNS, f.requestTimeout)
	if err != nil {
		fmt.Fprintln(stderr, "meshctl service endpoints:", err)
		return 2
	}
	var svcs []ztdebug.Service
	if err := zt.get(ctx, ztdebug.ServicesPath, url.Values{"service": {f.service}}, &svcs); err != nil {
		fmt.Fprintln(stderr, "meshctl service endpoints:", err)
		return 1
	}
	if len(svcs) != 1 {
		fmt.Fprintf(stderr, "meshctl service endpoints: ztunnel answered %d services for %s\n", len(svcs), f.service)
		return 1
	}
	if f.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(svcs[0]); err != nil {
			fmt.Fprintln(stderr, "meshctl service endpoints:", err)
			return 1
		}
		return 0
	}
	printService(stdout, &svcs[0])
	return 0
}

func printService(w io.Writer, s *ztdebug.Service) {
	vips := make([]string, len(s.VIPs))
	for i, v := range s.VIPs {
		vips[i] = v.String()
	}
	ports := make([]string, len(s.Ports))
	for i, p := range s.Ports {
		ports[i] = fmt.Sprintf("%d->%s", p.Port, p.TargetPort)
		if p.Name != "" {
			ports[i] = p.Name + " " + ports[i]
		}
	}
	fmt.Fprintf(w, "service %s/%s  vips %s  ports %s\n", s.Namespace, s.Name, cmp.Or(strings.Join(vips, ","), "(headless)"), strings.Join(ports, ", "))
	if len(s.Routes) > 0 {
		fmt.Fprintln(w, "routes (a request takes the first that fits):")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROUTE\tRULE\tPORT\tMATCH\tBACKENDS\tTIMEOUT\tRETRY")
		for _, r := range s.Routes {
			port := "*"
			if r.Port != 0 {
				port = fmt.Sprint(r.Port)
			}
			fmt.Fprintf(tw, "%s %s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Kind, r.Name, r.Rule, port, r.Match, backends(r.Backends),
				timeouts(r.Timeout, r.Backend), retry(r))
		}
		tw.Flush()
	}
	if tp := s.Traffic; tp != nil {
		fmt.Fprintf(w, "traffic policy %s\n", cmp.Or(tp.Name, "(unnamed)"))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tPOD\tREADY\tTRANSPORT\tEWMA\tOPEN\tPICKS\tFAILURES\tEJECTED\tIDENTITY")
	for _, e := range s.Endpoints {
		transport := "plain tcp"
		if e.Mesh {
			transport = "hbone"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%.2fms\t%d\t%d\t%d\t%v\t%s\n", addrs(e.Addrs), cmp.Or(e.Workload, "-"), e.Ready,
			transport, e.EWMAMillis, e.Open, e.Picks, e.Failures, e.Ejected, cmp.Or(e.Identity, "-"))
	}
	tw.Flush()
	if len(s.Endpoints) == 0 {
		fmt.Fprintln(w, "no endpoints: connections to it are refused")
	}
}

func addrs(as []netip.Addr) string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return strings.Join(out, ",")
}

// backends is a route's backends with their share: "ns/v1:8080 90%,
// ns/v2:8080 10%".
func backends(bs []meshconfig.Backend) string {
	var total uint64
	for _, b := range bs {
		total += uint64(b.Weight)
	}
	if total == 0 {
		return "none (500)"
	}
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = fmt.Sprintf("%s:%d %.4g%%", b.Service, b.Port, 100*float64(b.Weight)/float64(total))
	}
	return strings.Join(out, ", ")
}

func timeouts(request, backend string) string {
	switch {
	case request == "" && backend == "":
		return "-"
	case backend == "":
		return request
	}
	return cmp.Or(request, "-") + " (try " + backend + ")"
}

func retry(r ztdebug.Route) string {
	if r.Retry == nil {
		return "-"
	}
	return fmt.Sprintf("%dx on %v after %s", r.Retry.Attempts, r.Retry.Codes, r.Retry.Backoff)
}
