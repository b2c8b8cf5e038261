package cluster

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/state"
	"time"

	"github.com/docker/docker/api/types/swarm"
)

// kindDiscoveryGC is the synthetic key kind of the leader's catalog clean-up
// after node loss.
const kindDiscoveryGC = "DiscoveryGC"

// nodeDownTracker remembers since when the leader has seen each node down
// or gone. The clock starts when this leader first sees it, so a new leader
// waits a full grace period again: it errs on the side of keeping entries.
type nodeDownTracker struct {
	since map[string]time.Time
}

// observe updates the tracker with the current node list and returns the
// nodes down (or gone from the swarm) for at least grace, and the earliest
// time another node will reach its grace.
func (t *nodeDownTracker) observe(nodes []swarm.Node, known map[string]bool, now time.Time, grace time.Duration) ([]string, time.Time) {
	if t.since == nil {
		t.since = map[string]time.Time{}
	}
	down := map[string]bool{}
	for _, n := range nodes {
		if nodeDown(n) {
			down[n.ID] = true
		}
	}
	inSwarm := map[string]bool{}
	for _, n := range nodes {
		inSwarm[n.ID] = true
	}
	for id := range known {
		if !inSwarm[id] {
			down[id] = true // removed from the swarm: its agent is gone too
		}
	}
	for id := range t.since {
		if !down[id] {
			delete(t.since, id) // back up: nothing to clean
		}
	}
	var expired []string
	var next time.Time
	for id := range down {
		s, ok := t.since[id]
		if !ok {
			s = now
			t.since[id] = s
		}
		if due := s.Add(grace); !now.Before(due) {
			expired = append(expired, id)
		} else if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	sort.Strings(expired)
	return expired, next
}

// discoveryGCReadEvery bounds how long the clean-up goes without reading
// the catalog while nothing in the swarm changes (see gcRead).
const discoveryGCReadEvery = 10 * time.Minute

// gcRead is what the clean-up's last read of the catalog found. While
// every node it saw then is still there and up, and that read found no
// node down or gone, another read finds nothing to do: an entry of a
// node removed since would show as a changed node set, a node going down
// as a down node. So the idle leader reads the catalog only every
// discoveryGCReadEvery (a snapshot restore can bring back entries of
// nodes gone long ago), not on every resync.
type gcRead struct {
	lead  *state.Leadership
	nodes string // the swarm's node IDs then, sorted
	quiet bool
	at    time.Time
}

// nodeDown reports whether Swarm has n down or disconnected.
func nodeDown(n swarm.Node) bool {
	return n.Status.State == swarm.NodeStateDown || n.Status.State == swarm.NodeStateDisconnected
}

// nodeSet is the sorted node IDs of nodes, and whether any is down.
func nodeSet(nodes []swarm.Node) (string, bool) {
	ids := make([]string, 0, len(nodes))
	down := false
	for _, n := range nodes {
		ids = append(ids, n.ID)
		down = down || nodeDown(n)
	}
	sort.Strings(ids)
	return strings.Join(ids, ","), down
}

// reconcileDiscoveryGC removes from the catalog the task entries of nodes
// that Swarm has marked down for longer than the grace period. Their own
// agent would do it, but a dead agent cannot, and a critical entry that
// nobody reaps stays in the catalog. When the node comes back, its host role
// registers its running tasks again under the same IDs, so nothing doubles.
func (c *Cluster) reconcileDiscoveryGC(ctx context.Context, _ reconcile.Key, _ *reconcile.Doc) reconcile.Outcome {
	lead, err := c.leadership()
	if err != nil {
		return reconcile.Retry(err)
	}
	nodes, err := c.cfg.Docker.NodeList(ctx, engine.Filter())
	if err != nil {
		return reconcile.Retry(fmt.Errorf("discovery gc: list nodes: %w", err))
	}
	ids, anyDown := nodeSet(nodes)
	now := c.cfg.Now()
	c.mu.Lock()
	last := c.gcLast
	c.mu.Unlock()
	if !anyDown && last.lead == lead && last.quiet && last.nodes == ids && now.Sub(last.at) < discoveryGCReadEvery {
		return reconcile.Done()
	}
	entries, err := c.cfg.Store.CatalogTasks(ctx)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("discovery gc: %w", err))
	}
	named := map[string]bool{}
	for _, e := range entries {
		named[e.ServiceMeta[state.MetaNode]] = true
	}
	c.mu.Lock()
	expired, next := c.down.observe(nodes, named, now, c.cfg.NodeDownGrace)
	c.gcLast = gcRead{lead: lead, nodes: ids, quiet: len(expired) == 0 && next.IsZero(), at: now}
	c.mu.Unlock()
	out := reconcile.Done()
	if !next.IsZero() {
		out = reconcile.RequeueAfter(next.Sub(c.cfg.Now()) + time.Second)
	}
	gone := map[string]bool{}
	for _, id := range expired {
		gone[id] = true
	}
	for _, e := range entries {
		if !gone[e.ServiceMeta[state.MetaNode]] {
			continue
		}
		if err := lead.DeregisterCatalogEntry(ctx, e); err != nil {
			return reconcile.Retry(fmt.Errorf("discovery gc: deregister %s of lost node %s: %w", e.ServiceID, e.ServiceMeta[state.MetaNode], err))
		}
		c.cfg.Log.Info("deregistered task of a lost node", "service", e.ServiceName, "id", e.ServiceID,
			"node", e.ServiceMeta[state.MetaNode], "address", e.ServiceAddress+":"+strconv.Itoa(e.ServicePort))
	}
	return out
}
