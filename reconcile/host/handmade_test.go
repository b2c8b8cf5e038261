//go:build linux

package host

import (
	"context"
	"reflect"
	"testing"

	"github.com/docker/docker/api/types/network"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/state"
)

// TestHostHandMadePoolsEngine29 imitates Engine 29, which reports no pool
// for a config-only network but copies its IPAM configuration into a
// network made --config-from it: the report gets the hand-made subnet,
// range and gateway through a probe network that is removed at once, and
// a second pass asks Docker nothing more.
func TestHostHandMadePoolsEngine29(t *testing.T) {
	a, f := hostTestAgent(t, reconcile.NewView("swarmvlan/"))
	ipam := network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: "172.80.0.0/16", IPRange: "172.80.1.0/24", Gateway: "172.80.0.1"}}}
	configs := map[string]network.IPAM{}
	f.OnNetworkCreate = func(n *network.Inspect) {
		switch {
		case n.ConfigOnly:
			configs[n.Name], n.IPAM = n.IPAM, network.IPAM{Driver: "default"}
		case n.ConfigFrom.Network != "":
			n.IPAM = configs[n.ConfigFrom.Network]
		}
	}
	ctx := context.Background()
	if _, err := f.NetworkCreate(ctx, "vlan40_net", network.CreateOptions{ConfigOnly: true, Driver: "macvlan",
		Options: map[string]string{"parent": "eth1"}, IPAM: &ipam}); err != nil {
		t.Fatal(err)
	}
	nets, err := f.NetworkList(ctx, engine.Filter())
	if err != nil {
		t.Fatal(err)
	}
	report := handMadeConfigNetworks(nets)
	if len(report) != 1 || report[0].Pools != 0 {
		t.Fatalf("the imitation reports pools: %+v", report)
	}
	got, err := a.handMadePools(ctx, nets, report)
	if err != nil {
		t.Fatal(err)
	}
	want := state.NodeConfigNetwork{ID: report[0].ID, Name: "vlan40_net", Parent: "eth1", Options: map[string]string{"parent": "eth1"},
		Subnet: "172.80.0.0/16", IPRange: "172.80.1.0/24", Gateway: "172.80.0.1", Pools: 1}
	if !reflect.DeepEqual(got, []state.NodeConfigNetwork{want}) {
		t.Errorf("report %+v, want %+v", got, want)
	}
	if after, _ := f.NetworkList(ctx, engine.Filter()); len(after) != 1 {
		t.Errorf("networks after the probe: %+v", after)
	}
	calls := f.Calls()
	if _, err := a.handMadePools(ctx, nets, handMadeConfigNetworks(nets)); err != nil {
		t.Fatal(err)
	}
	if c := f.Calls(); c["NetworkCreate"] != calls["NetworkCreate"] {
		t.Errorf("a second pass probed again: %d creates, was %d", c["NetworkCreate"], calls["NetworkCreate"])
	}
}
