package kubelet

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestResolvConf(t *testing.T) {
	dns := []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::a")}
	cfg := &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.53", "192.0.2.54"}, Searches: []string{"example.com"},
		Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}, {Name: "edns0"}}}
	for _, tc := range []struct {
		name   string
		dns    []netip.Addr
		policy corev1.DNSPolicy
		config *corev1.PodDNSConfig
		want   string // "" for nil: the node's file
	}{
		{"cluster first", dns, "", nil,
			"search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\nnameserver fd00:96::a\noptions ndots:5\n"},
		{"cluster first with dnsConfig", dns, corev1.DNSClusterFirst, cfg,
			"search shop.svc.cluster.local svc.cluster.local cluster.local example.com\n" +
				"nameserver 10.96.0.10\nnameserver fd00:96::a\nnameserver 192.0.2.53\noptions ndots:2 edns0\n"},
		{"cluster first without cluster dns", nil, corev1.DNSClusterFirst, nil, ""},
		{"default", dns, corev1.DNSDefault, nil, ""},
		{"none", dns, corev1.DNSNone, cfg, "search example.com\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions ndots:2 edns0\n"},
	} {
		k := &Kubelet{opts: Options{ClusterDNS: tc.dns, ClusterDomain: "cluster.local"}}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec: corev1.PodSpec{DNSPolicy: tc.policy, DNSConfig: tc.config}}
		got := k.resolvConf(pod)
		if (got == nil) != (tc.want == "") || string(got) != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestHostsFile(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop"},
		Spec: corev1.PodSpec{Hostname: "db-0", Subdomain: "db",
			HostAliases: []corev1.HostAlias{{IP: "192.0.2.1", Hostnames: []string{"foo.local", "bar.local"}}}}}
	got := string(testWorker(pod).hostsFile())
	for _, want := range []string{
		"127.0.0.1\tlocalhost\n", "::1\tlocalhost ip6-localhost ip6-loopback\n",
		"198.19.1.2\tdb-0.db.shop.svc.cluster.local\tdb-0\n", "fd00:19:1::2\tdb-0.db.shop.svc.cluster.local\tdb-0\n",
		"# Entries added by HostAliases.\n192.0.2.1\tfoo.local\tbar.local\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts file lacks %q:\n%s", want, got)
		}
	}
	pod.Spec = corev1.PodSpec{}
	if got := string(testWorker(pod).hostsFile()); !strings.Contains(got, "198.19.1.2\tdb-0\n") {
		t.Errorf("hosts file without subdomain lacks the pod's name:\n%s", got)
	}
}
