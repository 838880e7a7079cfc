package bench

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/test/lab"
)

// The HAProxy pair: the mutual-TLS tunnel a user would set up instead of a
// mesh. Each pod runs one HAProxy (Debian's haproxy, installed by make
// deps): the client pod's accepts plaintext on loopback and opens a TLS 1.3
// connection with a client certificate to the server pod's, which checks
// it against the CA and forwards plaintext to the app on loopback. One TLS
// connection per app connection, like the mesh's one CONNECT per
// connection (the mesh also pools its TLS).
const (
	haproxyEchoPort = 15081 // TLS between the pods, and the client pod's plaintext entry
	haproxySinkPort = 15082
)

// haproxyBin is Debian's haproxy.
const haproxyBin = "/usr/sbin/haproxy"

// startHAProxy starts the pair for the server's echo and sink servers and
// returns where the client pod reaches them through it, and its two
// processes (they stop with their pods).
func startHAProxy(ctx context.Context, l *lab.Lab, client, server *lab.Pod, serverAddr netip.Addr) (echo, sink netip.AddrPort, procs []*lab.Process, err error) {
	if _, err := exec.LookPath(haproxyBin); err != nil {
		return echo, sink, nil, fmt.Errorf("haproxy baseline: %s not installed (make deps installs Debian's haproxy): %w", haproxyBin, err)
	}
	dir, err := os.MkdirTemp(l.StateDir(), "haproxy-")
	if err != nil {
		return echo, sink, nil, fmt.Errorf("haproxy dir: %w", err)
	}
	if err := writeHAProxyCerts(ctx, dir); err != nil {
		return echo, sink, nil, err
	}
	tls := func(pemFile string) string {
		return "ssl crt " + filepath.Join(dir, pemFile) + " ca-file " + filepath.Join(dir, "ca.pem") +
			" verify required ssl-min-ver TLSv1.3"
	}
	serverCfg := haproxyHead + fmt.Sprintf(`
frontend echo
    bind :%d %s
    default_backend echo
backend echo
    server app 127.0.0.1:%d
frontend sink
    bind :%d %s
    default_backend sink
backend sink
    server app 127.0.0.1:%d
`, haproxyEchoPort, tls("server.pem"), EchoPort, haproxySinkPort, tls("server.pem"), SinkPort)
	target := func(port int) string { return netip.AddrPortFrom(serverAddr, uint16(port)).String() }
	clientCfg := haproxyHead + fmt.Sprintf(`
frontend echo
    bind 127.0.0.1:%d
    default_backend echo
backend echo
    server peer %s %s
frontend sink
    bind 127.0.0.1:%d
    default_backend sink
backend sink
    server peer %s %s
`, haproxyEchoPort, target(haproxyEchoPort), tls("client.pem"), haproxySinkPort, target(haproxySinkPort), tls("client.pem"))
	for _, side := range []struct {
		pod  *lab.Pod
		file string
		cfg  string
	}{{server, "server.cfg", serverCfg}, {client, "client.cfg", clientCfg}} {
		path := filepath.Join(dir, side.file)
		if err := os.WriteFile(path, []byte(side.cfg), 0o600); err != nil {
			return echo, sink, nil, fmt.Errorf("haproxy config: %w", err)
		}
		proc, err := side.pod.Start(ctx, "haproxy", haproxyBin, "-db", "-f", path)
		if err != nil {
			return echo, sink, nil, fmt.Errorf("start haproxy in %s: %w", side.pod.Name, err)
		}
		procs = append(procs, proc)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	return netip.AddrPortFrom(lo, haproxyEchoPort), netip.AddrPortFrom(lo, haproxySinkPort), procs, nil
}

// haproxyHead is what both configs share: TCP mode, HAProxy's own thread
// count (one per CPU), and a connection limit that fits the lab's file
// limit (HAProxy raises its own to about twice maxconn).
const haproxyHead = `global
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
`

// writeHAProxyCerts writes a CA (ca.pem) and a client and a server
// certificate, each with its key (client.pem, server.pem, as HAProxy
// reads them), ECDSA P-256 as the mesh uses.
func writeHAProxyCerts(ctx context.Context, dir string) error {
	certPEM, keyPEM, err := pki.GenerateCA("bench.local", 24*time.Hour)
	if err != nil {
		return fmt.Errorf("haproxy ca: %w", err)
	}
	ca, err := pki.NewLocalCA(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("haproxy ca: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), certPEM, 0o600); err != nil {
		return fmt.Errorf("haproxy ca: %w", err)
	}
	for _, name := range []string{"client", "server"} {
		key, err := pki.NewKey()
		if err != nil {
			return err
		}
		id := spiffe.New("bench.local", "bench", name)
		csr, err := pki.NewCSR(key, id)
		if err != nil {
			return err
		}
		chain, err := ca.Sign(ctx, csr, id, 24*time.Hour)
		if err != nil {
			return fmt.Errorf("haproxy %s certificate: %w", name, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return fmt.Errorf("haproxy %s key: %w", name, err)
		}
		var out []byte
		for _, c := range chain {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
		if err := os.WriteFile(filepath.Join(dir, name+".pem"), out, 0o600); err != nil {
			return fmt.Errorf("haproxy %s certificate: %w", name, err)
		}
	}
	return nil
}
