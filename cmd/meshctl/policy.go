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
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/api/policy"
	ctldebug "github.com/agentmesh/agentmesh/controller/debug"
	ztdebug "github.com/agentmesh/agentmesh/ztunnel/debug"
)

// checkFlags are policy check's flags.
type checkFlags struct {
	from, to       string
	port           int
	controller     string
	controllerNS   string
	ztunnel        string
	ztunnelNS      string
	output         string
	requestTimeout time.Duration
}

func parseCheckFlags(args []string, stderr io.Writer) (*checkFlags, error) {
	var f checkFlags
	fs := flag.NewFlagSet("meshctl policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.from, "from", "", "source: <namespace>/<pod>, or an IP address for a client outside the mesh")
	fs.StringVar(&f.to, "to", "", "destination: <namespace>/<pod>")
	fs.IntVar(&f.port, "port", 0, "destination port")
	fs.StringVar(&f.controller, "controller", "http://127.0.0.1:15014", "controller HTTP endpoint (its --metrics-addr)")
	fs.StringVar(&f.controllerNS, "controller-netns", "", "reach the controller from inside this network namespace (path)")
	fs.StringVar(&f.ztunnel, "ztunnel", "http://127.0.0.1:15000", "admin endpoint of the ztunnel on the destination's node")
	fs.StringVar(&f.ztunnelNS, "ztunnel-netns", "", "reach ztunnel from inside this network namespace (path)")
	fs.StringVar(&f.output, "o", "text", "output: text or json")
	fs.DurationVar(&f.requestTimeout, "timeout", 10*time.Second, "timeout of each request")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if _, err := netip.ParseAddr(f.from); err != nil && !isPodRef(f.from) {
		errs = append(errs, fmt.Errorf("--from %q: want <namespace>/<pod> or an IP address", f.from))
	}
	if !isPodRef(f.to) {
		errs = append(errs, fmt.Errorf("--to %q: want <namespace>/<pod>", f.to))
	}
	if f.port < 1 || f.port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d: want 1-65535", f.port))
	}
	if f.output != "text" && f.output != "json" {
		errs = append(errs, fmt.Errorf("-o %q: want text or json", f.output))
	}
	return &f, errors.Join(errs...)
}

func isPodRef(s string) bool {
	ns, name, ok := strings.Cut(s, "/")
	return ok && ns != "" && name != "" && !strings.Contains(name, "/")
}

// policyCheck runs "meshctl policy check".
func policyCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, err := parseCheckFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "meshctl policy check:", err)
		return 2
	}
	rep, err := check(ctx, f)
	if err != nil {
		fmt.Fprintln(stderr, "meshctl policy check:", err)
		return 1
	}
	if f.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "meshctl policy check:", err)
			return 1
		}
		return 0
	}
	printReport(stdout, rep)
	return 0
}

// report is what policy check found: the controller's view of the
// destination and ztunnel's decision.
type report struct {
	Controller ctldebug.Workload `json:"controller"`
	Ztunnel    ztdebug.Authz     `json:"ztunnel"`
	// Pending are policies the controller has for the destination that
	// ztunnel does not enforce yet (or the other way round).
	Pending []string `json:"pending,omitempty"`
}

func check(ctx context.Context, f *checkFlags) (*report, error) {
	ctl, err := newEndpoint("controller", f.controller, f.controllerNS, f.requestTimeout)
	if err != nil {
		return nil, err
	}
	zt, err := newEndpoint("ztunnel", f.ztunnel, f.ztunnelNS, f.requestTimeout)
	if err != nil {
		return nil, err
	}
	var rep report
	if err := ctl.get(ctx, ctldebug.WorkloadPath, url.Values{"pod": {f.to}}, &rep.Controller); err != nil {
		return nil, err
	}
	q := url.Values{"from": {f.from}, "to": {f.to}, "port": {strconv.Itoa(f.port)}}
	if err := zt.get(ctx, ztdebug.AuthzPath, q, &rep.Ztunnel); err != nil {
		return nil, fmt.Errorf("%w (is --ztunnel the admin endpoint of node %s's ztunnel?)", err, rep.Controller.Node)
	}
	if z := rep.Ztunnel.Node; z != "" && rep.Controller.Node != "" && z != rep.Controller.Node {
		return nil, fmt.Errorf("ztunnel at %s runs on node %s, but %s is on node %s", f.ztunnel, z, f.to, rep.Controller.Node)
	}
	rep.Pending = pending(rep.Controller.Policies, rep.Ztunnel.Policies)
	return &rep, nil
}

// pending lists the policies only one side knows of.
func pending(ctl []ctldebug.Policy, zt []string) []string {
	var names []string
	for _, p := range ctl {
		names = append(names, p.Name)
	}
	var out []string
	for _, n := range names {
		if !slices.Contains(zt, n) {
			out = append(out, n+" (not in ztunnel yet)")
		}
	}
	for _, n := range zt {
		if !slices.Contains(names, n) {
			out = append(out, n+" (gone from the controller, still in ztunnel)")
		}
	}
	return out
}

func printReport(w io.Writer, r *report) {
	z := &r.Ztunnel
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	src := cmp.Or(z.From.Workload, "(outside the mesh)")
	if z.From.Node {
		src = "(the node itself)"
	}
	if z.From.Impostor != "" {
		src = "(no workload: the address of mesh pod " + z.From.Impostor + ", which never sends plaintext)"
	}
	if z.From.MTLS {
		fmt.Fprintf(tw, "from:\t%s\t%s, mTLS, %s\n", src, z.From.Identity, z.From.Addr)
	} else {
		fmt.Fprintf(tw, "from:\t%s\tplaintext from %s\n", src, z.From.Addr)
	}
	fmt.Fprintf(tw, "to:\t%s port %d\t%s on node %s (mTLS mode %s, namespace default %s)\n",
		z.To.Workload, z.Port, r.Controller.Identity, cmp.Or(z.Node, r.Controller.Node), cmp.Or(string(z.MTLSMode), "unknown"), cmp.Or(string(z.Default), "unknown"))
	if len(z.ProbePorts) > 0 {
		fmt.Fprintf(tw, "probe ports:\t%v\tplaintext from the node's own addresses is admitted to these\n", z.ProbePorts)
	}
	if len(r.Controller.Policies) == 0 {
		fmt.Fprintf(tw, "policies:\tnone select the destination\n")
	}
	for i, p := range r.Controller.Policies {
		label := ""
		if i == 0 {
			label = "policies:"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s, %s\n", label, p.Name, p.Action, acceptance(p))
	}
	for _, p := range r.Pending {
		fmt.Fprintf(tw, "pending:\t%s\n", p)
	}
	tw.Flush()
	fmt.Fprintf(w, "decision: %s\n", explain(z))
}

// acceptance says whether the controller accepted p and why not.
func acceptance(p ctldebug.Policy) string {
	switch {
	case p.Accepted == "True" && p.Reason == "Accepted":
		return "accepted"
	case p.Accepted == "True":
		return "accepted with a warning: " + p.Reason + ": " + p.Message
	case p.Accepted == "False":
		return "NOT accepted: " + p.Reason + ": " + p.Message
	}
	return "status not written yet"
}

// explain is the decision in words.
func explain(z *ztdebug.Authz) string {
	d := z.Decision
	verb := "DENY"
	if d.Allow {
		verb = "ALLOW"
	}
	switch d.Reason {
	case policy.ReasonAllowRule, policy.ReasonDenyRule:
		if d.Rule < 0 { // the controller's stand-in for an invalid Deny
			return fmt.Sprintf("%s by %s as a whole: it is invalid and enforced as a Deny of every connection", verb, d.Policy)
		}
		return fmt.Sprintf("%s by %s rule %d (%s)", verb, d.Policy, d.Rule, d.Reason)
	case policy.ReasonDefault:
		return fmt.Sprintf("%s: no Allow policy selects %s, the namespace default (%s) applies", verb, z.To.Workload, z.Default)
	case policy.ReasonNoAllowMatch:
		return fmt.Sprintf("%s: Allow policies select %s (%s) but no rule of theirs matches", verb, z.To.Workload, d.Policy)
	case policy.ReasonPlaintextStrict:
		return fmt.Sprintf("%s: plaintext to a STRICT workload", verb)
	case policy.ReasonKubeletProbe:
		return fmt.Sprintf("%s: plaintext from the node's own address to a probe port of %s (%s), admitted whatever the policies and mTLS mode say", verb, z.To.Workload, d.Reason)
	case policy.ReasonNoPolicyData:
		return fmt.Sprintf("%s: ztunnel has no policy data for %s yet (fail closed)", verb, z.To.Workload)
	}
	return fmt.Sprintf("%s (%s)", verb, d.Reason)
}
