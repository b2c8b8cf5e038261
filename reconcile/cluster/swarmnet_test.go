package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// seedConfigNetwork puts the config network of vlan40 in the fake, as the
// host role would have made it.
func seedConfigNetwork(ctx context.Context, f *enginetest.Fake) (state.NetworkStatus, error) {
	id, err := f.NetworkCreate(ctx, "vlan40-config", network.CreateOptions{ConfigOnly: true,
		Labels:  spec.OwnerLabels(spec.KindVLAN, "vlan40"),
		Options: map[string]string{"parent": "bond0.40", "macvlan_mode": "bridge"},
		IPAM:    &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: "172.80.0.0/16", IPRange: "172.80.1.0/24"}}}})
	return state.NetworkStatus{Name: "vlan40-config", ID: id, State: state.NetworkReady}, err
}

// TestNetworkPlanSwarm checks the swarm network planner, including the
// default-IPAM trap of moby #34203.
func TestNetworkPlanSwarm(t *testing.T) {
	want := SwarmNetwork{VLAN: "vlan40"}
	// As the engine holds it: no labels, which it refuses next to
	// ConfigFrom.
	good := &network.Inspect{Name: "vlan40", ID: "sw1", Scope: "swarm", Driver: "macvlan",
		ConfigFrom: network.ConfigReference{Network: "vlan40-config"}}
	with := func(f func(*network.Inspect)) *network.Inspect {
		n := *good
		f(&n)
		return &n
	}
	tests := []struct {
		name       string
		want       SwarmNetwork
		have       *network.Inspect
		users      []string
		wantAction reconcile.Action
		wantReason string
	}{
		{"absent", want, nil, nil, reconcile.ActionCreate, "absent"},
		{"right", want, good, nil, reconcile.ActionNone, ""},
		{"instantiated on this node, with the config network's labels", want, with(func(n *network.Inspect) {
			n.Labels = spec.OwnerLabels(spec.KindVLAN, "vlan40")
		}), nil, reconcile.ActionNone, ""},
		{"local scope", want, with(func(n *network.Inspect) { n.Scope = "local" }), nil, reconcile.ActionRecreate, "scope local, want swarm"},
		{"driver", SwarmNetwork{VLAN: "vlan40", Driver: "ipvlan"}, good, nil, reconcile.ActionRecreate, "driver macvlan, want ipvlan"},
		{"labelled ours but no config-from (default IPAM)", want, with(func(n *network.Inspect) {
			n.ConfigFrom.Network = ""
			n.Labels = spec.OwnerLabels(spec.KindVLAN, "vlan40")
		}), nil, reconcile.ActionRecreate, "config-from none, want vlan40-config"},
		{"wrong and used", SwarmNetwork{VLAN: "vlan40", Driver: "ipvlan"}, good, []string{"service web", "service api"}, reconcile.ActionBlocked,
			"in use by services api, web; drain first (wrong: driver macvlan, want ipvlan)"},
		{"not built from the config network: not ours", want, with(func(n *network.Inspect) { n.ConfigFrom.Network = "" }), nil, reconcile.ActionConflict,
			"network vlan40 exists and is not managed by swarmvlan"},
		{"built from another config network: not ours", want, with(func(n *network.Inspect) { n.ConfigFrom.Network = "other-config" }), nil, reconcile.ActionConflict,
			"network vlan40 exists and is not managed by swarmvlan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := networkPlanSwarm(tt.want, tt.have, tt.users)
			if got.Action != tt.wantAction || got.Reason != tt.wantReason {
				t.Errorf("plan = %v %q, want %v %q", got.Action, got.Reason, tt.wantAction, tt.wantReason)
			}
		})
	}
}

// TestNetworkEnsureFake drives the network functions against the stateful
// fake through states that are slow or impossible to set up on a real
// engine.
func TestNetworkEnsureFake(t *testing.T) {
	ctx := context.Background()

	t.Run("swarm network waits for the config network", func(t *testing.T) {
		f := enginetest.NewFake()
		st, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err != nil || st.State != state.NetworkWaiting || !st.Requeue || st.Message != "waiting for config network vlan40-config on this node" {
			t.Errorf("status %+v, err %v", st, err)
		}
		if f.Calls()["NetworkCreate"] != 0 {
			t.Error("created a swarm network without its config network")
		}
	})

	t.Run("swarm network once the config network exists, then nothing to do", func(t *testing.T) {
		f := enginetest.NewFake()
		if _, err := seedConfigNetwork(ctx, f); err != nil {
			t.Fatal(err)
		}
		sw, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err != nil || sw.State != state.NetworkReady || sw.Message != "created" {
			t.Fatalf("swarm: %+v, %v", sw, err)
		}
		creates := f.Calls()["NetworkCreate"]
		if sw, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"}); err != nil || sw.State != state.NetworkReady || sw.Message != "" {
			t.Errorf("second swarm ensure: %+v, %v", sw, err)
		}
		if f.Calls()["NetworkCreate"] != creates || f.Calls()["NetworkRemove"] != 0 {
			t.Error("converged networks were touched again")
		}
	})

	t.Run("engine makes a swarm network without config-from", func(t *testing.T) {
		f := enginetest.NewFake()
		if _, err := seedConfigNetwork(ctx, f); err != nil {
			t.Fatal(err)
		}
		f.OnNetworkCreate = func(n *network.Inspect) { n.ConfigFrom = network.ConfigReference{} }
		st, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err == nil || st.State != state.NetworkError || !strings.Contains(st.Message, "config-from none") {
			t.Errorf("status %+v, err %v", st, err)
		}
		if n := f.NetworkLookup("vlan40"); n != nil {
			t.Error("the wrong network was left in place")
		}
	})

	t.Run("wrong swarm network is recreated when unused, kept when used", func(t *testing.T) {
		f := enginetest.NewFake()
		if _, err := seedConfigNetwork(ctx, f); err != nil {
			t.Fatal(err)
		}
		f.Networks["bad"] = &network.Inspect{ID: "bad", Name: "vlan40", Scope: "swarm", Driver: "macvlan", Labels: spec.OwnerLabels(spec.KindVLAN, "vlan40")}
		f.Services["s1"] = &swarm.Service{ID: "s1", Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "web"},
			TaskTemplate: swarm.TaskSpec{Networks: []swarm.NetworkAttachmentConfig{{Target: "bad"}}}}}
		st, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err != nil || st.State != state.NetworkInUse || !st.Requeue || !strings.HasPrefix(st.Message, "in use by services web; drain first") {
			t.Errorf("used: %+v, %v", st, err)
		}
		if f.Networks["bad"] == nil {
			t.Fatal("a used network was removed")
		}
		delete(f.Services, "s1")
		st, err = EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err != nil || st.State != state.NetworkReady || st.Message != "recreated: config-from none, want vlan40-config" {
			t.Errorf("unused: %+v, %v", st, err)
		}
		if n := f.NetworkLookup("vlan40"); n == nil || n.ConfigFrom.Network != "vlan40-config" {
			t.Errorf("network now %+v", n)
		}
	})

	t.Run("unmanaged networks are never touched", func(t *testing.T) {
		f := enginetest.NewFake()
		f.Networks["u1"] = &network.Inspect{ID: "u1", Name: "vlan40-config", Scope: "local", ConfigOnly: true}
		f.Networks["u2"] = &network.Inspect{ID: "u2", Name: "vlan40", Scope: "swarm", Driver: "macvlan"}
		var cerr *engine.ConflictError
		for name, call := range map[string]func() (state.NetworkStatus, error){
			"ensure swarm": func() (state.NetworkStatus, error) { return EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"}) },
			"remove swarm": func() (state.NetworkStatus, error) { return RemoveSwarmNetwork(ctx, f, "vlan40") },
		} {
			st, err := call()
			if !errors.As(err, &cerr) || st.State != state.NetworkError || !strings.HasSuffix(st.Message, "exists and is not managed by swarmvlan") {
				t.Errorf("%s: status %+v, err %v", name, st, err)
			}
		}
		if c := f.Calls(); c["NetworkCreate"] != 0 || c["NetworkRemove"] != 0 {
			t.Errorf("calls %v", c)
		}
	})
}
