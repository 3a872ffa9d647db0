// Command coredns is CoreDNS with the plugins of the Corefile kubeadm deploys (errors, health, ready,
// kubernetes, prometheus, forward, cache, loop, reload, loadbalance) plus log and hosts. The same main as
// github.com/coredns/coredns, with fewer plugins linked in: the cloud DNS providers (route53, azure, clouddns)
// would more than double the build and are never used on the local node.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
