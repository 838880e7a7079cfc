// Package configclient is the node side of the controller's config stream:
// it dials the controller over TLS with the node component's bearer token,
// applies the full snapshot and deltas to a local meshconfig.Config, acks
// or nacks each version, resumes with backoff after any failure, and keeps
// the last good config while the controller is away. It also asks the
// controller's CA to sign certificates.
package configclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// Options configure a Client.
type Options struct {
	Addr      string // controller host:port
	CAFile    string // PEM roots that verify the controller; re-read on every connect
	TokenFile string // bearer token; re-read on every call (tokens rotate)
	// ServerName overrides the name checked in the controller's certificate
	// (default: the host of Addr).
	ServerName string
	Node       string
	Component  string // configapi.ComponentAgentd or ComponentZtunnel
	Logger     *slog.Logger
	// OnConfig receives every new config; an error nacks the version and
	// the previous config stays in force. Called from Run's goroutine.
	// The config must not be modified: successive configs share what did
	// not change.
	OnConfig func(*meshconfig.Config) error
	// OnTrustBundle, if set, receives each new trust bundle (before the
	// OnConfig of the same version).
	OnTrustBundle func(*x509.CertPool)
}

// Client talks to the controller. Run and Sign may be used concurrently.
type Client struct {
	o      Options
	log    *slog.Logger
	bundle atomic.Pointer[x509.CertPool]
	// accepted is the last config OnConfig took; only Run's goroutine
	// touches it.
	accepted *meshconfig.Config

	mu    sync.Mutex
	conn  *grpc.ClientConn // guarded by mu
	caPEM []byte           // guarded by mu: the roots conn was made with
}

// New checks o and returns a client; it does no I/O.
func New(o Options) (*Client, error) {
	switch {
	case o.Addr == "" || o.CAFile == "" || o.TokenFile == "":
		return nil, errors.New("config client: addr, ca file and token file are required")
	case o.Node == "" || !configapi.ValidComponent(o.Component):
		return nil, fmt.Errorf("config client: node and component (agentd or ztunnel) are required, got %q %q", o.Node, o.Component)
	}
	c := &Client{o: o, log: o.Logger}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c, nil
}

// TrustBundle returns the trust bundle of the last accepted version, nil
// before the first.
func (c *Client) TrustBundle() *x509.CertPool { return c.bundle.Load() }

// Close closes the connection. Call it after Run has returned.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// connection returns a connection made with the current CA file, replacing
// the old one when the file changed. An unreadable file keeps the old one.
func (c *Client) connection() (*grpc.ClientConn, error) {
	pem, err := os.ReadFile(c.o.CAFile)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && (err != nil || bytes.Equal(pem, c.caPEM)) {
		return c.conn, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read controller ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("controller ca %s: no certificates", c.o.CAFile)
	}
	conn, err := grpc.NewClient(c.o.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: c.o.ServerName, MinVersion: tls.VersionTLS13})),
		grpc.WithPerRPCCredentials(tokenFile(c.o.TokenFile)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 200 * time.Millisecond,
			Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}, MinConnectTimeout: 5 * time.Second}),
	)
	if err != nil {
		return nil, fmt.Errorf("dial controller: %w", err)
	}
	if c.conn != nil {
		c.conn.Close()
	}
	c.conn, c.caPEM = conn, pem
	return conn, nil
}

// tokenFile is per-call credentials read from a file.
type tokenFile string

func (f tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("token file %s is empty", string(f))
	}
	return map[string]string{configapi.AuthorizationKey: "Bearer " + tok}, nil
}

func (tokenFile) RequireTransportSecurity() bool { return true }
