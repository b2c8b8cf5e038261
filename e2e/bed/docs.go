package bed

import (
	"fmt"
	"strings"

	"swarmvlan/lab"
)

// The VLAN every test uses: untagged on the lab's trunk (the lab kernel has
// no 802.1Q), a /24 per host out of a /16, the first /24 kept out.
const (
	// VLANName is the VLAN document's name.
	VLANName = "vlan80"
	// VLANSubnet is the VLAN's subnet.
	VLANSubnet = "172.80.0.0/16"
	// VLANExclude is the part of the subnet the range plan keeps out.
	VLANExclude = "172.80.0.0/24"
	// VLANGateway is the VLAN's gateway, every task's default route.
	VLANGateway = "172.80.0.1"
	// ConfigNetwork and ShimLink are what the host role makes for the VLAN
	// on every host; SwarmNetwork is what the leader makes.
	ConfigNetwork = VLANName + "-config"
	// SwarmNetwork is the swarm-scoped network the leader builds.
	SwarmNetwork = VLANName
	// ShimLink is the macvlan link the host role adds so the host reaches
	// its own containers.
	ShimLink = "sv-" + VLANName
)

// VLANDoc is the VLAN document.
func VLANDoc() string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: %s
spec:
  trunk: %s
  subnet: %s
  gateway: %s
  rangePlan:
    chunkPrefix: 24
    exclude: [%s]
`, VLANName, lab.TrunkInterface, VLANSubnet, VLANGateway, VLANExclude)
}

// ServiceOpts shape a Service document of the test image.
type ServiceOpts struct {
	Name       string
	Replicas   int
	MaxPerNode int
	// Consul registers the tasks with an HTTP check on /health.
	Consul bool
}

// ServiceDoc is a Service document of the test image on the VLAN,
// serving HTTP on 8080, with replica bounds for the scale API.
func ServiceDoc(o ServiceOpts) string {
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
`, o.Name, lab.ImageTestApp, VLANName, o.Replicas)
	if o.MaxPerNode > 0 {
		fmt.Fprintf(&b, "  placement: {maxPerNode: %d}\n", o.MaxPerNode)
	}
	if o.Consul {
		b.WriteString(`  consul:
    port: 8080
    check: {http: /health, interval: 1s, timeout: 1s, deregisterAfter: 1m}
`)
	}
	return b.String()
}

// WebDoc is the service most tests run: 6 replicas, at most 2 per node,
// registered in Consul with a 1 s HTTP check.
func WebDoc(replicas int) string {
	return ServiceDoc(ServiceOpts{Name: "web", Replicas: replicas, MaxPerNode: 2, Consul: true})
}

// WebWant is the converged state of WebDoc(replicas).
func WebWant(replicas int) Want {
	return Want{Service: "web", Replicas: replicas, MaxPerNode: 2, Consul: true}
}
