package cluster

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/state"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"
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
		if n.Status.State == swarm.NodeStateDown || n.Status.State == swarm.NodeStateDisconnected {
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

// catalogEntriesOfNodes returns the catalog's swarmvlan task entries whose
// task ran on one of the given swarm nodes, and every node any entry names.
func catalogEntriesOfNodes(ctx context.Context, cat *api.Catalog, nodes map[string]bool) ([]*api.CatalogService, map[string]bool, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	names, _, err := cat.Services(q)
	if err != nil {
		return nil, nil, fmt.Errorf("list catalog services: %w", err)
	}
	var out []*api.CatalogService
	seen := map[string]bool{}
	for name := range names {
		entries, _, err := cat.Service(name, "", (&api.QueryOptions{Filter: fmt.Sprintf("ServiceMeta[%q] != \"\"", state.MetaNode)}).WithContext(ctx))
		if err != nil {
			return nil, nil, fmt.Errorf("list catalog service %s: %w", name, err)
		}
		for _, e := range entries {
			node := e.ServiceMeta[state.MetaNode]
			if e.ServiceMeta[state.MetaTask] == "" || node == "" {
				continue
			}
			seen[node] = true
			if nodes[node] {
				out = append(out, e)
			}
		}
	}
	return out, seen, nil
}

// reconcileDiscoveryGC removes from the catalog the task entries of nodes
// that Swarm has marked down for longer than the grace period. Their own
// agent would do it, but a dead agent cannot, and a critical entry that
// nobody reaps stays in the catalog. When the node comes back, its host role
// registers its running tasks again under the same IDs, so nothing doubles.
func (c *Cluster) reconcileDiscoveryGC(ctx context.Context, _ reconcile.Key, _ *reconcile.Doc) reconcile.Outcome {
	if _, err := c.leadership(); err != nil {
		return reconcile.Retry(err)
	}
	nodes, err := c.cfg.Docker.NodeList(ctx, engine.Filter())
	if err != nil {
		return reconcile.Retry(fmt.Errorf("discovery gc: list nodes: %w", err))
	}
	cat := c.cfg.Store.Client().Catalog()
	_, named, err := catalogEntriesOfNodes(ctx, cat, nil)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("discovery gc: %w", err))
	}
	c.mu.Lock()
	expired, next := c.down.observe(nodes, named, c.cfg.Now(), c.cfg.NodeDownGrace)
	c.mu.Unlock()
	out := reconcile.Done()
	if !next.IsZero() {
		out = reconcile.RequeueAfter(next.Sub(c.cfg.Now()) + time.Second)
	}
	if len(expired) == 0 {
		return out
	}
	set := map[string]bool{}
	for _, id := range expired {
		set[id] = true
	}
	entries, _, err := catalogEntriesOfNodes(ctx, cat, set)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("discovery gc: %w", err))
	}
	for _, e := range entries {
		_, err := cat.Deregister(&api.CatalogDeregistration{Node: e.Node, ServiceID: e.ServiceID}, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return reconcile.Retry(fmt.Errorf("discovery gc: deregister %s of lost node %s: %w", e.ServiceID, e.ServiceMeta[state.MetaNode], err))
		}
		c.cfg.Log.Info("deregistered task of a lost node", "service", e.ServiceName, "id", e.ServiceID,
			"node", e.ServiceMeta[state.MetaNode], "address", e.ServiceAddress+":"+strconv.Itoa(e.ServicePort))
	}
	return out
}
