package lab

import "context"

// NodeHTTPGet does a GET from inside node i's network namespace, for
// ztunnel's admin (http://127.0.0.1:15000/...) and readiness endpoints.
func (l *Lab) NodeHTTPGet(ctx context.Context, i int, url string) (int, []byte, error) {
	return l.httpGet(ctx, i, url)
}
