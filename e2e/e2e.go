// Package e2e holds swarmvlan's end-to-end tests. Each test brings up a
// multi-host lab cluster (lab.StartCluster: hosts in network namespaces,
// each with its own dockerd and Consul agent, forming one swarm and one
// Consul cluster), runs `reconciler run` on every host as in production,
// writes documents with `reconciler apply` or straight into Consul KV, and
// checks the end state of Docker, the kernel and Consul's catalog, before
// and after the faults a real cluster sees: a killed leader, a lost worker,
// a restarted dockerd, a reboot, Consul down, a snapshot restore, a burst of
// bad documents, a VLAN deleted under its tasks.
//
// This file holds the documents the tests write; the tests and their
// helpers are in the _test files.
package e2e

import (
	"fmt"
	"strings"

	"swarmvlan/lab"
)

// The VLAN every test uses: untagged on the lab's trunk (the lab kernel has
// no 802.1Q), a /24 per host out of a /16, the first /24 kept out.
const (
	vlanName    = "vlan80"
	vlanSubnet  = "172.80.0.0/16"
	vlanExclude = "172.80.0.0/24"
	// configNetwork and shimLink are what the host role makes for it on
	// every host; swarmNetwork is what the leader makes.
	configNetwork = vlanName + "-config"
	swarmNetwork  = vlanName
	shimLink      = "sv-" + vlanName
)

// vlanDoc is the VLAN document.
func vlanDoc() string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: %s
spec:
  trunk: %s
  subnet: %s
  gateway: 172.80.0.1
  rangePlan:
    chunkPrefix: 24
    exclude: [%s]
`, vlanName, lab.TrunkInterface, vlanSubnet, vlanExclude)
}

// serviceOpts shape a Service document of the test image.
type serviceOpts struct {
	name       string
	replicas   int
	maxPerNode int
	// consul registers the tasks with an HTTP check on /health.
	consul bool
}

// serviceDoc is a Service document of the test image on the VLAN,
// serving HTTP on 8080, with replica bounds for the scale API.
func serviceDoc(o serviceOpts) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: swarmvlan/v1
kind: Service
metadata:
  name: %s
spec:
  image: %s
  args: ["-listen", ":8080"]
  networks: [%s]
  replicas: %d
  scaling: {min: 1, max: 8}
`, o.name, lab.ImageTestApp, vlanName, o.replicas)
	if o.maxPerNode > 0 {
		fmt.Fprintf(&b, "  placement: {maxPerNode: %d}\n", o.maxPerNode)
	}
	if o.consul {
		b.WriteString(`  consul:
    port: 8080
    check: {http: /health, interval: 1s, timeout: 1s, deregisterAfter: 1m}
`)
	}
	return b.String()
}

// webDoc is the service most tests run: 6 replicas, at most 2 per node,
// registered in Consul with a 1 s HTTP check.
func webDoc(replicas int) string {
	return serviceDoc(serviceOpts{name: "web", replicas: replicas, maxPerNode: 2, consul: true})
}
