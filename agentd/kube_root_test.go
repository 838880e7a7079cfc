package agentd

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestAgentdKubernetesModeRealDatapath runs the agentd command line in
// Kubernetes mode on the real eBPF datapath: a pod found through its
// cgroup below --cgroup is captured in the kernel and handed to ztunnel;
// its opt-out releases the capture.
func TestAgentdKubernetesModeRealDatapath(t *testing.T) {
	env := newRealEnv(t)
	tree := newCgroupTreeAt(t, filepath.Join(env.cgroup, "kubepods"))
	const uidA = "aaaaaaaa-1111-2222-3333-444444444444"
	pidA, _ := tree.start(tree.mkdir("pod"+uidA), false)
	cookieA := procCookie(t, pidA)
	ctl := startStreamServer(t)
	w := kubeWorkload("a", true)
	w.UID = uidA
	ctl.update(config(w))

	dir := t.TempDir()
	tok, sock := filepath.Join(dir, "token"), filepath.Join(dir, "agentd.sock")
	if err := os.WriteFile(tok, []byte("tok-"+node), 0o600); err != nil {
		t.Fatal(err)
	}
	startAgentd(t, "run", "--node", node, "--controller", ctl.addr, "--controller-ca", ctl.caFile, "--token-file", tok,
		"--controller-server-name", "127.0.0.1", "--pin-dir", env.pinDir, "--cgroup", env.cgroup, "--socket", sock,
		"--log-format", "text", "--log-level", "debug")
	waitForFile(t, sock)
	ev := &eventLog{}
	log, _ := newLog(t)
	startZtunnel(t, sock, ev, log)
	waitEvents(t, ev, fmt.Sprintf("zt add %s %d", uidA, cookieA))
	waitKernel(t, env.pinDir, cookieA, true)

	w.Enrolled = false
	ctl.update(config(w))
	waitKernel(t, env.pinDir, cookieA, false)
	waitEvents(t, ev, "zt del "+uidA)
}
