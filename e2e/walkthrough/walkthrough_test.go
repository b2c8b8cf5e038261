package walkthrough

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"swarmvlan/e2e/bed"
	"swarmvlan/state"
)

// TestSeedWalkthrough is the README's walkthrough on three hosts: the VLAN
// and a web service of 6 replicas (at most 2 per node) applied with
// `reconciler apply`, then every part of the result checked on every host.
func TestSeedWalkthrough(t *testing.T) {
	b := bed.New(t, 3, 3)
	tasks := b.Seed()
	ctx, cancel := context.WithTimeout(b.Ctx, 2*time.Minute)
	defer cancel()

	// A config-only network on every host, each with its own chunk: a /24
	// of the subnet, outside the excluded range, none shared, and the one
	// the leader allocated to that node in KV.
	chunks, err := b.Chunks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subnet, exclude := netip.MustParsePrefix(bed.VLANSubnet), netip.MustParsePrefix(bed.VLANExclude)
	owner := map[netip.Prefix]string{}
	for host, c := range chunks {
		if c.Bits() != 24 || !subnet.Contains(c.Addr()) || c.Overlaps(exclude) {
			t.Errorf("%s: chunk %s: want a /24 of %s outside %s", host, c, bed.VLANSubnet, bed.VLANExclude)
		}
		if other, dup := owner[c]; dup {
			t.Errorf("chunk %s on both %s and %s", c, other, host)
		}
		owner[c] = host
	}
	if len(chunks) != 3 {
		t.Errorf("chunks on %d hosts, want 3: %v", len(chunks), chunks)
	}
	for _, h := range b.Cluster.Hosts() {
		p, _, err := b.Consul(b.H1).KV().Get(fmt.Sprintf("%sstate/allocations/%s/%s", bed.KVPrefix, bed.VLANName, h.ID), nil)
		if err != nil || p == nil {
			t.Errorf("%s: no allocation in KV (%v)", h.Name, err)
			continue
		}
		var al state.Allocation
		if err := json.Unmarshal(p.Value, &al); err != nil {
			t.Errorf("%s: allocation %s: %v", h.Name, p.Value, err)
			continue
		}
		if al.Chunk != chunks[h.Name].String() {
			t.Errorf("%s: allocated %s in KV, config network holds %s", h.Name, al.Chunk, chunks[h.Name])
		}
	}

	// The swarm-scoped network built from the config networks.
	sn, err := b.Mgr.NetworkInspect(ctx, bed.SwarmNetwork, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sn.Scope != "swarm" || sn.Driver != "macvlan" || sn.ConfigFrom.Network != bed.ConfigNetwork {
		t.Errorf("swarm network %s: scope %q, driver %q, config from %q; want swarm, macvlan, %s",
			bed.SwarmNetwork, sn.Scope, sn.Driver, sn.ConfigFrom.Network, bed.ConfigNetwork)
	}

	// Tasks spread 2 per host (converged has checked each address is in
	// its host's chunk, unique, and passing in Consul).
	per := map[string]int{}
	for _, tk := range tasks {
		per[tk.Host]++
	}
	for _, h := range b.Cluster.Hosts() {
		if per[h.Name] != 2 {
			t.Errorf("%s runs %d web tasks, want 2 (tasks: %v)", h.Name, per[h.Name], tasks)
		}
	}

	// The kernel side on every host, and what the reconcilers report.
	if err := b.HostNetReady(ctx); err != nil {
		t.Error(err)
	}
	// The statuses follow within the leader's requeue period.
	b.WaitFor("vlan and service statuses ready", time.Minute, func(ctx context.Context) error {
		for _, o := range []struct{ section, name string }{{"vlans", bed.VLANName}, {"services", "web"}} {
			st, ok, err := b.Status(ctx, o.section, o.name)
			if err != nil || !ok {
				return fmt.Errorf("status/%s/%s: %v (present %v)", o.section, o.name, err, ok)
			}
			if c, _ := bed.Condition(st, "Ready"); c.Status != "True" || st.LastError != "" {
				return fmt.Errorf("status/%s/%s: Ready %+v, last error %q", o.section, o.name, c, st.LastError)
			}
		}
		return nil
	})
	t.Logf("reconciler status:\n%s", b.ReconcilerCmd("status"))
}
