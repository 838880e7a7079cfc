package kubelet

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// maxNameservers is how many nameservers the kubelet writes (glibc reads
// no more).
const maxNameservers = 3

// resolvConf is the pod's /etc/resolv.conf as the kubelet makes it for
// its dnsPolicy, or nil to leave the node's (dnsPolicy Default without a
// dnsConfig, or ClusterFirst when the kubelet has no cluster DNS, where
// the real kubelet falls back to Default too). For ClusterFirst: the
// cluster DNS servers, the search path <ns>.svc.<domain> svc.<domain>
// <domain>, ndots:5; the pod's dnsConfig is merged in. The node's own
// search domains are not appended (the lab's nodes are the host).
func (k *Kubelet) resolvConf(pod *corev1.Pod) []byte {
	var servers, search []string
	opts := []corev1.PodDNSConfigOption{}
	switch pod.Spec.DNSPolicy {
	case corev1.DNSNone:
	case corev1.DNSDefault:
		if pod.Spec.DNSConfig == nil {
			return nil
		}
	default: // ClusterFirst, the default; ClusterFirstWithHostNet is the same for a pod off the host network
		if len(k.opts.ClusterDNS) == 0 {
			return nil
		}
		for _, a := range k.opts.ClusterDNS {
			servers = append(servers, a.String())
		}
		d := k.opts.ClusterDomain
		search = []string{pod.Namespace + ".svc." + d, "svc." + d, d}
		opts = append(opts, corev1.PodDNSConfigOption{Name: "ndots", Value: ptr.To("5")})
	}
	if c := pod.Spec.DNSConfig; c != nil {
		servers = append(servers, c.Nameservers...)
		search = append(search, c.Searches...)
		opts = mergeOptions(opts, c.Options)
	}
	return formatResolvConf(servers[:min(len(servers), maxNameservers)], search, opts)
}

// mergeOptions adds more to opts; an option named again replaces the
// earlier one, as the kubelet merges them.
func mergeOptions(opts, more []corev1.PodDNSConfigOption) []corev1.PodDNSConfigOption {
	for _, o := range more {
		i := slices.IndexFunc(opts, func(p corev1.PodDNSConfigOption) bool { return p.Name == o.Name })
		if i >= 0 {
			opts[i] = o
		} else {
			opts = append(opts, o)
		}
	}
	return opts
}

func formatResolvConf(servers, search []string, opts []corev1.PodDNSConfigOption) []byte {
	var b bytes.Buffer
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(opts) > 0 {
		var parts []string
		for _, o := range opts {
			if o.Value != nil {
				parts = append(parts, o.Name+":"+*o.Value)
			} else {
				parts = append(parts, o.Name)
			}
		}
		fmt.Fprintf(&b, "options %s\n", strings.Join(parts, " "))
	}
	return b.Bytes()
}

// hostsFile is the container's /etc/hosts as the kubelet writes it: the
// loopback names, the pod's addresses under its hostname (and its FQDN
// when it has a subdomain), then the pod's hostAliases.
func (w *worker) hostsFile() []byte {
	p := w.pod
	host := p.Spec.Hostname
	if host == "" {
		host = p.Name[:min(len(p.Name), 63)]
	}
	names := host
	if p.Spec.Subdomain != "" {
		names = host + "." + p.Spec.Subdomain + "." + p.Namespace + ".svc." + w.k.opts.ClusterDomain + "\t" + host
	}
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	if w.sandbox != nil {
		for _, ip := range w.sandbox.IPs() {
			fmt.Fprintf(&b, "%s\t%s\n", ip, names)
		}
	}
	if len(p.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range p.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.Bytes()
}
