package kubelet

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// env is the container's environment, as the kubelet makes it: PATH and
// HOSTNAME, then its env entries in order, each value with $(VAR)
// references to the entries before it expanded; valueFrom takes the
// downward API (fieldRef, resourceFieldRef). It also returns the
// variables by name, for expanding command and args. ConfigMap and
// Secret references are not supported: such an entry is left out, with a
// warning.
func (w *worker) env(c *corev1.Container) ([]string, map[string]string) {
	vars := map[string]string{"PATH": defaultPath, "HOSTNAME": w.pod.Name}
	env := []string{"PATH=" + defaultPath, "HOSTNAME=" + w.pod.Name}
	for _, e := range c.Env {
		v := expand(e.Value, vars)
		if e.ValueFrom != nil {
			var err error
			if v, err = w.valueFrom(c, e.ValueFrom); err != nil {
				w.log.Warn("env value not set", "container", c.Name, "env", e.Name, "err", err)
				continue
			}
		}
		vars[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	return env, vars
}

// valueFrom resolves a downward-API source for container c.
func (w *worker) valueFrom(c *corev1.Container, src *corev1.EnvVarSource) (string, error) {
	switch {
	case src.FieldRef != nil:
		return w.fieldRef(src.FieldRef.FieldPath)
	case src.ResourceFieldRef != nil:
		return w.resourceFieldRef(c, src.ResourceFieldRef)
	}
	return "", fmt.Errorf("only fieldRef and resourceFieldRef are supported")
}

// fieldRef is the value of a downward-API field path.
func (w *worker) fieldRef(path string) (string, error) {
	p := w.pod
	if m, key, ok := subscript(path); ok {
		switch m {
		case "metadata.labels":
			return p.Labels[key], nil
		case "metadata.annotations":
			return p.Annotations[key], nil
		}
	}
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return p.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return w.podIPs(path == "status.podIP"), nil
	case "status.hostIP", "status.hostIPs":
		return w.hostIPs(path == "status.hostIP"), nil
	}
	return "", fmt.Errorf("unsupported fieldPath %q", path)
}

// subscript splits "metadata.labels['app']" into "metadata.labels" and
// "app".
func subscript(path string) (string, string, bool) {
	m, rest, ok := strings.Cut(path, "['")
	if !ok || !strings.HasSuffix(rest, "']") {
		return "", "", false
	}
	return m, strings.TrimSuffix(rest, "']"), true
}

// podIPs is the pod's addresses joined by commas, or only the first.
func (w *worker) podIPs(first bool) string {
	var ips []string
	if w.sandbox != nil {
		for _, ip := range w.sandbox.IPs() {
			ips = append(ips, ip.String())
		}
	}
	return firstOrAll(ips, first)
}

// hostIPs is the node's addresses joined by commas, or only the first.
func (w *worker) hostIPs(first bool) string {
	var ips []string
	for _, a := range w.k.opts.Addresses {
		ips = append(ips, a.String())
	}
	return firstOrAll(ips, first)
}

func firstOrAll(s []string, first bool) string {
	if first && len(s) > 0 {
		return s[0]
	}
	return strings.Join(s, ",")
}

// resourceFieldRef is a container's request or limit in units of the
// divisor, rounded up; a limit that is not set is the node's allocatable
// amount, as the kubelet reports it.
func (w *worker) resourceFieldRef(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		c = nil
		for i := range w.pod.Spec.Containers {
			if w.pod.Spec.Containers[i].Name == ref.ContainerName {
				c = &w.pod.Spec.Containers[i]
			}
		}
		if c == nil {
			return "", fmt.Errorf("no container %q", ref.ContainerName)
		}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("unsupported resource %q", ref.Resource)
	}
	list := c.Resources.Requests
	if kind == "limits" {
		list = c.Resources.Limits
	}
	q, set := list[corev1.ResourceName(name)]
	if !set && kind == "limits" {
		q, set = allocatable()[corev1.ResourceName(name)]
	}
	if !set {
		q = resource.Quantity{}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if name == string(corev1.ResourceCPU) {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}
