package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/test/lab/realnode"
)

// httpGet does a GET from inside node i's network namespace.
func (l *Lab) httpGet(ctx context.Context, i int, url string) (int, []byte, error) {
	return httpGetIn(ctx, l.nodeNetns(i), url)
}

// HTTPGet does a GET from inside the pod's network namespace, by the
// calling process (which is not in the pod's cgroup, so the mesh does not
// capture it): use it to reach the pod's own apps on 127.0.0.1. It returns
// the status code and up to 4 MiB of body.
func (p *Pod) HTTPGet(ctx context.Context, url string) (int, []byte, error) {
	return httpGetIn(ctx, p.NetnsName(), url)
}

// HTTPGetWithin is HTTPGet bounded by d instead of 10s: for a request
// whose answer is a long piece of work, like an agent's /calls?n=2000
// (which bounds itself at 60s), on a loaded machine.
func (p *Pod) HTTPGetWithin(ctx context.Context, url string, d time.Duration) (int, []byte, error) {
	return httpDoInWithin(ctx, p.NetnsName(), http.MethodGet, url, nil, d)
}

// HTTPGetWith is HTTPGet with request headers (a traceparent, say).
func (p *Pod) HTTPGetWith(ctx context.Context, url string, header http.Header) (int, []byte, error) {
	return httpGetInWith(ctx, p.NetnsName(), url, header)
}

// httpGetIn does a GET with a connection made inside the named netns,
// bounded by 10s.
func httpGetIn(ctx context.Context, ns, url string) (int, []byte, error) {
	return httpGetInWith(ctx, ns, url, nil)
}

// HTTPPost does a POST without a body from inside the pod's network
// namespace, like HTTPGet: to change a sample agent's faults (POST
// /fault?...).
func (p *Pod) HTTPPost(ctx context.Context, url string) (int, []byte, error) {
	return httpDoIn(ctx, p.NetnsName(), http.MethodPost, url, nil)
}

// httpGetInWith is httpGetIn with request headers.
func httpGetInWith(ctx context.Context, ns, url string, header http.Header) (int, []byte, error) {
	return httpDoIn(ctx, ns, http.MethodGet, url, header)
}

// httpDoIn sends a request without a body with a connection made inside
// the named netns, bounded by 10s.
func httpDoIn(ctx context.Context, ns, method, url string, header http.Header) (int, []byte, error) {
	return httpDoInWithin(ctx, ns, method, url, header, 10*time.Second)
}

// httpDoInWithin is httpDoIn bounded by d.
func httpDoInWithin(ctx context.Context, ns, method, url string, header http.Header, d time.Duration) (int, []byte, error) {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := doInNetns(ns, func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("build request: %w", err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", strings.ToLower(method), url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("read %s: %w", url, err)
	}
	return resp.StatusCode, body, nil
}

// logTail returns the last n lines of the file at path (realnode.Tail;
// the lab imports realnode, not the other way round).
func logTail(path string, n int) string { return realnode.Tail(path, n) }
