package chaos

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
)

// The workload: two VLANs, one per trunk (the lab kernel has no 802.1Q,
// and two untagged VLANs cannot share a parent), one in mode chunks and
// one in mode cluster, and a service on each, registered in Consul with a
// 1 s check and scaled within bounds.
const (
	// chunksVLAN is bed's VLAN: a /24 per host out of 172.80.0.0/16.
	chunksVLAN = bed.VLANName
	// poolVLAN is in mode cluster on the second trunk, one pool of a /26.
	poolVLAN    = "vlan81"
	poolTrunk   = "trunk1"
	poolSubnet  = "172.81.0.0/26"
	poolGateway = "172.81.0.1"

	// deregisterAfter is every service's check.deregisterAfter, the least
	// Consul accepts; checkInterval its interval.
	deregisterAfter = time.Minute
	checkInterval   = time.Second
)

// managed is one service of the workload.
type managed struct {
	name, vlan string
	replicas   int
	min, max   int
}

var workload = []managed{
	{name: "web", vlan: chunksVLAN, replicas: 4, min: 2, max: 6},
	{name: "api", vlan: poolVLAN, replicas: 3, min: 1, max: 5},
}

func serviceByName(name string) managed {
	for _, s := range workload {
		if s.name == name {
			return s
		}
	}
	panic("no service " + name)
}

// poolVLANDoc is the VLAN in mode cluster.
func poolVLANDoc() string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: %s
spec:
  trunk: %s
  subnet: %s
  gateway: %s
  rangePlan:
    mode: cluster
    quarantine: 15s
`, poolVLAN, poolTrunk, poolSubnet, poolGateway)
}

// serviceDoc is s's document with replicas and an environment variable
// whose value changes the tasks (a rolling update) when rev does.
func serviceDoc(s managed, replicas, rev int) string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata:
  name: %s
spec:
  image: %s
  args: ["-listen", ":8080"]
  env: {CHAOS_REV: "%d"}
  networks: [%s]
  replicas: %d
  scaling: {min: %d, max: %d}
  placement: {maxPerNode: 2}
  restart: {condition: any, delay: 1s}
  update: {parallelism: 2, delay: 1s, failureAction: continue}
  consul:
    port: 8080
    check: {http: /health, interval: %s, timeout: 1s, deregisterAfter: %s}
`, s.name, lab.ImageTestApp, rev, s.vlan, replicas, s.min, s.max, checkInterval, deregisterAfter)
}

// invalidDocs are documents the reconcilers must refuse without changing
// what runs: broken YAML, a wrong kind, bounds the wrong way round, a
// count outside them, an unknown VLAN's name in an existing service.
func invalidDocs(s managed) []string {
	good := serviceDoc(s, s.replicas, 0)
	return []string{
		"apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: " + s.name + "\nspec: [",
		strings.Replace(good, "kind: Service", "kind: Servic", 1),
		strings.Replace(good, fmt.Sprintf("scaling: {min: %d, max: %d}", s.min, s.max), fmt.Sprintf("scaling: {min: %d, max: %d}", s.max, s.min), 1),
		strings.Replace(good, fmt.Sprintf("replicas: %d", s.replicas), fmt.Sprintf("replicas: %d", s.max+3), 1),
		strings.Replace(good, "image: ", "imagee: ", 1),
	}
}

// poolAddrOK reports whether a is an address mode cluster may hand a task:
// in the subnet, neither its network nor broadcast address nor the
// gateway.
func poolAddrOK(a netip.Addr) bool {
	p := netip.MustParsePrefix(poolSubnet)
	last := p.Addr().As4()
	last[3] |= 0x3f
	return p.Contains(a) && a != p.Addr() && a != netip.AddrFrom4(last) && a != netip.MustParseAddr(poolGateway)
}

// addTrunk gives h the second trunk, a veth pair inside the host (the
// host reaches its own tasks through the shim; the other hosts check
// theirs). Boot deletes it, as a reboot would a link made at run time, so
// it is added again after every boot.
func addTrunk(ctx context.Context, h *lab.Host) error {
	if h.Exec(ctx, "ip", "link", "show", "dev", poolTrunk).Run() == nil {
		return nil
	}
	for _, args := range [][]string{
		{"link", "add", poolTrunk, "type", "veth", "peer", "name", poolTrunk + "p"},
		{"link", "set", poolTrunk + "p", "up"},
		{"link", "set", poolTrunk, "up"},
	} {
		if out, err := h.Exec(ctx, "ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: ip %v: %v: %s", h.Name, args, err, out)
		}
	}
	return nil
}

// Foreign objects: made beside the installation by someone else, never to
// be changed by it.
const (
	foreignService = "foreign-svc"
	foreignOverlay = "foreign-ovl"
	foreignConfig  = "foreign-cfg"
	foreignKey     = "other-app/config"
	foreignInside  = "swarmvlan-extra/note"
)

// foreign is what the foreign objects were when made.
type foreign struct {
	serviceID, serviceSpec string
	overlayID              string
	configHost, configID   string
	keys                   map[string]uint64 // key -> ModifyIndex
}

// makeForeign creates a swarm service and an overlay network through the
// manager h1, a config-only network on h2 and two KV keys outside the
// prefix.
func makeForeign(ctx context.Context, b *bed.Bed) (foreign, error) {
	var f foreign
	h1, h2 := b.Cluster.Host(1), b.Cluster.Host(2)
	for _, c := range [][]string{
		{"service", "create", "--detach", "--name", foreignService, "--replicas", "0", "--label", "owner=someone-else", lab.ImageTestApp},
		{"network", "create", "--driver", "overlay", "--attachable", "--label", "owner=someone-else", foreignOverlay},
	} {
		if out, err := h1.Exec(ctx, "docker", c...).CombinedOutput(); err != nil {
			return f, fmt.Errorf("docker %v: %v: %s", c, err, out)
		}
	}
	if out, err := h2.Exec(ctx, "docker", "network", "create", "--config-only", "--subnet", "192.168.77.0/24",
		"-o", "parent=nosuch0", "--label", "owner=someone-else", foreignConfig).CombinedOutput(); err != nil {
		return f, fmt.Errorf("docker network create %s: %v: %s", foreignConfig, err, out)
	}
	f.keys = map[string]uint64{}
	kv := b.Consul(h1).KV()
	for _, k := range []string{foreignKey, foreignInside} {
		if _, err := kv.Put(&api.KVPair{Key: k, Value: []byte("not swarmvlan's")}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
			return f, err
		}
	}
	return f, nil
}

// readForeign reads the foreign objects as they are now: the service's ID
// and spec, the networks' IDs, the keys' indexes. Hosts of down are not
// asked.
func readForeign(ctx context.Context, b *bed.Bed, mgr *managerClient, kv *api.KV) (foreign, error) {
	var f foreign
	d, err := mgr.get(ctx)
	if err != nil {
		return f, err
	}
	svc, _, err := d.ServiceInspectWithRaw(ctx, foreignService, swarm.ServiceInspectOptions{})
	if err != nil {
		return f, fmt.Errorf("service %s: %w", foreignService, err)
	}
	f.serviceID = svc.ID
	f.serviceSpec = fmt.Sprintf("%s %v %d %s", svc.Spec.Name, svc.Spec.Labels, *svc.Spec.Mode.Replicated.Replicas, svc.Spec.TaskTemplate.ContainerSpec.Image)
	n, err := d.NetworkInspect(ctx, foreignOverlay, network.InspectOptions{})
	if err != nil {
		return f, fmt.Errorf("network %s: %w", foreignOverlay, err)
	}
	f.overlayID = n.ID
	h2 := b.Cluster.Host(2)
	f.configHost = h2.Name
	if mgr.r.dockerUp(h2) {
		n, err := b.Docker(h2).NetworkInspect(ctx, foreignConfig, network.InspectOptions{})
		if err != nil {
			return f, fmt.Errorf("%s: network %s: %w", h2.Name, foreignConfig, err)
		}
		f.configID = n.ID
	}
	if kv != nil {
		f.keys = map[string]uint64{}
		for _, k := range []string{foreignKey, foreignInside} {
			p, _, err := kv.Get(k, (&api.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return f, err
			}
			if p == nil || string(p.Value) != "not swarmvlan's" {
				f.keys[k] = 0
			} else {
				f.keys[k] = p.ModifyIndex
			}
		}
	}
	return f, nil
}
