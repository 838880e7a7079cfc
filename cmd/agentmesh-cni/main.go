// Command agentmesh-cni is the AgentMesh CNI plugin. Chained after the
// plugins that give a pod its interface and addresses, its ADD hands the
// pod to the node's agentd (internal/cnigate) and returns only when agentd has
// captured the pod, or decided it is not in the mesh: the runtime starts a
// pod's containers after the ADD, so their first connection is captured.
// When agentd cannot answer, the ADD fails and the kubelet tries the
// sandbox again: a pod the mesh may claim never starts uncaptured.
//
// Its network configuration entry:
//
//	{"type": "agentmesh-cni", "socket": "/var/run/agentmesh/cni.sock", "timeout": "60s"}
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/agentmesh/agentmesh/internal/cnigate"
)

// defaultTimeout bounds one ADD's wait for agentd.
const defaultTimeout = 60 * time.Second

// netConf is the plugin's entry in the network configuration list.
type netConf struct {
	types.NetConf
	Socket  string `json:"socket,omitempty"`
	Timeout string `json:"timeout,omitempty"`
}

// podArgs are the CNI_ARGS the Kubernetes runtimes set.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_UID       types.UnmarshallableString //nolint:revive // CNI_ARGS key
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: nop, Check: nop, GC: nop, Status: nop},
		version.All, "AgentMesh CNI plugin: captures a pod before its containers start")
}

// nop: DEL, CHECK, GC and STATUS have nothing to do here. agentd takes a
// pod out of the mesh when it leaves the mesh config; a plugin in the chain
// must not fail a DEL.
func nop(*skel.CmdArgs) error { return nil }

func cmdAdd(args *skel.CmdArgs) error {
	conf, prev, timeout, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := add(args, prev, conf.Socket, timeout); err != nil {
		return err
	}
	return types.PrintResult(prev, conf.CNIVersion)
}

// parseConf reads the plugin's configuration and the previous plugins'
// result, which it passes on unchanged.
func parseConf(stdin []byte) (*netConf, *current.Result, time.Duration, error) {
	conf := &netConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, nil, 0, fmt.Errorf("agentmesh-cni: parse network configuration: %w", err)
	}
	if conf.Socket == "" {
		conf.Socket = cnigate.DefaultSocket
	}
	timeout := defaultTimeout
	if conf.Timeout != "" {
		d, err := time.ParseDuration(conf.Timeout)
		if err != nil || d <= 0 {
			return nil, nil, 0, fmt.Errorf("agentmesh-cni: timeout %q: want a positive duration such as 60s", conf.Timeout)
		}
		timeout = d
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return nil, nil, 0, fmt.Errorf("agentmesh-cni: previous result: %w", err)
	}
	if conf.PrevResult == nil {
		return nil, nil, 0, errors.New("agentmesh-cni: no previous result: it must be chained after the plugin that gives the pod its addresses")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("agentmesh-cni: previous result: %w", err)
	}
	return conf, prev, timeout, nil
}

// add asks agentd at socket to capture the pod of args.
func add(args *skel.CmdArgs, prev *current.Result, socket string, timeout time.Duration) error {
	var pa podArgs
	pa.IgnoreUnknown = true
	if err := types.LoadArgs(args.Args, &pa); err != nil {
		return fmt.Errorf("agentmesh-cni: CNI_ARGS: %w", err)
	}
	if pa.K8S_POD_NAME == "" {
		return nil // not a Kubernetes pod: nothing for the mesh
	}
	req := cnigate.Request{ContainerID: args.ContainerID, Netns: args.Netns,
		Namespace: string(pa.K8S_POD_NAMESPACE), Name: string(pa.K8S_POD_NAME), UID: string(pa.K8S_POD_UID)}
	for _, ip := range prev.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			req.IPs = append(req.IPs, a.Unmap())
		}
	}
	ns, err := os.Open(args.Netns)
	if err != nil {
		return fmt.Errorf("agentmesh-cni: pod netns: %w", err)
	}
	defer ns.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := cnigate.Call(ctx, socket, req, ns)
	if err != nil {
		return fmt.Errorf("agentmesh-cni: pod %s/%s not set up by the mesh (is agentd running on this node?): %w", req.Namespace, req.Name, err)
	}
	if r.Err != "" {
		return fmt.Errorf("agentmesh-cni: pod %s/%s not set up by the mesh: %s", req.Namespace, req.Name, r.Err)
	}
	return nil
}
