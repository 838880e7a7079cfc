package controlplane

import (
	"log/slog"

	"github.com/agentmesh/agentmesh/internal/configclient"
	"github.com/agentmesh/agentmesh/test/lab"
)

// newClient is node n's stream client as ztunnel makes it: the controller
// verified against the mesh root under its in-cluster name, the node's
// pod-bound token per call.
func newClient(addr, caFile, tokenFile string, n *node, log *slog.Logger) (*configclient.Client, error) {
	return configclient.New(configclient.Options{
		Addr: addr, CAFile: caFile, TokenFile: tokenFile, ServerName: lab.ControllerServerName,
		Node: n.name, Component: ztunnel, Logger: log.With("node", n.name), OnConfig: n.onConfig,
	})
}
