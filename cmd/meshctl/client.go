package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/netns"
)

// endpoint is an HTTP API meshctl reads: a base URL, optionally reached
// from inside a network namespace (a node's, in the lab).
type endpoint struct {
	name   string // for messages: "controller", "ztunnel"
	base   string
	client *http.Client
}

func newEndpoint(name, base, nsPath string, timeout time.Duration) (*endpoint, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s url %q: want http://host:port", name, base)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if nsPath != "" {
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := netns.DoPath(nsPath, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}
	}
	return &endpoint{name: name, base: strings.TrimRight(base, "/"), client: &http.Client{Transport: tr, Timeout: timeout}}, nil
}

// newEndpoints makes an endpoint per node URL, each named prefix + URL.
func newEndpoints(prefix string, urls []nodeURL, timeout time.Duration) ([]*endpoint, error) {
	eps := make([]*endpoint, 0, len(urls))
	for _, u := range urls {
		e, err := newEndpoint(prefix+u.url, u.url, u.netns, timeout)
		if err != nil {
			return nil, err
		}
		eps = append(eps, e)
	}
	return eps, nil
}

// get decodes the JSON answer of GET path?query into v. A non-200 answer
// is an error carrying the server's message.
func (e *endpoint) get(ctx context.Context, path string, query url.Values, v any) error {
	u := e.base + path + "?" + query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", e.name, err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s unreachable: %w", e.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s: read answer: %w", e.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", e.name, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: decode %s: %w", e.name, path, err)
	}
	return nil
}
