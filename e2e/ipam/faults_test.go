package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// burstSubnet is a /25: room for 60 tasks and three shims.
const burstSubnet = "172.80.0.0/25"

// TestClusterFaults: 60 task starts at once; a host killed and removed
// from the swarm; every Consul server away. Two managers, so h3 is a
// worker that can be removed while down.
func TestClusterFaults(t *testing.T) {
	b := bed.NewCluster(t, lab.ClusterOptions{Hosts: 3, Managers: 2, ConsulServers: 3, MountNamespace: true})
	for _, h := range b.Cluster.Hosts() {
		b.StartReconciler(h)
	}
	h3 := b.Cluster.Host(3)

	t.Run("60-starts-at-once", func(t *testing.T) {
		s := b.For(t)
		s.Apply(vlanDocOn(burstSubnet, "cluster"))
		s.WaitFor("vlan ready on every host", 2*time.Minute, func(ctx context.Context) error { return vlanReady(ctx, s) })
		s.Apply(vlanDocOn(burstSubnet, "cluster"), serviceDoc("burst", 60, "", false))
		took := s.WaitFor("60 tasks", 6*time.Minute, func(ctx context.Context) error {
			_, err := checkClusterOn(ctx, s, burstSubnet, "burst", 60, false)
			return err
		})
		// One held task lease per running task, within the host role's
		// orphan collection (ipam.LeaseGrace after the lease was taken,
		// then its 30 s period): a container that failed to start after
		// its address was leased, and whose release Docker did not
		// deliver, leaves a lease only that long.
		held := 0
		gc := s.WaitFor("one held task lease per running task", 4*time.Minute, func(ctx context.Context) error {
			ls, err := leases(ctx, s)
			if err != nil {
				return err
			}
			held = 0
			for _, l := range ls {
				if l.Kind == state.LeaseTask && l.Released == nil {
					held++
				}
			}
			if held != 60 {
				return fmt.Errorf("%d task leases held in Consul, 60 tasks running", held)
			}
			return nil
		})
		t.Logf("one held task lease per running task %s after convergence", gc.Round(time.Second))
		t.Logf("60 tasks started at once over 3 hosts: 0 duplicates in Docker and in Consul, converged in %s", took.Round(time.Second))
		deleteService(s, "burst")
	})

	t.Run("host-killed", func(t *testing.T) {
		s := b.For(t)
		s.Apply(vlanDocOn(burstSubnet, "cluster"), serviceDoc("web", 12, "", true))
		s.WaitFor("web converged", 4*time.Minute, func(ctx context.Context) error {
			tasks, err := checkClusterOn(ctx, s, burstSubnet, "web", 12, true)
			if err != nil {
				return err
			}
			for _, tk := range tasks {
				if tk.Host == h3.Name {
					return nil
				}
			}
			return errors.New("no web task on " + h3.Name)
		})
		mine := func(ctx context.Context) (map[netip.Addr]state.Lease, error) {
			ls, err := leases(ctx, s)
			out := map[netip.Addr]state.Lease{}
			for a, l := range ls {
				if l.Node == h3.ID && l.Released == nil {
					out[a] = l
				}
			}
			return out, err
		}
		before, err := mine(s.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		var shim netip.Addr
		for a, l := range before {
			if l.Kind == state.LeaseShim {
				shim = a
			}
		}
		if !shim.IsValid() || len(before) < 2 {
			t.Fatalf("%s holds %v before the kill", h3.Name, before)
		}

		// Killed: Swarm moves its tasks, but h3's leases stay while the
		// node is in the swarm, even down.
		s.Crash(h3)
		s.WaitFor("web on h1, h2", 4*time.Minute, func(ctx context.Context) error {
			_, err := checkClusterOn(ctx, s, burstSubnet, "web", 12, false)
			return err
		})
		s.Holds(h3.Name+"'s leases kept while it is down", 20*time.Second, 5*time.Second, func(ctx context.Context) error {
			now, err := mine(ctx)
			if err != nil {
				return err
			}
			for a, l := range before {
				if n, ok := now[a]; !ok || n.Released != nil || n.Node != l.Node {
					return fmt.Errorf("lease %s of %s: %+v, was %+v", a, h3.Name, n, l)
				}
			}
			return nil
		})

		// Back in time: it keeps its shim address; only it releases its
		// own task leases, those its Engine no longer holds.
		s.BootOnly(h3)
		s.StartReconciler(h3)
		s.WaitFor(h3.Name+" ready again", 3*time.Minute, func(ctx context.Context) error { return vlanReady(ctx, s) })
		now, err := mine(s.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l, ok := now[shim]; !ok || l.Released != nil || l.Kind != state.LeaseShim {
			t.Fatalf("%s's shim lease %s after coming back: %+v", h3.Name, shim, l)
		}

		// Gone from the swarm: down, then removed; its leases go into
		// quarantine (15 s), then are free again.
		s.Crash(h3)
		s.WaitFor(h3.Name+" down in swarm", 2*time.Minute, func(ctx context.Context) error {
			n, _, err := s.Mgr.NodeInspectWithRaw(ctx, h3.ID)
			if err != nil {
				return err
			}
			if n.Status.State != swarm.NodeStateDown {
				return fmt.Errorf("%s is %s", h3.Name, n.Status.State)
			}
			return nil
		})
		if err := s.Mgr.NodeRemove(s.Ctx, h3.ID, swarm.NodeRemoveOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		removed := time.Now()
		s.WaitFor(h3.Name+"'s leases quarantined", time.Minute, func(ctx context.Context) error {
			now, err := mine(ctx)
			if err != nil {
				return err
			}
			for a, l := range now {
				if l.Released == nil {
					return fmt.Errorf("lease %s of removed %s still held", a, h3.Name)
				}
			}
			return nil
		})
		quarantined := time.Since(removed)
		s.WaitFor(h3.Name+"'s leases free after quarantine", 2*time.Minute, func(ctx context.Context) error {
			ls, err := leases(ctx, s)
			if err != nil {
				return err
			}
			for a := range before {
				if l, ok := ls[a]; ok && l.Node == h3.ID {
					return fmt.Errorf("lease %s of removed %s still kept (%+v)", a, h3.Name, l)
				}
			}
			return nil
		})
		t.Logf("%s removed: its %d leases quarantined after %s, free after %s", h3.Name, len(before), quarantined.Round(time.Second), time.Since(removed).Round(time.Second))
		if time.Since(removed) < 15*time.Second {
			t.Errorf("leases freed %s after the removal, before the 15 s quarantine", time.Since(removed))
		}
	})

	t.Run("consul-away", func(t *testing.T) {
		s := b.For(t)
		var before []bed.Task
		var lsBefore map[netip.Addr]state.Lease
		s.WaitFor("web converged before the outage", 3*time.Minute, func(ctx context.Context) error {
			var err error
			if before, err = checkClusterOn(ctx, s, burstSubnet, "web", 12, false); err != nil {
				return err
			}
			lsBefore, err = leases(ctx, s)
			return err
		})
		up := s.Up()
		for _, h := range up {
			h.KillConsul()
		}
		// New tasks while Consul is away: scale web up by hand.
		svc, _, err := s.Mgr.ServiceInspectWithRaw(s.Ctx, "web", swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := uint64(len(before) + 4)
		svc.Spec.Mode.Replicated.Replicas = &n
		if _, err := s.Mgr.ServiceUpdate(s.Ctx, svc.ID, svc.Version, svc.Spec, swarm.ServiceUpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		var errs []string
		s.WaitFor("new tasks fail with the plugin's error", 2*time.Minute, func(ctx context.Context) error {
			var err error
			_, _, errs, err = swarmTasks(ctx, s, "web")
			if err != nil {
				return err
			}
			for _, e := range errs {
				if strings.Contains(e, "consul unreachable, no address handed out") {
					return nil
				}
			}
			return fmt.Errorf("task errors %q", errs)
		})
		s.Holds("running tasks keep their addresses", 15*time.Second, 5*time.Second, func(ctx context.Context) error {
			now, err := s.Running(ctx, "web")
			if err != nil {
				return err
			}
			have := map[string]netip.Addr{}
			for _, tk := range now {
				have[tk.Container] = tk.Addr
			}
			for _, tk := range before {
				if have[tk.Container] != tk.Addr {
					return fmt.Errorf("task %s on %s: %s, was %s", tk.TaskID, tk.Host, have[tk.Container], tk.Addr)
				}
			}
			return nil
		})
		t.Logf("with Consul away, new tasks fail: %q", errs)
		var wg sync.WaitGroup
		startErrs := make([]error, len(up))
		for i, h := range up {
			wg.Add(1)
			go func() {
				defer wg.Done()
				startErrs[i] = h.StartConsul(s.Ctx)
			}()
		}
		wg.Wait()
		if err := errors.Join(startErrs...); err != nil {
			t.Fatal(err)
		}
		lsAfter, err := leases(s.Ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range before {
			if l := lsAfter[tk.Addr]; l.Released != nil || l.Node != lsBefore[tk.Addr].Node {
				t.Errorf("lease %s of running task %s on %s changed during the outage: %+v, was %+v", tk.Addr, tk.TaskID, tk.Host, l, lsBefore[tk.Addr])
			}
		}
		// The leader sets the spec's 12 again; everything converges.
		s.WaitFor("web converged after the outage", 4*time.Minute, func(ctx context.Context) error {
			_, err := checkClusterOn(ctx, s, burstSubnet, "web", 12, true)
			return err
		})
	})
}

// vlanReady checks that every host that is up carries the VLAN's
// readiness label, which the leader sets from the host's report: the
// plugin served, the shim address leased, the config network made.
func vlanReady(ctx context.Context, b *bed.Bed) error {
	for _, h := range b.Up() {
		n, _, err := b.Mgr.NodeInspectWithRaw(ctx, h.ID)
		if err != nil {
			return err
		}
		if n.Spec.Labels[spec.NodeLabelPrefix+bed.VLANName] != spec.NodeLabelReady {
			return fmt.Errorf("%s: vlan %s not ready (labels %v)", h.Name, bed.VLANName, n.Spec.Labels)
		}
	}
	return nil
}
