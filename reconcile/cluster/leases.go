package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// leasePlan is what the leader does with a cluster-mode VLAN's leases.
type leasePlan struct {
	// Release are held leases of nodes gone from the swarm: their
	// quarantine starts now.
	Release []netip.Addr
	// Delete are released leases whose quarantine has passed.
	Delete []netip.Addr
	// Held counts the leases in force per node ID; Quarantined those
	// released and not yet free.
	Held        map[string]int
	Quarantined int
	// NextRelease is when the earliest quarantine ends (zero if none).
	NextRelease time.Time
}

// planLeases frees the leases of nodes removed from the swarm, through
// quarantine, and forgets released leases once their quarantine is over.
// The owner rule holds for nodes in the swarm, down or not: a partitioned
// or crashed node's containers may still be on the VLAN, so its leases stay
// until the node is removed from the swarm. Pure.
func planLeases(have map[netip.Addr]state.LeaseEntry, inSwarm map[string]bool, now time.Time, quarantine time.Duration) leasePlan {
	p := leasePlan{Held: map[string]int{}}
	for _, a := range slices.SortedFunc(mapKeys(have), netip.Addr.Compare) {
		e := have[a]
		switch {
		case e.Held() && inSwarm[e.Node]:
			p.Held[e.Node]++
		case e.Held():
			p.Release = append(p.Release, a)
			p.Quarantined++
			p.next(now.Add(quarantine))
		case e.Free(now, quarantine):
			p.Delete = append(p.Delete, a)
		default:
			p.Quarantined++
			p.next(e.Released.Add(quarantine))
		}
	}
	return p
}

func (p *leasePlan) next(t time.Time) {
	if p.NextRelease.IsZero() || t.Before(p.NextRelease) {
		p.NextRelease = t
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// reconcileClusterVLAN converges a VLAN in rangePlan.mode cluster: no
// chunks (a switch from chunks is refused while tasks use the VLAN), the
// leases of nodes removed from the swarm freed through quarantine, and the
// swarm network.
func (c *Cluster) reconcileClusterVLAN(ctx context.Context, lead *state.Leadership, k reconcile.Key, vlan *spec.VLAN) reconcile.Outcome {
	if _, err := vlan.Pool(); err != nil {
		return reconcile.Terminal(fmt.Errorf("vlan %q: pool: %w", k.Name, err))
	}
	swarmNodes, err := c.cfg.Docker.NodeList(ctx, engine.Filter())
	if err != nil {
		return reconcile.Retry(fmt.Errorf("vlan %q: list nodes: %w", k.Name, err))
	}
	inSwarm := map[string]bool{}
	hostnames := map[string]string{}
	for _, n := range swarmNodes {
		inSwarm[n.ID] = true
		hostnames[n.ID] = n.Description.Hostname
	}
	det := VLANDetails{Mode: spec.RangeModeCluster}
	sw, err := c.swarmNetworkOf(ctx, vlan)
	if err != nil {
		return reconcile.Retry(err)
	}
	netSt, netErr := EnsureSwarmNetwork(ctx, c.cfg.Docker, sw)
	det.Network = netSt
	c.mu.Lock()
	if netSt.State == state.NetworkReady && netSt.ID != "" {
		c.netIDs[k.Name] = netSt.ID
	} else {
		delete(c.netIDs, k.Name)
	}
	c.mu.Unlock()

	// Chunks left from mode chunks: kept while tasks use the VLAN (their
	// addresses came from them), released once none does.
	_, indexes, err := c.cfg.Store.Allocations(ctx, k.Name)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("vlan %q: read allocations: %w", k.Name, err))
	}
	if len(indexes) > 0 {
		users, err := c.vlanUsers(ctx, k.Name)
		switch {
		case err != nil:
			return reconcile.Retry(fmt.Errorf("vlan %q: users: %w", k.Name, err))
		case len(users) > 0:
			det.Problems = append(det.Problems, fmt.Sprintf("rangePlan.mode cluster refused while the VLAN's chunks are in use by %s: remove those services (or set mode chunks again) first", strings.Join(users, ", ")))
		default:
			for id, idx := range indexes {
				if _, err := lead.Delete(ctx, c.cfg.Store.AllocationKey(k.Name, id), idx); err != nil {
					return reconcile.Retry(fmt.Errorf("vlan %q: release chunk of %s for mode cluster: %w", k.Name, id, err))
				}
			}
		}
	}

	have, err := c.cfg.Store.Leases(ctx, k.Name)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("vlan %q: read leases: %w", k.Name, err))
	}
	now := c.cfg.Now()
	quarantine := quarantineOf(vlan)
	lp := planLeases(have, inSwarm, now, quarantine)
	for _, a := range lp.Release {
		e := have[a]
		released := now.UTC()
		e.Lease.Released = &released
		b, err := state.LeaseValue(e.Lease)
		if err != nil {
			return reconcile.Retry(err)
		}
		if _, err := lead.CAS(ctx, c.cfg.Store.LeaseKey(k.Name, a), b, e.ModifyIndex); err != nil {
			return reconcile.Retry(fmt.Errorf("vlan %q: release lease %s of departed node %s: %w", k.Name, a, e.Node, err))
		}
	}
	for _, a := range lp.Delete {
		if _, err := lead.Delete(ctx, c.cfg.Store.LeaseKey(k.Name, a), have[a].ModifyIndex); err != nil {
			return reconcile.Retry(fmt.Errorf("vlan %q: forget lease %s after quarantine: %w", k.Name, a, err))
		}
	}
	det.Leases = map[string]int{}
	total := 0
	for id, n := range lp.Held {
		name := hostnames[id]
		if name == "" {
			name = id
		}
		det.Leases[name] = n
		total += n
	}
	det.LeasesQuarantined = lp.Quarantined

	ready := netSt.State == state.NetworkReady && len(det.Problems) == 0
	var why []string
	if netSt.State != state.NetworkReady {
		why = append(why, fmt.Sprintf("swarm network %s: %s", netSt.State, netSt.Message))
	}
	why = append(why, det.Problems...)
	det.Summary = fmt.Sprintf("mode cluster: %d address(es) leased, %d in quarantine, network %s", total, lp.Quarantined, netSt.State)
	// Nodes leave the swarm without a KV change: an idle pass looks again.
	out := vlanOutcome(netErr, netSt, lp.NextRelease, now, reconcile.Poll(30*time.Second))
	return out.With(&det, readyCondition(ready, strings.Join(why, "; ")))
}

// swarmNetworkOf is the swarm network the VLAN asks for, by the Docker
// names of its networks (spec.docker), with the records of networks
// adopted from a hand-made setup, as in mode chunks.
func (c *Cluster) swarmNetworkOf(ctx context.Context, vlan *spec.VLAN) (SwarmNetwork, error) {
	name := vlan.Metadata.Name
	sw := SwarmNetwork{VLAN: name, Driver: vlan.Spec.Driver, Name: vlan.NetworkDockerName(), ConfigName: vlan.ConfigNetworkDockerName()}
	if vlan.Spec.Docker != nil {
		// Only a VLAN with Docker names of its own can have adopted
		// networks: the records are read for those alone.
		adopted, err := c.cfg.Store.AdoptedNetworksList(ctx)
		if err != nil {
			return sw, fmt.Errorf("vlan %q: %w", name, err)
		}
		sw.Adopted = adopted
	}
	return sw, nil
}

// vlanUsers names the services attached to the VLAN's swarm network,
// found by its Docker name (the VLAN document in force says it).
func (c *Cluster) vlanUsers(ctx context.Context, vlan string) ([]string, error) {
	sw := SwarmNetwork{VLAN: vlan}
	if v, ok := c.cfg.View.VLAN(vlan); ok {
		var err error
		if sw, err = c.swarmNetworkOf(ctx, v); err != nil {
			return nil, err
		}
	}
	n, err := engine.FindNetwork(ctx, c.cfg.Docker, sw.name(), sw.owned)
	if err != nil || n == nil {
		return nil, err
	}
	return networkSwarmUsers(ctx, c.cfg.Docker, n)
}

// quarantineOf is the VLAN's quarantine, the default when not given.
func quarantineOf(v *spec.VLAN) time.Duration {
	if v.Spec.RangePlan.Quarantine == "" {
		return spec.Duration(spec.DefaultQuarantine).Duration()
	}
	return v.Spec.RangePlan.Quarantine.Duration()
}

// LeasePreview is one node's leases on a cluster-mode VLAN, for
// `reconciler plan`.
type LeasePreview struct {
	Hostname string `json:"hostname"`
	Node     string `json:"node"`
	// InSwarm is false for a node removed from the swarm: its leases go
	// into quarantine at the leader's next pass.
	InSwarm bool `json:"inSwarm"`
	// Shim is the node's shim address; Tasks its task addresses.
	Shim  string   `json:"shim,omitempty"`
	Tasks []string `json:"tasks,omitempty"`
}

// ClusterPreview is a cluster-mode VLAN's pool and leases as they stand.
type ClusterPreview struct {
	PoolSize    int            `json:"poolSize"`
	Free        int            `json:"free"`
	Quarantined int            `json:"quarantined"`
	Nodes       []LeasePreview `json:"nodes"`
}

// PreviewLeases summarises a cluster-mode VLAN's leases per node. Pure.
func PreviewLeases(vlan *spec.VLAN, nodes []SwarmNode, have map[netip.Addr]state.LeaseEntry, now time.Time) (ClusterPreview, error) {
	pool, err := vlan.Pool()
	if err != nil {
		return ClusterPreview{}, err
	}
	q := quarantineOf(vlan)
	inSwarm := map[string]string{}
	for _, n := range nodes {
		inSwarm[n.ID] = n.Hostname
	}
	byNode := map[string]*LeasePreview{}
	out := ClusterPreview{PoolSize: pool.Size()}
	for _, a := range slices.SortedFunc(mapKeys(have), netip.Addr.Compare) {
		e := have[a]
		if !e.Held() {
			if !e.Free(now, q) {
				out.Quarantined++
			}
			continue
		}
		np := byNode[e.Node]
		if np == nil {
			name, ok := inSwarm[e.Node]
			if !ok {
				name = e.Hostname
			}
			np = &LeasePreview{Hostname: name, Node: e.Node, InSwarm: ok}
			byNode[e.Node] = np
		}
		if e.Kind == state.LeaseShim {
			np.Shim = a.String()
		} else {
			np.Tasks = append(np.Tasks, a.String())
		}
	}
	for _, n := range nodes {
		if byNode[n.ID] == nil {
			byNode[n.ID] = &LeasePreview{Hostname: n.Hostname, Node: n.ID, InSwarm: true}
		}
	}
	for _, np := range byNode {
		out.Nodes = append(out.Nodes, *np)
	}
	slices.SortFunc(out.Nodes, func(a, b LeasePreview) int { return strings.Compare(a.Hostname+a.Node, b.Hostname+b.Node) })
	out.Free = len(freeOf(pool, have, now, q))
	return out, nil
}

// freeOf lists the pool's addresses no lease holds or keeps in quarantine.
func freeOf(pool *spec.AddressPool, have map[netip.Addr]state.LeaseEntry, now time.Time, q time.Duration) []netip.Addr {
	var out []netip.Addr
	pool.Each(func(a netip.Addr) bool {
		if e, ok := have[a]; !ok || e.Free(now, q) {
			out = append(out, a)
		}
		return true
	})
	return out
}
