package host

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// networkWant40 is a config network as the host role would ask for it.
func networkWant40() ConfigNetwork {
	return ConfigNetwork{
		VLAN:     "vlan40",
		Parent:   "bond0.40",
		Subnet:   netip.MustParsePrefix("172.80.0.0/16"),
		Gateway:  netip.MustParseAddr("172.80.0.1"),
		IPRange:  netip.MustParsePrefix("172.80.1.0/24"),
		ShimAddr: netip.MustParseAddr("172.80.1.255"),
	}
}

// networkAsCreated is what Docker holds after creating want.
func networkAsCreated(want ConfigNetwork) *network.Inspect {
	o := networkConfigWant(want)
	return &network.Inspect{
		Name: spec.ConfigNetworkName(want.VLAN), ID: "cfg1", Scope: "local", Driver: "null",
		ConfigOnly: true, Options: o.Options, IPAM: *o.IPAM, Labels: o.Labels,
	}
}

// TestNetworkPlanConfig checks when a config network is created, recreated,
// kept or refused.
func TestNetworkPlanConfig(t *testing.T) {
	edit := func(f func(*ConfigNetwork)) ConfigNetwork {
		w := networkWant40()
		f(&w)
		return w
	}
	have := networkAsCreated(networkWant40())
	unmanaged := networkAsCreated(networkWant40())
	unmanaged.Labels = map[string]string{"owner": "someone"}
	notConfigOnly := networkAsCreated(networkWant40())
	notConfigOnly.ConfigOnly = false
	extraAux := networkAsCreated(networkWant40())
	extraAux.IPAM.Config[0].AuxAddress["router"] = "172.80.1.254"

	tests := []struct {
		name       string
		want       ConfigNetwork
		have       *network.Inspect
		users      int
		wantAction reconcile.Action
		wantReason string
	}{
		{"absent", networkWant40(), nil, 0, reconcile.ActionCreate, "absent"},
		{"same", networkWant40(), have, 0, reconcile.ActionNone, ""},
		{"same while in use", networkWant40(), have, 3, reconcile.ActionNone, ""},
		{"parent changed", edit(func(w *ConfigNetwork) { w.Parent = "eth1.40" }), have, 0, reconcile.ActionRecreate, "parent bond0.40 -> eth1.40"},
		{"mode changed", edit(func(w *ConfigNetwork) { w.Mode = "private" }), have, 0, reconcile.ActionRecreate, "mode bridge -> private"},
		{"default mode spelled out", edit(func(w *ConfigNetwork) { w.Mode = "bridge" }), have, 0, reconcile.ActionNone, ""},
		{"driver changed", edit(func(w *ConfigNetwork) { w.Driver = "ipvlan" }), have, 0, reconcile.ActionRecreate, "driver macvlan -> ipvlan, mode none -> l2"},
		{"chunk changed", edit(func(w *ConfigNetwork) { w.IPRange = netip.MustParsePrefix("172.80.2.0/24") }), have, 0, reconcile.ActionRecreate, "ip-range 172.80.1.0/24 -> 172.80.2.0/24"},
		{"subnet changed", edit(func(w *ConfigNetwork) { w.Subnet = netip.MustParsePrefix("172.80.0.0/15") }), have, 0, reconcile.ActionRecreate, "subnet 172.80.0.0/16 -> 172.80.0.0/15"},
		{"gateway changed", edit(func(w *ConfigNetwork) { w.Gateway = netip.MustParseAddr("172.80.0.254") }), have, 0, reconcile.ActionRecreate, "gateway 172.80.0.1 -> 172.80.0.254"},
		{"shim changed", edit(func(w *ConfigNetwork) { w.ShimAddr = netip.MustParseAddr("172.80.1.254") }), have, 0, reconcile.ActionRecreate, "aux shim 172.80.1.255 -> 172.80.1.254"},
		{"shim dropped", edit(func(w *ConfigNetwork) { w.ShimAddr = netip.Addr{} }), have, 0, reconcile.ActionRecreate, "aux shim 172.80.1.255 -> none"},
		{"mtu set", edit(func(w *ConfigNetwork) { w.MTU = 9000 }), have, 0, reconcile.ActionRecreate, "mtu none -> 9000"},
		{"foreign aux address", networkWant40(), extraAux, 0, reconcile.ActionRecreate, "aux router 172.80.1.254 -> none"},
		{"not config-only", networkWant40(), notConfigOnly, 0, reconcile.ActionRecreate, "not a config-only network"},
		{"changed but in use", edit(func(w *ConfigNetwork) { w.IPRange = netip.MustParsePrefix("172.80.2.0/24") }), have, 2, reconcile.ActionBlocked,
			"in use by 2 containers; drain first (wanted: ip-range 172.80.1.0/24 -> 172.80.2.0/24)"},
		{"not ours", networkWant40(), unmanaged, 0, reconcile.ActionConflict, "network vlan40-config exists and is not managed by swarmvlan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := networkPlanConfig(tt.want, tt.have, tt.users)
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

	t.Run("config network change waits for containers to drain", func(t *testing.T) {
		f := enginetest.NewFake()
		if _, err := EnsureConfigNetwork(ctx, f, networkWant40()); err != nil {
			t.Fatal(err)
		}
		if _, err := f.NetworkCreate(ctx, "vlan40", network.CreateOptions{Driver: "macvlan", Scope: "swarm",
			ConfigFrom: &network.ConfigReference{Network: "vlan40-config"}}); err != nil {
			t.Fatal(err)
		}
		sw := f.NetworkLookup("vlan40")
		f.Containers = []container.Summary{{ID: "c1", NetworkSettings: &container.NetworkSettingsSummary{
			Networks: map[string]*network.EndpointSettings{"vlan40": {NetworkID: sw.ID, IPAddress: "172.80.1.2"}}}}}
		moved := networkWant40()
		moved.IPRange = netip.MustParsePrefix("172.80.2.0/24")
		st, err := EnsureConfigNetwork(ctx, f, moved)
		if err != nil || st.State != state.NetworkInUse || !st.Requeue || !strings.HasPrefix(st.Message, "in use by 1 containers; drain first") {
			t.Errorf("in use: %+v, %v", st, err)
		}
		if got := f.NetworkLookup("vlan40-config").IPAM.Config[0].IPRange; got != "172.80.1.0/24" {
			t.Errorf("config network changed to %s while in use", got)
		}
		if st, err := RemoveConfigNetwork(ctx, f, "vlan40"); err != nil || st.State != state.NetworkInUse {
			t.Errorf("remove while in use: %+v, %v", st, err)
		}
		f.Containers = nil
		st, err = EnsureConfigNetwork(ctx, f, moved)
		if err != nil || st.State != state.NetworkReady || st.Message != "recreated: ip-range 172.80.1.0/24 -> 172.80.2.0/24" {
			t.Errorf("drained: %+v, %v", st, err)
		}
	})

	t.Run("docker's own in-use refusal is a state", func(t *testing.T) {
		f := enginetest.NewFake()
		if _, err := EnsureConfigNetwork(ctx, f, networkWant40()); err != nil {
			t.Fatal(err)
		}
		f.FailNext("NetworkRemove", errors.New(`Error response from daemon: configuration network "vlan40-config" is in use`))
		st, err := RemoveConfigNetwork(ctx, f, "vlan40")
		if err != nil || st.State != state.NetworkInUse || !st.Requeue {
			t.Errorf("status %+v, err %v", st, err)
		}
		st, err = RemoveConfigNetwork(ctx, f, "vlan40")
		if err != nil || st.State != state.NetworkAbsent {
			t.Errorf("second try: %+v, %v", st, err)
		}
		st, err = RemoveConfigNetwork(ctx, f, "vlan40")
		if err != nil || st.State != state.NetworkAbsent {
			t.Errorf("absent: %+v, %v", st, err)
		}
	})

	t.Run("unmanaged networks are never touched", func(t *testing.T) {
		f := enginetest.NewFake()
		f.Networks["u1"] = &network.Inspect{ID: "u1", Name: "vlan40-config", Scope: "local", ConfigOnly: true}
		f.Networks["u2"] = &network.Inspect{ID: "u2", Name: "vlan40", Scope: "swarm", Driver: "macvlan"}
		var cerr *engine.ConflictError
		for name, call := range map[string]func() (state.NetworkStatus, error){
			"ensure config": func() (state.NetworkStatus, error) { return EnsureConfigNetwork(ctx, f, networkWant40()) },
			"remove config": func() (state.NetworkStatus, error) { return RemoveConfigNetwork(ctx, f, "vlan40") },
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

// TestNetworkConfigReadBack checks the comparison on what each Engine
// reports back: Engine 29 reports a config-only network's IPAM as null, so
// the label the network was made with stands in for it; a network made by
// an earlier version on such an Engine carries neither and is compared by
// what can be read; a document without a gateway sends the subnet's first
// address and does not re-create networks made with another one.
func TestNetworkConfigReadBack(t *testing.T) {
	moved := networkWant40()
	moved.IPRange = netip.MustParsePrefix("172.80.2.0/24")
	engine29 := networkAsCreated(networkWant40())
	engine29.IPAM.Config = nil
	legacy29 := networkAsCreated(networkWant40())
	legacy29.IPAM.Config = nil
	delete(legacy29.Labels, spec.LabelIPAM)
	noGateway := networkWant40()
	noGateway.Gateway = netip.Addr{}
	madeWithChunkGateway := networkAsCreated(networkWant40())
	madeWithChunkGateway.IPAM.Config[0].Gateway = "172.80.1.0"
	delete(madeWithChunkGateway.Labels, spec.LabelIPAM)

	tests := []struct {
		name       string
		want       ConfigNetwork
		have       *network.Inspect
		wantAction reconcile.Action
		wantReason string
	}{
		{"engine 29, same", networkWant40(), engine29, reconcile.ActionNone, ""},
		{"engine 29, chunk moved", moved, engine29, reconcile.ActionRecreate, "ip-range 172.80.1.0/24 -> 172.80.2.0/24"},
		{"engine 29, parent changed", func() ConfigNetwork { w := networkWant40(); w.Parent = "bond1.40"; return w }(), engine29,
			reconcile.ActionRecreate, "parent bond0.40 -> bond1.40"},
		{"engine 29, made without the label", moved, legacy29, reconcile.ActionNone, ""},
		{"no gateway in the document, network made with Docker's choice", noGateway, madeWithChunkGateway, reconcile.ActionNone, ""},
		{"no gateway in the document, chunk moved", func() ConfigNetwork { w := moved; w.Gateway = netip.Addr{}; return w }(), madeWithChunkGateway,
			reconcile.ActionRecreate, "ip-range 172.80.1.0/24 -> 172.80.2.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := networkPlanConfig(tt.want, tt.have, 0)
			if got.Action != tt.wantAction || got.Reason != tt.wantReason {
				t.Errorf("plan = %v %q, want %v %q", got.Action, got.Reason, tt.wantAction, tt.wantReason)
			}
		})
	}

	t.Run("the gateway is always sent", func(t *testing.T) {
		if gw := networkConfigWant(noGateway).IPAM.Config[0].Gateway; gw != "172.80.0.1" {
			t.Errorf("gateway sent without one in the document = %q, want the subnet's first address 172.80.0.1", gw)
		}
		if gw := networkConfigWant(networkWant40()).IPAM.Config[0].Gateway; gw != "172.80.0.1" {
			t.Errorf("gateway sent = %q, want the document's 172.80.0.1", gw)
		}
	})

	t.Run("the label reads back as it was written", func(t *testing.T) {
		o := networkConfigWant(networkWant40())
		label := o.Labels[spec.LabelIPAM]
		if label != "subnet=172.80.0.0/16,ip-range=172.80.1.0/24,gateway=172.80.0.1,aux.shim=172.80.1.255" {
			t.Errorf("label = %q", label)
		}
		got, ok := parseIPAMLabel(label)
		if !ok || got.Subnet != "172.80.0.0/16" || got.IPRange != "172.80.1.0/24" || got.Gateway != "172.80.0.1" || got.AuxAddress["shim"] != "172.80.1.255" {
			t.Errorf("parsed %+v, %v", got, ok)
		}
		for _, bad := range []string{"", "ip-range=1.2.3.0/24", "subnet=1.0.0.0/8,color=red", "subnet=", "subnet=1.0.0.0/8,aux.=1.2.3.4"} {
			if _, ok := parseIPAMLabel(bad); ok {
				t.Errorf("parseIPAMLabel(%q) accepted", bad)
			}
		}
	})
}
