package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	ztdebug "github.com/agentmesh/agentmesh/ztunnel/debug"
)

// requestsFlags are meshctl requests' flags.
type requestsFlags struct {
	tunnels  []nodeURL
	workload string
	limit    int
	output   string
	timeout  time.Duration
}

func parseRequestsFlags(args []string, stderr io.Writer) (*requestsFlags, error) {
	f := requestsFlags{}
	fs := flag.NewFlagSet("meshctl requests", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: meshctl requests [flags]\n\nThe last HTTP requests the node tunnels proxied per request (with --http-per-request, or decided one by one under\nL7 policy at the destination), newest first, from each tunnel's ring of recent requests (ztunnel --recent-requests),\nmerged by time. A request between two nodes is listed by both tunnels (REPORTER source and destination).")
		fs.PrintDefaults()
	}
	fs.Func("ztunnel", "a ztunnel's admin URL, [netns-path=]http://host:port, one per node (repeatable; default http://127.0.0.1:15000)", func(v string) error {
		f.tunnels = append(f.tunnels, parseNodeURL(v))
		return nil
	})
	fs.StringVar(&f.workload, "workload", "", "only requests from or to this workload, <namespace>/<name> (a Deployment, StatefulSet, ... or a pod)")
	fs.IntVar(&f.limit, "limit", 100, "at most this many requests, the newest (0: all the tunnels keep)")
	fs.StringVar(&f.output, "o", "text", "output: text or json")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "timeout of each read")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if len(f.tunnels) == 0 {
		f.tunnels = []nodeURL{{url: "http://127.0.0.1:15000"}}
	}
	if f.workload != "" && !isPodRef(f.workload) {
		errs = append(errs, fmt.Errorf("--workload %q: want <namespace>/<name>", f.workload))
	}
	if f.limit < 0 {
		errs = append(errs, fmt.Errorf("--limit %d: want 0 or more", f.limit))
	}
	if f.output != "text" && f.output != "json" {
		errs = append(errs, fmt.Errorf("-o %q: want text or json", f.output))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return nil, err
	}
	return &f, nil
}

// requests runs "meshctl requests". A tunnel that cannot be read is
// reported and the others' requests are still shown (exit status 1).
func requests(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, err := parseRequestsFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	eps, err := newEndpoints("ztunnel ", f.tunnels, f.timeout)
	if err != nil {
		fmt.Fprintln(stderr, "meshctl requests:", err)
		return 2
	}
	docs, errs := readRequests(ctx, eps, f.workload, f.limit)
	code := 0
	for _, err := range errs {
		fmt.Fprintln(stderr, "meshctl requests:", err)
		code = 1
	}
	if len(docs) == 0 {
		return 1
	}
	for _, d := range docs {
		if d.Capacity == 0 {
			fmt.Fprintf(stderr, "meshctl requests: ztunnel of node %s keeps no requests (--recent-requests 0)\n", cmp.Or(d.Node, "?"))
		}
	}
	merged := mergeRequests(docs, f.limit)
	if f.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(merged); err != nil {
			fmt.Fprintln(stderr, "meshctl requests:", err)
			return 1
		}
		return code
	}
	printRequests(stdout, merged.Requests)
	return code
}

// readRequests asks every tunnel at once for its requests of workload,
// at most limit (0: all) each; it returns the answers it got and an error
// per tunnel that failed.
func readRequests(ctx context.Context, eps []*endpoint, workload string, limit int) ([]ztdebug.Requests, []error) {
	q := url.Values{}
	if workload != "" {
		q.Set("workload", workload)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	docs := make([]ztdebug.Requests, len(eps))
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for i, e := range eps {
		wg.Go(func() { errs[i] = e.get(ctx, ztdebug.RequestsPath, q, &docs[i]) })
	}
	wg.Wait()
	var ok []ztdebug.Requests
	var failed []error
	for i := range eps {
		if errs[i] != nil {
			failed = append(failed, errs[i])
			continue
		}
		ok = append(ok, docs[i])
	}
	return ok, failed
}

// mergeRequests is the tunnels' requests in one list, newest first, at
// most limit (0: all); its Capacity is theirs summed.
func mergeRequests(docs []ztdebug.Requests, limit int) ztdebug.Requests {
	out := ztdebug.Requests{Requests: []ztdebug.Request{}}
	for _, d := range docs {
		out.Capacity += d.Capacity
		for _, q := range d.Requests {
			q.Node = cmp.Or(q.Node, d.Node)
			out.Requests = append(out.Requests, q)
		}
	}
	slices.SortStableFunc(out.Requests, func(a, b ztdebug.Request) int { return b.Time.Compare(a.Time) })
	if limit > 0 && len(out.Requests) > limit {
		out.Requests = out.Requests[:limit]
	}
	return out
}

func printRequests(w io.Writer, qs []ztdebug.Request) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tREPORTER\tFROM\tTO\tMETHOD\tPATH/CALL\tSTATUS\tDURATION\tTRACE")
	for _, q := range qs {
		status := "-"
		if q.Status != 0 {
			status = strconv.Itoa(q.Status)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", q.Time.Local().Format("15:04:05.000"), q.Reporter,
			cmp.Or(q.Source.Workload, "-"), cmp.Or(q.Destination.Workload, q.Service, "-"), cmp.Or(q.Method, "-"),
			cmp.Or(call(q), "-"), status, ms(q.DurationMillis), cmp.Or(q.TraceID, "-"))
	}
	tw.Flush()
	if len(qs) == 0 {
		fmt.Fprintln(w, "(no requests: only those proxied per request are kept, with ztunnel --http-per-request or under L7 policy at the destination)")
	}
}

// call is what q asked for: an MCP method (tools/call with its tool), an
// A2A method, else the path.
func call(q ztdebug.Request) string {
	switch {
	case q.MCPMethod != "" && q.MCPTool != "":
		return q.MCPMethod + " " + q.MCPTool
	case q.MCPMethod != "":
		return q.MCPMethod
	case q.A2AMethod != "":
		return q.A2AMethod
	}
	return q.Path
}
