package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"swarmvlan/state"
)

// webWant is the converged state of webDoc(replicas).
func webWant(replicas int) want {
	return want{service: "web", replicas: replicas, maxPerNode: 2, consul: true}
}

// seed applies the VLAN, waits until every host is ready for it, then
// applies web with 6 replicas and waits until it converged; it returns
// web's tasks.
func (b *bed) seed() []task {
	b.t.Helper()
	b.apply(vlanDoc())
	b.nodesReady(3 * time.Minute)
	b.apply(webDoc(6))
	tasks, took := b.waitConverged(webWant(6), 4*time.Minute)
	b.t.Logf("web: 6 tasks running and passing in Consul %s after apply", took.Round(10*time.Millisecond))
	return tasks
}

// TestSeedWalkthrough is the README's walkthrough on three hosts: the VLAN
// and a web service of 6 replicas (at most 2 per node) applied with
// `reconciler apply`, then every part of the result checked on every host.
func TestSeedWalkthrough(t *testing.T) {
	b := newBed(t, 3, 3)
	tasks := b.seed()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()

	// A config-only network on every host, each with its own chunk: a /24
	// of the subnet, outside the excluded range, none shared, and the one
	// the leader allocated to that node in KV.
	chunks, err := b.chunks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subnet, exclude := netip.MustParsePrefix(vlanSubnet), netip.MustParsePrefix(vlanExclude)
	owner := map[netip.Prefix]string{}
	for host, c := range chunks {
		if c.Bits() != 24 || !subnet.Contains(c.Addr()) || c.Overlaps(exclude) {
			t.Errorf("%s: chunk %s: want a /24 of %s outside %s", host, c, vlanSubnet, vlanExclude)
		}
		if other, dup := owner[c]; dup {
			t.Errorf("chunk %s on both %s and %s", c, other, host)
		}
		owner[c] = host
	}
	if len(chunks) != 3 {
		t.Errorf("chunks on %d hosts, want 3: %v", len(chunks), chunks)
	}
	for _, h := range b.c.Hosts() {
		p, _, err := b.consul(b.h1).KV().Get(fmt.Sprintf("%sstate/allocations/%s/%s", kvPrefix, vlanName, h.ID), nil)
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
	sn, err := b.mgr.NetworkInspect(ctx, swarmNetwork, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sn.Scope != "swarm" || sn.Driver != "macvlan" || sn.ConfigFrom.Network != configNetwork {
		t.Errorf("swarm network %s: scope %q, driver %q, config from %q; want swarm, macvlan, %s",
			swarmNetwork, sn.Scope, sn.Driver, sn.ConfigFrom.Network, configNetwork)
	}

	// Tasks spread 2 per host (converged has checked each address is in
	// its host's chunk, unique, and passing in Consul).
	per := map[string]int{}
	for _, tk := range tasks {
		per[tk.Host]++
	}
	for _, h := range b.c.Hosts() {
		if per[h.Name] != 2 {
			t.Errorf("%s runs %d web tasks, want 2 (tasks: %v)", h.Name, per[h.Name], tasks)
		}
	}

	// The kernel side on every host, and what the reconcilers report.
	if err := b.hostNetReady(ctx); err != nil {
		t.Error(err)
	}
	// The statuses follow within the leader's requeue period.
	b.waitFor("vlan and service statuses ready", time.Minute, func(ctx context.Context) error {
		for _, o := range []struct{ section, name string }{{"vlans", vlanName}, {"services", "web"}} {
			st, ok, err := b.status(ctx, o.section, o.name)
			if err != nil || !ok {
				return fmt.Errorf("status/%s/%s: %v (present %v)", o.section, o.name, err, ok)
			}
			if c, _ := condition(st, "Ready"); c.Status != "True" || st.LastError != "" {
				return fmt.Errorf("status/%s/%s: Ready %+v, last error %q", o.section, o.name, c, st.LastError)
			}
		}
		return nil
	})
	t.Logf("reconciler status:\n%s", b.reconcilerCmd("status"))
}
