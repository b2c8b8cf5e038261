package cluster

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/state"
)

// TestDiscoveryGCReadsTheCatalogOnlyWhenNeeded: the idle leader's
// clean-up reads the catalog once, then not again while the swarm's nodes
// stay the same and up; it reads it whenever a node is down, after a node
// left or joined, in a new term, and at least every discoveryGCReadEvery.
func TestDiscoveryGCReadsTheCatalogOnlyWhenNeeded(t *testing.T) {
	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr, Prefix: "swarmvlan/"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f := enginetest.NewFake()
	node := func(id string, st swarm.NodeState) *swarm.Node {
		return &swarm.Node{ID: id, Status: swarm.NodeStatus{State: st}}
	}
	f.Nodes = map[string]*swarm.Node{"n1": node("n1", swarm.NodeStateReady), "n2": node("n2", swarm.NodeStateReady)}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	c := New(Config{Store: store, Docker: f, Now: func() time.Time { return now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	campaign := func() {
		t.Helper()
		if old := c.lead.Load(); old != nil {
			old.Resign()
		}
		lead, err := store.Campaign(ctx, state.LeaderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.lead.Store(lead)
	}
	campaign()
	t.Cleanup(func() { c.lead.Load().Resign() })
	gc := func(d time.Duration, wantRead bool, why string) {
		t.Helper()
		now = now.Add(d)
		before := store.Requests()
		if out := c.reconcileDiscoveryGC(ctx, reconcile.Key{Kind: kindDiscoveryGC, Name: "all"}, nil); out.Err() != nil {
			t.Fatalf("%s: %v", why, out.Err())
		}
		if read := store.Requests() > before; read != wantRead {
			t.Fatalf("%s: catalog read %v, want %v (%d Consul requests)", why, read, wantRead, store.Requests()-before)
		}
	}
	gc(0, true, "the first clean-up")
	gc(20*time.Second, false, "nothing changed")
	gc(20*time.Second, false, "nothing changed, again")
	f.Nodes["n2"].Status.State = swarm.NodeStateDown
	gc(20*time.Second, true, "a node down")
	gc(20*time.Second, true, "a node still down")
	f.Nodes["n2"].Status.State = swarm.NodeStateReady
	gc(20*time.Second, true, "the node back: the last read was not quiet")
	gc(20*time.Second, false, "quiet again")
	delete(f.Nodes, "n2")
	gc(20*time.Second, true, "a node left the swarm")
	gc(20*time.Second, false, "quiet with one node")
	f.Nodes["n3"] = node("n3", swarm.NodeStateReady)
	gc(20*time.Second, true, "a node joined")
	gc(discoveryGCReadEvery-time.Second, false, "quiet, just inside the bound")
	gc(2*time.Second, true, "the bound since the last read passed")
	campaign()
	gc(time.Second, true, "a new term")
}
