package failover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/state"
)

// TestLeaderKilledMidReconcile applies 20 services and at once SIGKILLs the
// leading reconciler, in the middle of creating them. Another manager must
// take over, and every service must exist exactly once and run. Then the
// takeover is timed (timeTakeovers).
func TestLeaderKilledMidReconcile(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.Apply(bed.VLANDoc())
	b.NodesReady(3 * time.Minute)
	b.KillLeaderMidReconcile(20)
	timeTakeovers(t, b, 20)
}

// timeTakeovers times ten SIGKILLs of the leader, a SIGSTOP (a hung
// leader) and a graceful stop, each followed by the stopped reconciler's
// restart; the cluster must end with one leader and each of the n services
// (svc-01, ...) still there exactly once. The reconciler killed before is
// started again first.
func timeTakeovers(t *testing.T, b *bed.Bed, n int) {
	for _, h := range b.Cluster.Managers() {
		if !b.Proc(h).Running() {
			restart(t, b, h)
		}
	}
	// Every stopped reconciler is started again and campaigns before the
	// next fault, so three managers contend each time.
	var kills []time.Duration
	for len(kills) < 10 {
		lead := leaderNow(t, b)
		at := time.Now()
		b.Proc(lead).Kill()
		_, took := takenOver(t, b, lead, at, "SIGKILL")
		kills = append(kills, took)
		restart(t, b, lead)
	}
	slices.Sort(kills)
	t.Logf("SIGKILL to the new leader's first reconcile, 10 kills: %v", kills)
	bed.Figure(t, "leader failover, SIGKILL to the new leader's first reconcile, p50 of 10", kills[len(kills)/2])
	bed.Figure(t, "leader failover, SIGKILL to the new leader's first reconcile, max of 10", kills[len(kills)-1])

	// A hung leader: stopped, its /healthz times out, its check turns
	// critical. Resumed, it must see the lock lost and stand by.
	hung := leaderNow(t, b)
	hp := b.Proc(hung)
	pid := hp.Pid()
	at := time.Now()
	if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if hp.Running() {
			syscall.Kill(-pid, syscall.SIGCONT)
		}
	})
	next, took := takenOver(t, b, hung, at, "SIGSTOP")
	bed.Figure(t, "leader failover, SIGSTOP to the new leader's first reconcile", took)
	// Log times have millisecond precision, and the resumed process may
	// log within the same millisecond.
	resumed := time.Now().Truncate(time.Millisecond)
	if err := syscall.Kill(-pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	b.WaitFor("the resumed leader to step down", time.Minute, func(ctx context.Context) error {
		for _, l := range bed.LogLines(b.Proc(hung).Logs(), "leadership lost") {
			if at, ok := bed.LogTime(l); ok && !at.Before(resumed) {
				return nil
			}
		}
		return errors.New("no leadership lost logged since SIGCONT")
	})
	if got := leaderNow(t, b); got != next {
		t.Errorf("leader after the hung one resumed: %s, want %s", got.Name, next.Name)
	}

	// A graceful stop gives the lock up: no check to fail, no lock delay.
	lead := leaderNow(t, b)
	at = time.Now()
	b.Proc(lead).Stop()
	_, took = takenOver(t, b, lead, at, "SIGTERM")
	bed.Figure(t, "leader hand-over, SIGTERM to the new leader's first reconcile", took)
	restart(t, b, lead)

	leaderNow(t, b)
	svcs, err := b.ManagedServices(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("svc-%02d", i)
		if len(svcs[name]) != 1 {
			t.Errorf("after the takeovers: service %s exists %d times", name, len(svcs[name]))
		}
	}
}

// takenOver waits until a manager other than old logs its first reconcile
// as leader after since, and returns it and how long after since that was.
func takenOver(t *testing.T, b *bed.Bed, old *lab.Host, since time.Time, how string) (*lab.Host, time.Duration) {
	t.Helper()
	var next *lab.Host
	var first time.Time
	b.WaitFor("another manager leads and reconciles after "+how, 2*time.Minute, func(ctx context.Context) error {
		for _, h := range b.Cluster.Managers() {
			if h == old {
				continue
			}
			for _, l := range bed.LogLines(b.Proc(h).Logs(), "first reconcile as leader") {
				if at, ok := bed.LogTime(l); ok && at.After(since) {
					next, first = h, at
					return nil
				}
			}
		}
		return errors.New("no first reconcile as leader logged since the " + how)
	})
	var won time.Time
	for _, l := range bed.LogLines(b.Proc(next).Logs(), "leading") {
		if at, ok := bed.LogTime(l); ok && at.After(since) {
			won = at
			break
		}
	}
	t.Logf("%s of %s: %s leads, lock taken %s after it, first reconcile %s after that",
		how, old.Name, next.Name, won.Sub(since).Round(10*time.Millisecond), first.Sub(won).Round(time.Millisecond))
	return next, first.Sub(since)
}

// leaderNow waits until exactly one reconciler leads and returns its host.
func leaderNow(t *testing.T, b *bed.Bed) *lab.Host {
	t.Helper()
	var h *lab.Host
	b.WaitFor("one leader", time.Minute, func(ctx context.Context) (err error) {
		h, err = b.Leader(ctx)
		return err
	})
	return h
}

// restart starts h's reconciler again and waits until it campaigns: its
// agent holds a leader check registered by the new process, passing.
func restart(t *testing.T, b *bed.Bed, h *lab.Host) {
	t.Helper()
	before, err := b.Consul(h).Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	b.StartReconciler(h)
	b.WaitFor("the restarted reconciler on "+h.Name+" to campaign", time.Minute, func(ctx context.Context) error {
		checks, err := b.Consul(h).Agent().Checks()
		if err != nil {
			return err
		}
		for id, c := range checks {
			if _, old := before[id]; !old && strings.HasPrefix(id, "swarmvlan-leader:") && c.Status == api.HealthPassing {
				return nil
			}
		}
		return errors.New("no new passing leader check on the agent")
	})
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
