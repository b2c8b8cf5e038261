package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// TestNodeLabelPlan checks which labels a node ends up with.
func TestNodeLabelPlan(t *testing.T) {
	tests := []struct {
		name        string
		have        map[string]string
		ready       map[string]bool
		vlans       []string
		want        map[string]string
		wantChanged bool
	}{
		{"label a ready VLAN", map[string]string{"rack": "a"}, map[string]bool{"vlan40": true}, []string{"vlan40"},
			map[string]string{"rack": "a", "io.swarmvlan.vlan.vlan40": "ready"}, true},
		{"already labelled", map[string]string{"io.swarmvlan.vlan.vlan40": "ready"}, map[string]bool{"vlan40": true}, []string{"vlan40"},
			map[string]string{"io.swarmvlan.vlan.vlan40": "ready"}, false},
		{"no longer ready", map[string]string{"rack": "a", "io.swarmvlan.vlan.vlan40": "ready"}, map[string]bool{"vlan40": false}, []string{"vlan40"},
			map[string]string{"rack": "a"}, true},
		{"node absent from the view is not ready", map[string]string{"io.swarmvlan.vlan.vlan40": "ready"}, nil, []string{"vlan40"},
			map[string]string{}, true},
		{"VLAN no longer managed", map[string]string{"io.swarmvlan.vlan.old": "ready", "io.swarmvlan.vlan.vlan40": "ready"}, map[string]bool{"vlan40": true, "old": true}, []string{"vlan40"},
			map[string]string{"io.swarmvlan.vlan.vlan40": "ready"}, true},
		{"wrong value fixed", map[string]string{"io.swarmvlan.vlan.vlan40": "yes"}, map[string]bool{"vlan40": true}, []string{"vlan40"},
			map[string]string{"io.swarmvlan.vlan.vlan40": "ready"}, true},
		{"other swarmvlan-looking labels outside the prefix kept", map[string]string{"io.swarmvlan.other": "x"}, nil, nil,
			map[string]string{"io.swarmvlan.other": "x"}, false},
		{"ready but not managed", nil, map[string]bool{"vlan41": true}, []string{"vlan40"},
			map[string]string{}, false},
		{"several", map[string]string{"io.swarmvlan.vlan.vlan41": "ready"}, map[string]bool{"vlan40": true, "vlan41": true, "vlan42": false}, []string{"vlan40", "vlan41", "vlan42"},
			map[string]string{"io.swarmvlan.vlan.vlan40": "ready", "io.swarmvlan.vlan.vlan41": "ready"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			haveCopy := svcCopyMap(tt.have)
			got, changed := nodeLabelPlan(tt.have, tt.ready, tt.vlans)
			if !reflect.DeepEqual(got, tt.want) || changed != tt.wantChanged {
				t.Errorf("nodeLabelPlan = %v, %v; want %v, %v", got, changed, tt.want, tt.wantChanged)
			}
			if len(tt.have) > 0 && !reflect.DeepEqual(tt.have, haveCopy) {
				t.Errorf("input labels modified: %v", tt.have)
			}
		})
	}
}

// TestNodeEnsureLabelsFake checks versions, conflict retries and the
// refusal to act without a readiness view.
func TestNodeEnsureLabelsFake(t *testing.T) {
	ctx := context.Background()
	f := enginetest.NewFake()
	f.AddNode("n1", map[string]string{"rack": "a"})
	f.AddNode("n2", map[string]string{"io.swarmvlan.vlan.vlan40": "ready"})

	if err := EnsureNodeLabels(ctx, f, nil, []string{"vlan40"}); err == nil {
		t.Error("nil readiness view accepted")
	}
	if f.Calls()["NodeUpdate"] != 0 {
		t.Fatal("labels changed without a readiness view")
	}

	oos := errors.New("rpc error: code = Unknown desc = update out of sequence")
	f.FailNext("NodeUpdate", oos)
	ready := map[string]map[string]bool{"n1": {"vlan40": true}}
	if err := EnsureNodeLabels(ctx, f, ready, []string{"vlan40"}); err != nil {
		t.Fatal(err)
	}
	if got := f.Nodes["n1"].Spec.Labels; !reflect.DeepEqual(got, map[string]string{"rack": "a", "io.swarmvlan.vlan.vlan40": "ready"}) {
		t.Errorf("n1 labels %v", got)
	}
	if got := f.Nodes["n2"].Spec.Labels; len(got) != 0 {
		t.Errorf("n2 labels %v, want none", got)
	}
	updates := f.Calls()["NodeUpdate"]
	if updates != 3 {
		t.Errorf("%d node updates, want 3 (one conflict retried)", updates)
	}
	if err := EnsureNodeLabels(ctx, f, ready, []string{"vlan40"}); err != nil {
		t.Fatal(err)
	}
	if f.Calls()["NodeUpdate"] != updates {
		t.Error("converged labels were written again")
	}

	f.FailNext("NodeUpdate", errors.New("node is gone"))
	err := EnsureNodeLabels(ctx, f, map[string]map[string]bool{}, []string{"vlan40"})
	if err == nil {
		t.Error("a failed node update was not reported")
	}
}

// TestNodeLabelsListServicesOnlyForGoneVLANs: the leader's node-label
// reconcile lists the managed services only when a node carries the label
// of a VLAN without a document; then the label stays while a managed
// service's constraints name it and goes once none does.
func TestNodeLabelsListServicesOnlyForGoneVLANs(t *testing.T) {
	ctx := context.Background()
	f := enginetest.NewFake()
	f.AddNode("n1", map[string]string{"io.swarmvlan.vlan.vlan40": "ready"})
	view := reconcile.NewView("swarmvlan/spec/")
	view.Sync(api.KVPairs{{Key: "swarmvlan/spec/vlans/vlan40", ModifyIndex: 1, Value: []byte(`apiVersion: swarmvlan/v1
kind: VLAN
metadata: {name: vlan40}
spec:
  trunk: eth9
  driver: macvlan
  mode: bridge
  subnet: 172.40.0.0/16
  gateway: 172.40.0.1
  mtu: 1500
  rangePlan:
    chunkPrefix: 24
    pool: [172.40.16.0/20]
`)}})
	if _, ok := view.VLAN("vlan40"); !ok {
		t.Fatal("the VLAN document did not decode")
	}
	c := New(Config{Docker: f, View: view, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c.lead.Store(&state.Leadership{})
	c.reports = map[string]state.NodeReport{"n1": {VLANs: map[string]state.NodeVLANReport{"vlan40": {Ready: true}}}}
	labels := func() map[string]string { return f.Nodes["n1"].Spec.Labels }
	run := func(wantList uint64) {
		t.Helper()
		before := f.Calls()["ServiceList"]
		if out := c.reconcileNodeLabels(ctx, reconcile.Key{Kind: kindNodeLabels, Name: "all"}, nil); out.Err() != nil {
			t.Fatal(out.Err())
		}
		if n := f.Calls()["ServiceList"] - before; n != wantList {
			t.Fatalf("%d ServiceList calls, want %d", n, wantList)
		}
	}
	run(0)
	if got := labels(); got["io.swarmvlan.vlan.vlan40"] != "ready" {
		t.Fatalf("labels %v", got)
	}

	// A gone VLAN's label with a managed service bound to it: listed, kept.
	f.Nodes["n1"].Spec.Labels["io.swarmvlan.vlan.old"] = "ready"
	if _, err := f.ServiceCreate(ctx, swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "bound", Labels: map[string]string{spec.LabelManaged: "true"}},
		TaskTemplate: swarm.TaskSpec{Placement: &swarm.Placement{Constraints: []string{"node.labels.io.swarmvlan.vlan.old == ready"}}}}); err != nil {
		t.Fatal(err)
	}
	run(1)
	if got := labels(); got["io.swarmvlan.vlan.old"] != "ready" || got["io.swarmvlan.vlan.vlan40"] != "ready" {
		t.Fatalf("labels %v, want both kept", got)
	}
	// The service gone: the label goes.
	for id := range f.Services {
		delete(f.Services, id)
	}
	run(1)
	if got := labels(); got["io.swarmvlan.vlan.old"] != "" || got["io.swarmvlan.vlan.vlan40"] != "ready" {
		t.Fatalf("labels %v, want the gone VLAN's removed", got)
	}
	run(0)
}
