package cluster

import (
	"context"
	"errors"
	"reflect"
	"swarmvlan/reconcile/engine/enginetest"
	"testing"
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
