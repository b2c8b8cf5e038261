package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile/engine"
)

// SurplusGrace is how long a replicated service may run more tasks than
// its count, with no rolling update under way, before the leader asks
// Swarm to look at it again. A scale-down or a start-first update ends
// well inside it.
const SurplusGrace = 30 * time.Second

// Swarm's orchestrator compares a service's tasks with its count only
// when the service changes. A rolling update racing a scale-down, or the
// updater and the restart supervisor acting on one slot
// (moby/swarmkit#2242), can leave a task running beyond the count with
// nothing to make the orchestrator look again: the extra task keeps its
// address and its Consul entry for good. An update with the service's
// own spec (what `docker service update NAME` sends without flags) moves
// its version, so the orchestrator reconciles it and removes the extra
// task; a task whose spec is current is not restarted by it.

// surplusDue reports whether a service observed with st should be handed
// back to Swarm's orchestrator now: more tasks running than wanted, in
// replicated mode, no update or rollback under way, and so since longer
// than SurplusGrace (since is when it was first seen so; zero: not yet).
func surplusDue(st ServiceStatus, global bool, upd *swarm.UpdateStatus, since, now time.Time) bool {
	if global || st.Running <= st.Desired || since.IsZero() || now.Sub(since) < SurplusGrace {
		return false
	}
	if upd != nil {
		switch upd.State {
		case swarm.UpdateStateUpdating, swarm.UpdateStateRollbackStarted, swarm.UpdateStatePaused, swarm.UpdateStateRollbackPaused:
			return false
		}
	}
	return true
}

// watchSurplus follows a service that runs more tasks than wanted, and
// once that has lasted SurplusGrace with no update under way updates the
// service with its own spec. It reports whether it did.
func (c *Cluster) watchSurplus(ctx context.Context, name string, st ServiceStatus, global bool) (bool, error) {
	now := c.cfg.Now()
	c.mu.Lock()
	if global || st.Running <= st.Desired {
		delete(c.surplus, name)
		c.mu.Unlock()
		return false, nil
	}
	since, seen := c.surplus[name]
	if !seen {
		c.surplus[name] = now
	}
	c.mu.Unlock()
	if !seen || now.Sub(since) < SurplusGrace {
		return false, nil
	}
	have, err := c.cfg.Docker.ServiceInspect(ctx, st.ID)
	if err != nil {
		return false, fmt.Errorf("service %q: inspect for its surplus tasks: %w", name, err)
	}
	if !surplusDue(st, global, have.UpdateStatus, since, now) {
		return false, nil
	}
	if err := c.cfg.Docker.ServiceUpdate(ctx, have.ID, have.Version, have.Spec); err != nil {
		if engine.IsOutOfSequence(err) {
			return false, nil // it changed meanwhile: Swarm looks at it anyway
		}
		return false, fmt.Errorf("service %q: update with its own spec for its surplus tasks: %w", name, err)
	}
	c.mu.Lock()
	c.surplus[name] = now // at most one such update per grace
	c.mu.Unlock()
	c.cfg.Log.Warn("service runs more tasks than wanted with no update under way: asked Swarm to reconcile it",
		"service", name, "running", st.Running, "desired", st.Desired, "since", since.Format(time.RFC3339))
	return true, nil
}
