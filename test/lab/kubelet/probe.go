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

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probe runs the readiness probe once and applies its thresholds.
func (w *worker) probe(ctx context.Context) {
	c := &w.ctr
	pr := c.spec.ReadinessProbe
	err := w.runProbe(ctx, pr)
	if err == nil {
		c.okRun, c.failRun = c.okRun+1, 0
		if !c.ready && c.okRun >= max(pr.SuccessThreshold, 1) {
			c.ready = true
			w.log.Info("readiness probe passes: ready", "container", c.spec.Name)
		}
	} else {
		c.okRun, c.failRun = 0, c.failRun+1
		if c.ready && c.failRun >= max(pr.FailureThreshold, 1) {
			c.ready = false
			w.log.Info("readiness probe fails: not ready", "container", c.spec.Name, "err", err)
		}
	}
	c.nextProbe = time.Now().Add(time.Duration(max(pr.PeriodSeconds, 1)) * time.Second)
}

// runProbe does one httpGet or tcpSocket check from the node's netns.
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
	}
	return errors.New("unsupported probe (only httpGet and tcpSocket)")
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
