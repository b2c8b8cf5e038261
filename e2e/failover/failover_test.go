package failover

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/state"
)

// TestLeaderKilledMidReconcile applies 20 services and at once SIGKILLs the
// leading reconciler, in the middle of creating them. Another manager must
// take over, and every service must exist exactly once and run.
func TestLeaderKilledMidReconcile(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.Apply(bed.VLANDoc())
	b.NodesReady(3 * time.Minute)
	b.KillLeaderMidReconcile(20)
}

// TestWorkerLost crashes the worker of a 4-host cluster (3 managers, 1
// worker): Swarm must run its tasks elsewhere, their new addresses must
// pass in Consul, the lost ones must stop passing and then leave the
// catalog (the leader's discovery GC after --node-down-grace).
func TestWorkerLost(t *testing.T) {
	b := bed.New(t, 4, 3)
	b.SetHeartbeat(2 * time.Second)
	tasks := b.Seed()
	h4 := b.Cluster.Host(4)
	var lost []netip.Addr
	for _, tk := range tasks {
		if tk.Host == h4.Name {
			lost = append(lost, tk.Addr)
		}
	}
	if len(lost) == 0 {
		t.Fatalf("no web task on %s to lose: %v", h4.Name, tasks)
	}

	killed := time.Now()
	b.Crash(h4)
	t.Logf("crashed %s, which ran %v", h4.Name, lost)
	after, _ := b.WaitConverged(bed.WebWant(6), 4*time.Minute)
	bed.Figure(t, "worker lost, crash to every desired task running and passing again", time.Since(killed))
	for _, tk := range after {
		if tk.Host == h4.Name {
			t.Errorf("task %s still counted on crashed %s", tk.TaskID, h4.Name)
		}
	}
	// converged compared the passing set with the running tasks; the lost
	// addresses may only come back if Swarm handed them out again here.
	pass, err := b.Passing(b.Ctx, b.H1, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range lost {
		if pass[a] && !slices.ContainsFunc(after, func(tk bed.Task) bool { return tk.Addr == a }) {
			t.Errorf("lost task's %s still passing", a)
		}
	}

	b.WaitFor("the lost node's entries gone from the catalog", 3*time.Minute, func(ctx context.Context) error {
		entries, _, err := b.Consul(b.H1).Catalog().Service("web", "", (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		var left []string
		for _, e := range entries {
			if e.ServiceMeta[state.MetaNode] == h4.ID || e.Node == h4.Name {
				left = append(left, e.ServiceID)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("still in the catalog: %v", left)
		}
		return nil
	})
	bed.Figure(t, "worker lost, crash to its catalog entries removed", time.Since(killed))
}
