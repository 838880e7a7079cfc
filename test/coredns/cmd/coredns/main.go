// Command coredns is CoreDNS with only the plugins the lab needs: the
// cluster DNS (cluster.local from the kubernetes plugin, the rest
// forwarded) for the lab's real Kubernetes nodes, whose kubelet points
// pods at a cluster DNS Service. Built from the github.com/coredns/coredns
// module like upstream's own main (coredns.go), but with a plugin list of
// its own instead of core/plugin's all-in import.
package main

import (
	"log"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives are the plugins above in the order of upstream's plugin.cfg
// (core/dnsserver/zdirectives.go): a plugin sees a query before the ones
// after it.
var directives = []string{
	"ready",
	"health",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"kubernetes",
	"forward",
}

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		log.Fatal(err)
	}
	coremain.Run()
}
