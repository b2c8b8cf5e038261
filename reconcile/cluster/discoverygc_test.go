package cluster

import (
	"reflect"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
)

func TestNodeDownTracker(t *testing.T) {
	node := func(id string, st swarm.NodeState) swarm.Node {
		return swarm.Node{ID: id, Status: swarm.NodeStatus{State: st}}
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	grace := time.Minute
	var tr nodeDownTracker

	// n2 goes down: nothing expires yet, and the next check is due at t0+1m.
	exp, next := tr.observe([]swarm.Node{node("n1", swarm.NodeStateReady), node("n2", swarm.NodeStateDown)}, nil, t0, grace)
	if len(exp) != 0 || !next.Equal(t0.Add(grace)) {
		t.Fatalf("at t0: expired %v next %v", exp, next)
	}
	// Still down after the grace: expired.
	exp, _ = tr.observe([]swarm.Node{node("n1", swarm.NodeStateReady), node("n2", swarm.NodeStateDown)}, nil, t0.Add(grace), grace)
	if !reflect.DeepEqual(exp, []string{"n2"}) {
		t.Fatalf("after grace: expired %v, want [n2]", exp)
	}
	// Back up: forgotten, so a later outage waits a full grace again.
	exp, _ = tr.observe([]swarm.Node{node("n1", swarm.NodeStateReady), node("n2", swarm.NodeStateReady)}, nil, t0.Add(2*grace), grace)
	if len(exp) != 0 {
		t.Fatalf("node back up still expired: %v", exp)
	}
	exp, _ = tr.observe([]swarm.Node{node("n2", swarm.NodeStateDown)}, nil, t0.Add(3*grace), grace)
	if len(exp) != 0 {
		t.Fatalf("new outage expired at once: %v", exp)
	}
	// A node removed from the swarm that the catalog still names counts as
	// down; one the catalog does not name is not tracked.
	exp, _ = tr.observe([]swarm.Node{node("n2", swarm.NodeStateDown)}, map[string]bool{"n3": true}, t0.Add(4*grace), grace)
	if len(exp) != 1 || exp[0] != "n2" {
		t.Fatalf("expired %v, want [n2] (n3 only just seen gone)", exp)
	}
	exp, _ = tr.observe([]swarm.Node{node("n2", swarm.NodeStateDown)}, map[string]bool{"n3": true}, t0.Add(5*grace), grace)
	if !reflect.DeepEqual(exp, []string{"n2", "n3"}) {
		t.Fatalf("expired %v, want [n2 n3]", exp)
	}
}
