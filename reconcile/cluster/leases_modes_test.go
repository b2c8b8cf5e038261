package cluster

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// modeVLAN is a VLAN with Docker names of its own, in the given mode.
func modeVLAN(mode string) string {
	plan := "{mode: cluster}"
	if mode == spec.RangeModeChunks {
		plan = "{mode: chunks, chunkPrefix: 28}"
	}
	return "apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: vlan40}\nspec:\n  trunk: eth1\n  subnet: 172.80.0.0/26\n" +
		"  docker: {network: vlan40_net, configNetwork: vlan40_cfg}\n  rangePlan: " + plan + "\n"
}

// TestClusterModeNamesAndSwitch drives a cluster-mode VLAN's reconcile
// against real Consul and the stateful fake Engine: the swarm network gets
// the VLAN's Docker names (spec.docker), and a switch between modes is
// refused, naming rangePlan.mode and the service, while a service uses the
// VLAN, with nothing of the old mode released until none does.
func TestClusterModeNamesAndSwitch(t *testing.T) {
	ctx := context.Background()
	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr, Prefix: "swarmvlan/"})
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	lead, err := store.Campaign(lctx, state.LeaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lead.Resign)
	f := enginetest.NewFake()
	f.AddNode("node1", nil)
	view := reconcile.NewView(store.SpecPrefix())
	c := New(Config{Store: store, Docker: f, View: view, Log: slog.New(slog.DiscardHandler)})
	c.lead.Store(lead)
	key := reconcile.Key{Kind: spec.KindVLAN, Name: "vlan40"}
	var index uint64
	reconcileAs := func(mode string) reconcile.Outcome {
		t.Helper()
		index++
		view.Sync(api.KVPairs{{Key: store.SpecKey(spec.KindVLAN, "vlan40"), Value: []byte(modeVLAN(mode)), ModifyIndex: index}})
		doc, ok := view.Get(key)
		if !ok {
			t.Fatalf("mode %s: VLAN not in force", mode)
		}
		return c.reconcileVLAN(ctx, key, doc)
	}
	// The config network as the host role makes it in mode cluster.
	if _, err := f.NetworkCreate(ctx, "vlan40_cfg", network.CreateOptions{ConfigOnly: true,
		Labels:  spec.OwnerLabels(spec.KindVLAN, "vlan40"),
		Options: map[string]string{"parent": "eth1"},
		IPAM:    &network.IPAM{Driver: spec.IPAMDriver, Options: map[string]string{spec.IPAMOptVLAN: "vlan40"}, Config: []network.IPAMConfig{{Subnet: "172.80.0.0/26"}}}}); err != nil {
		t.Fatal(err)
	}

	out := reconcileAs(spec.RangeModeCluster)
	if out.Err() != nil {
		t.Fatal(out.Err())
	}
	sw := f.NetworkLookup("vlan40_net")
	if sw == nil || sw.Scope != "swarm" || sw.ConfigFrom.Network != "vlan40_cfg" {
		t.Fatalf("swarm network by its Docker name: %+v", sw)
	}
	if n := f.NetworkLookup("vlan40"); n != nil {
		t.Fatalf("a network named after the VLAN was made: %+v", n)
	}

	// A service uses the VLAN; its address is a lease.
	if _, err := f.ServiceCreate(ctx, swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "web"},
		TaskTemplate: swarm.TaskSpec{Networks: []swarm.NetworkAttachmentConfig{{Target: sw.ID}}}}); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("172.80.0.7")
	if err := store.TakeLease(ctx, "vlan40", addr, state.Lease{Node: "node1", Kind: state.LeaseTask, Created: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	refused := func(out reconcile.Outcome, want string) {
		t.Helper()
		var msg string
		for _, cond := range out.Conditions {
			if cond.Type == "Ready" && cond.Status == "False" {
				msg = cond.Message
			}
		}
		if !strings.Contains(msg, want) || !strings.Contains(msg, "service web") {
			t.Fatalf("not refused as %q naming service web: ready message %q (outcome %+v)", want, msg, out)
		}
	}
	refused(reconcileAs(spec.RangeModeChunks), "rangePlan.mode chunks refused")
	if have, err := store.Leases(ctx, "vlan40"); err != nil || !have[addr].Held() {
		t.Fatalf("lease after the refused switch: %v %+v", err, have)
	}
	if allocs, _, err := store.Allocations(ctx, "vlan40"); err != nil || len(allocs) != 0 {
		t.Fatalf("chunks allocated while refused: %v %v", err, allocs)
	}

	// The other way: a chunk left from mode chunks while the service runs.
	have, err := store.Leases(ctx, "vlan40")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := store.DeleteLease(ctx, "vlan40", addr, have[addr].ModifyIndex); !ok || err != nil {
		t.Fatalf("forget lease: %v %v", ok, err)
	}
	if ok, err := store.CASJSON(ctx, store.AllocationKey("vlan40", "node1"), state.Allocation{Chunk: "172.80.0.16/28", Node: "node1"}, 0); !ok || err != nil {
		t.Fatalf("seed allocation: %v %v", ok, err)
	}
	refused(reconcileAs(spec.RangeModeCluster), "rangePlan.mode cluster refused")
	if allocs, _, err := store.Allocations(ctx, "vlan40"); err != nil || len(allocs) != 1 {
		t.Fatalf("chunk released while refused: %v %v", err, allocs)
	}

	// Once no service uses the VLAN, the old mode's chunk is released.
	if err := f.ServiceRemove(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if out := reconcileAs(spec.RangeModeCluster); out.Err() != nil {
		t.Fatal(out.Err())
	}
	if allocs, _, err := store.Allocations(ctx, "vlan40"); err != nil || len(allocs) != 0 {
		t.Fatalf("chunk kept once unused: %v %v", err, allocs)
	}
}
