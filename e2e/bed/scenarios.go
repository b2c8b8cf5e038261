package bed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/docker/docker/api/types/network"

	"swarmvlan/lab"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// The scenarios below are the end-to-end tests that run on every Docker
// Engine: e2e/walkthrough, e2e/restart and e2e/failover run each on a
// cluster of its own, e2e/engines one after the other on one cluster per
// Engine. Each fails the bed's test (see For).

// CheckWalkthrough checks every part of the README's walkthrough after
// Seed on three hosts: each host's chunk and its allocation in KV, the
// swarm network, the tasks spread two per host, the kernel side and the
// statuses.
func (b *Bed) CheckWalkthrough(tasks []Task) {
	t := b.t
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 2*time.Minute)
	defer cancel()

	// A config-only network on every host, each with its own chunk: a /24
	// of the subnet, outside the excluded range, none shared, and the one
	// the leader allocated to that node in KV.
	chunks, err := b.Chunks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subnet, exclude := netip.MustParsePrefix(VLANSubnet), netip.MustParsePrefix(VLANExclude)
	owner := map[netip.Prefix]string{}
	for host, c := range chunks {
		if c.Bits() != 24 || !subnet.Contains(c.Addr()) || c.Overlaps(exclude) {
			t.Errorf("%s: chunk %s: want a /24 of %s outside %s", host, c, VLANSubnet, VLANExclude)
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
		p, _, err := b.Consul(b.H1).KV().Get(fmt.Sprintf("%sstate/allocations/%s/%s", KVPrefix, VLANName, h.ID), nil)
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
	sn, err := b.Mgr.NetworkInspect(ctx, SwarmNetwork, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sn.Scope != "swarm" || sn.Driver != "macvlan" || sn.ConfigFrom.Network != ConfigNetwork {
		t.Errorf("swarm network %s: scope %q, driver %q, config from %q; want swarm, macvlan, %s",
			SwarmNetwork, sn.Scope, sn.Driver, sn.ConfigFrom.Network, ConfigNetwork)
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

	// Every task's endpoint on the VLAN has the VLAN's gateway (Engine 29
	// gives a macvlan network none unless it is asked for one).
	hosts := map[string]*lab.Host{}
	for _, h := range b.Cluster.Hosts() {
		hosts[h.Name] = h
	}
	for _, tk := range tasks {
		c, err := b.Docker(hosts[tk.Host]).ContainerInspect(ctx, tk.Container)
		if err != nil {
			t.Errorf("%s: task %s: %v", tk.Host, tk.TaskID, err)
			continue
		}
		var gw string
		if c.NetworkSettings != nil && c.NetworkSettings.Networks[SwarmNetwork] != nil {
			gw = c.NetworkSettings.Networks[SwarmNetwork].Gateway
		}
		if gw != VLANGateway {
			t.Errorf("%s: task %s on %s: gateway %q, want %s", tk.Host, tk.TaskID, SwarmNetwork, gw, VLANGateway)
		}
	}

	// The kernel side on every host, and what the reconcilers report.
	if err := b.HostNetReady(ctx); err != nil {
		t.Error(err)
	}
	// The statuses follow within the leader's requeue period.
	b.WaitFor("vlan and service statuses ready", time.Minute, func(ctx context.Context) error {
		for _, o := range []struct{ section, name string }{{"vlans", VLANName}, {"services", "web"}} {
			st, ok, err := b.Status(ctx, o.section, o.name)
			if err != nil || !ok {
				return fmt.Errorf("status/%s/%s: %v (present %v)", o.section, o.name, err, ok)
			}
			if c, _ := Condition(st, "Ready"); c.Status != "True" || st.LastError != "" {
				return fmt.Errorf("status/%s/%s: Ready %+v, last error %q", o.section, o.name, c, st.LastError)
			}
		}
		return nil
	})
	t.Logf("reconciler status:\n%s", b.ReconcilerCmd("status"))
}

// seededBack returns a check that every host has the chunk it has now, its
// kernel state and two of Seed's six web tasks, running from that chunk
// and passing in Consul. It fails the test if the seeded state is not
// there to begin with.
func (b *Bed) seededBack() func(ctx context.Context) error {
	t := b.t
	t.Helper()
	if err := b.HostNetReady(b.Ctx); err != nil {
		t.Fatal(err)
	}
	before, err := b.Chunks(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context) error {
		chunks, err := b.Chunks(ctx)
		if err != nil {
			return err
		}
		for h, c := range before {
			if chunks[h] != c {
				return fmt.Errorf("%s: chunk %s, was %s", h, chunks[h], c)
			}
		}
		if err := b.HostNetReady(ctx); err != nil {
			return err
		}
		tasks, err := b.Converged(ctx, WebWant(6))
		if err != nil {
			return err
		}
		per := map[string]int{}
		for _, tk := range tasks {
			per[tk.Host]++
		}
		for _, h := range b.Cluster.Hosts() {
			if per[h.Name] != 2 {
				return fmt.Errorf("%s runs %d web tasks, want 2", h.Name, per[h.Name])
			}
		}
		return nil
	}
}

// RestartDocker crashes h's dockerd (SIGKILL, then start) after Seed on
// three hosts: h's config network, kernel state and two web tasks must
// come back, from its own chunk and passing in Consul, and h's reconciler
// must not exit.
func (b *Bed) RestartDocker(h *lab.Host) {
	t := b.t
	t.Helper()
	back := b.seededBack()
	running := func() map[string]bool {
		tasks, err := b.Running(b.Ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, tk := range tasks {
			if tk.Host == h.Name {
				out[tk.Container] = true
			}
		}
		return out
	}
	was := running()
	h.KillDocker()
	begin := time.Now()
	if err := h.StartDocker(b.Ctx); err != nil {
		t.Fatal(err)
	}
	b.WaitFor(h.Name+" back after a dockerd restart", 4*time.Minute, back)
	kept := 0
	for id := range running() {
		if was[id] {
			kept++
		}
	}
	t.Logf("dockerd restart on %s: everything back %s after the daemon started (%d of its 2 task containers survived the restart)",
		h.Name, time.Since(begin).Round(10*time.Millisecond), kept)
	if p := b.Proc(h); !p.Running() {
		t.Fatalf("reconciler on %s exited during the dockerd restart: %v", h.Name, p.Err())
	}
}

// Reboot crashes and boots h after Seed on three hosts (its links and exec
// root gone, its reconciler started again): the config network, trunk0's
// promiscuous mode and the shim must come back, and h must run its two web
// tasks again, from its own chunk, passing in Consul.
func (b *Bed) Reboot(h *lab.Host) {
	t := b.t
	t.Helper()
	back := b.seededBack()
	before, err := b.Chunks(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.Crash(h)
	begin := time.Now()
	b.BootOnly(h)
	// Boot took the shim and promiscuous mode: only the host role can
	// put them back.
	gone, err := b.Kernel(b.Ctx, h, before[h.Name])
	if err != nil {
		t.Fatal(err)
	}
	if gone.Promisc || gone.Shim || gone.Route {
		t.Fatalf("%s's kernel state survived the reboot: %+v", h.Name, gone)
	}
	b.StartReconciler(h)
	b.WaitFor(h.Name+" back after a reboot", 4*time.Minute, back)
	t.Logf("reboot of %s: everything back %s after boot", h.Name, time.Since(begin).Round(10*time.Millisecond))
}

// KillLeaderMidReconcile applies n services of one replica (svc-01, ...)
// once every node is ready for the VLAN, and SIGKILLs the leading
// reconciler as soon as it has created the first: another manager must
// take over, and every service must exist exactly once, run and be ready.
// Services managed before stay as they are.
func (b *Bed) KillLeaderMidReconcile(n int) {
	t := b.t
	t.Helper()
	var old *lab.Host
	b.WaitFor("one leader", time.Minute, func(ctx context.Context) (err error) {
		old, err = b.Leader(ctx)
		return err
	})
	had, err := b.ManagedServices(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}

	var docs []string
	var names []string
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("svc-%02d", i)
		names = append(names, name)
		docs = append(docs, ServiceDoc(ServiceOpts{Name: name, Replicas: 1}))
	}
	b.Apply(docs...)
	// Kill it as soon as it has created the first service, with the rest
	// in its queue or in flight.
	var before int
	b.WaitFor("the leader creates the first service", time.Minute, func(ctx context.Context) error {
		svcs, err := b.ManagedServices(ctx)
		if before = len(svcs) - len(had); err == nil && before == 0 {
			err = errors.New("no service yet")
		}
		return err
	})
	killed := time.Now()
	b.Proc(old).Kill()
	after := -1
	if svcs, err := b.ManagedServices(b.Ctx); err == nil {
		after = len(svcs) - len(had)
	}
	t.Logf("killed the leader on %s while it created %d services: %d existed just before the kill, %d just after",
		old.Name, len(docs), before, after)

	// The first reconcile of a manager that leads after the kill.
	var next *lab.Host
	var first time.Time
	b.WaitFor("another manager leads and reconciles", 2*time.Minute, func(ctx context.Context) error {
		for _, h := range b.Cluster.Managers() {
			if h == old {
				continue
			}
			for _, l := range LogLines(b.Proc(h).Logs(), "first reconcile as leader") {
				if at, ok := LogTime(l); ok && at.After(killed) {
					next, first = h, at
					return nil
				}
			}
		}
		return errors.New("no first reconcile as leader logged since the kill")
	})
	var won time.Time
	for _, l := range LogLines(b.Proc(next).Logs(), "leading") {
		if at, ok := LogTime(l); ok && at.After(killed) {
			won = at
			break
		}
	}
	t.Logf("%s leads after %s: lock taken %s after the kill, first reconcile %s after that",
		next.Name, old.Name, won.Sub(killed).Round(10*time.Millisecond), first.Sub(won).Round(time.Millisecond))
	Figure(t, "leader failover, SIGKILL to the new leader's first reconcile", first.Sub(killed))
	if got, err := b.Leader(b.Ctx); err != nil || got != next {
		t.Errorf("leader after failover: %v, %v; want %s", got, err, next.Name)
	}

	took := b.WaitFor(fmt.Sprintf("all %d services converged", n), 5*time.Minute, func(ctx context.Context) error {
		for _, n := range names {
			if _, err := b.Converged(ctx, Want{Service: n, Replicas: 1}); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("all services converged %s after the new leader took over", took.Round(10*time.Millisecond))

	// Exactly one Docker service per document, nothing else managed, and
	// each with one task ever desired running (converged checked it).
	svcs, err := b.ManagedServices(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if len(svcs[n]) != 1 {
			t.Errorf("service %s exists %d times", n, len(svcs[n]))
		}
		if got := svcs[n][0].Spec.Labels[spec.LabelName]; len(svcs[n]) == 1 && got != n {
			t.Errorf("service %s labelled %s=%q", n, spec.LabelName, got)
		}
	}
	for n := range svcs {
		if _, ok := had[n]; !ok && !slices.Contains(names, n) {
			t.Errorf("unexpected managed service %s", n)
		}
	}
	b.WaitFor("every service's status ready", time.Minute, func(ctx context.Context) error {
		for _, n := range names {
			st, ok, err := b.Status(ctx, "services", n)
			if err != nil || !ok {
				return fmt.Errorf("status of %s: %v (present %v)", n, err, ok)
			}
			if c, _ := Condition(st, "Ready"); c.Status != "True" {
				return fmt.Errorf("status of %s: %+v", n, c)
			}
		}
		return nil
	})
}
