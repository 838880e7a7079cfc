package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// runProbe does one httpGet, tcpSocket or grpc check from the node's
// netns.
func (w *worker) runProbe(ctx context.Context, pr *corev1.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(max(pr.TimeoutSeconds, 1))*time.Second)
	defer cancel()
	switch {
	case pr.TCPSocket != nil:
		addr, err := w.probeAddr(pr.TCPSocket.Host, pr.TCPSocket.Port)
		if err != nil {
			return err
		}
		conn, err := w.k.opts.Runtime.DialNode(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	case pr.HTTPGet != nil:
		return w.httpProbe(ctx, pr.HTTPGet)
	case pr.GRPC != nil:
		return w.grpcProbe(ctx, pr.GRPC)
	}
	return errors.New("unsupported probe (only httpGet, tcpSocket and grpc)")
}

// grpcProbe is a grpc probe: the standard health service's Check for the
// probe's service must answer SERVING.
func (w *worker) grpcProbe(ctx context.Context, g *corev1.GRPCAction) error {
	addr, err := w.probeAddr("", intstr.FromInt32(g.Port))
	if err != nil {
		return err
	}
	dial := func(ctx context.Context, a string) (net.Conn, error) { return w.k.opts.Runtime.DialNode(ctx, "tcp", a) }
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dial), grpc.WithUserAgent("kube-probe/amlab"))
	if err != nil {
		return fmt.Errorf("grpc probe client: %w", err)
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: ptr.Deref(g.Service, "")})
	if err != nil {
		return fmt.Errorf("grpc health check: %w", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc health status %s", resp.GetStatus())
	}
	return nil
}

// httpProbe is an httpGet probe: any status in 200..399 passes.
func (w *worker) httpProbe(ctx context.Context, g *corev1.HTTPGetAction) error {
	addr, err := w.probeAddr(g.Host, g.Port)
	if err != nil {
		return err
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		return errors.New("https probes are not supported")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+g.Path, nil)
	if err != nil {
		return fmt.Errorf("probe request: %w", err)
	}
	req.Header.Set("User-Agent", "kube-probe/amlab")
	for _, h := range g.HTTPHeaders {
		req.Header.Set(h.Name, h.Value)
	}
	tr := &http.Transport{DialContext: w.k.opts.Runtime.DialNode, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("probe status %d", resp.StatusCode)
	}
	return nil
}

// probeAddr is host:port for a probe; the host defaults to the pod's
// first IP and a named port is looked up in the container's ports.
func (w *worker) probeAddr(host string, port intstr.IntOrString) (string, error) {
	if host == "" {
		if w.sandbox == nil || len(w.sandbox.IPs()) == 0 {
			return "", errors.New("pod has no ip")
		}
		host = w.sandbox.IPs()[0].String()
	}
	n := port.IntValue()
	if port.Type == intstr.String {
		n = 0
		for _, p := range w.ctr.spec.Ports {
			if p.Name == port.StrVal {
				n = int(p.ContainerPort)
			}
		}
	}
	if n <= 0 || n > 65535 {
		return "", fmt.Errorf("bad probe port %q", port.String())
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a, uint16(n)).String(), nil
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}
