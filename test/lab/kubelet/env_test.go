package kubelet

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testWorker is a worker for pod with a sandbox at 198.19.1.2 and
// fd00:19:1::2 on a node at 198.18.0.1 and fd00:18::1.
func testWorker(pod *corev1.Pod) *worker {
	k := &Kubelet{log: slog.New(slog.DiscardHandler), opts: Options{Node: "n1", ClusterDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("fd00:18::1")}}}
	w := newWorker(k, pod)
	w.pod = pod
	w.sandbox = &fakeSandbox{ips: []netip.Addr{netip.MustParseAddr("198.19.1.2"), netip.MustParseAddr("fd00:19:1::2")}}
	return w
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func resourceEnv(name, res, divisor string) corev1.EnvVar {
	ref := &corev1.ResourceFieldSelector{Resource: res}
	if divisor != "" {
		ref.Divisor = resource.MustParse(divisor)
	}
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: ref}}
}

// TestDownwardAPIEnv: every fieldRef the kubelet supports in env,
// resourceFieldRef with divisors and node-allocatable defaults for unset
// limits, $(VAR) references to earlier entries, and the same values in
// the command line.
func TestDownwardAPIEnv(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f", Namespace: "shop", UID: "u-1",
		Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"team": "blue"}},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "web"}}
	c := corev1.Container{Name: "app", Command: []string{"/bin/app"},
		Args: []string{"--name", "$(POD_NAME)", "--at=$(POD_IP):$(PORT)", "$(UNDEFINED)", "$$(POD_NAME)"},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("100Mi")},
		},
		Env: []corev1.EnvVar{
			fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("POD_UID", "metadata.uid"), fieldEnv("NODE", "spec.nodeName"), fieldEnv("SA", "spec.serviceAccountName"),
			fieldEnv("POD_IP", "status.podIP"), fieldEnv("POD_IPS", "status.podIPs"),
			fieldEnv("HOST_IP", "status.hostIP"), fieldEnv("HOST_IPS", "status.hostIPs"),
			fieldEnv("APP", "metadata.labels['app']"), fieldEnv("TEAM", "metadata.annotations['team']"),
			resourceEnv("CPU_REQ_M", "requests.cpu", "1m"), resourceEnv("CPU_REQ", "requests.cpu", ""),
			resourceEnv("CPU_LIMIT", "limits.cpu", ""), resourceEnv("MEM_LIMIT_MI", "limits.memory", "1Mi"),
			resourceEnv("MEM_REQ", "requests.memory", ""),
			{Name: "PORT", Value: "8080"}, {Name: "URL", Value: "http://$(POD_NAME).$(POD_NAMESPACE):$(PORT)"},
			fieldEnv("BAD", "spec.nope"),
		}}
	pod.Spec.Containers = []corev1.Container{c}
	w := testWorker(pod)
	env, vars := w.env(&c)
	want := []string{"PATH=" + defaultPath, "HOSTNAME=web-7d9f",
		"POD_NAME=web-7d9f", "POD_NAMESPACE=shop", "POD_UID=u-1", "NODE=n1", "SA=web",
		"POD_IP=198.19.1.2", "POD_IPS=198.19.1.2,fd00:19:1::2", "HOST_IP=198.18.0.1", "HOST_IPS=198.18.0.1,fd00:18::1",
		"APP=web", "TEAM=blue", "CPU_REQ_M=250", "CPU_REQ=1", "CPU_LIMIT=2", "MEM_LIMIT_MI=100", "MEM_REQ=67108864",
		"PORT=8080", "URL=http://web-7d9f.shop:8080"}
	if !slices.Equal(env, want) {
		t.Errorf("env\n got %q\nwant %q", env, want)
	}
	args, err := w.k.command(&c, vars)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/bin/app", "--name", "web-7d9f", "--at=198.19.1.2:8080", "$(UNDEFINED)", "$(POD_NAME)"}; !slices.Equal(args, want) {
		t.Errorf("args %q, want %q", args, want)
	}
}
