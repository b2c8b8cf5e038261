package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/spec"
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
		Name: NetworkConfigName(want.VLAN), ID: "cfg1", Scope: "local", Driver: "null",
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
		wantAction networkActionKind
		wantReason string
	}{
		{"absent", networkWant40(), nil, 0, networkCreate, "absent"},
		{"same", networkWant40(), have, 0, networkNone, ""},
		{"same while in use", networkWant40(), have, 3, networkNone, ""},
		{"parent changed", edit(func(w *ConfigNetwork) { w.Parent = "eth1.40" }), have, 0, networkRecreate, "parent bond0.40 -> eth1.40"},
		{"mode changed", edit(func(w *ConfigNetwork) { w.Mode = "private" }), have, 0, networkRecreate, "mode bridge -> private"},
		{"default mode spelled out", edit(func(w *ConfigNetwork) { w.Mode = "bridge" }), have, 0, networkNone, ""},
		{"driver changed", edit(func(w *ConfigNetwork) { w.Driver = "ipvlan" }), have, 0, networkRecreate, "driver macvlan -> ipvlan, mode none -> l2"},
		{"chunk changed", edit(func(w *ConfigNetwork) { w.IPRange = netip.MustParsePrefix("172.80.2.0/24") }), have, 0, networkRecreate, "ip-range 172.80.1.0/24 -> 172.80.2.0/24"},
		{"subnet changed", edit(func(w *ConfigNetwork) { w.Subnet = netip.MustParsePrefix("172.80.0.0/15") }), have, 0, networkRecreate, "subnet 172.80.0.0/16 -> 172.80.0.0/15"},
		{"gateway changed", edit(func(w *ConfigNetwork) { w.Gateway = netip.MustParseAddr("172.80.0.254") }), have, 0, networkRecreate, "gateway 172.80.0.1 -> 172.80.0.254"},
		{"shim changed", edit(func(w *ConfigNetwork) { w.ShimAddr = netip.MustParseAddr("172.80.1.254") }), have, 0, networkRecreate, "aux shim 172.80.1.255 -> 172.80.1.254"},
		{"shim dropped", edit(func(w *ConfigNetwork) { w.ShimAddr = netip.Addr{} }), have, 0, networkRecreate, "aux shim 172.80.1.255 -> none"},
		{"mtu set", edit(func(w *ConfigNetwork) { w.MTU = 9000 }), have, 0, networkRecreate, "mtu none -> 9000"},
		{"foreign aux address", networkWant40(), extraAux, 0, networkRecreate, "aux router 172.80.1.254 -> none"},
		{"not config-only", networkWant40(), notConfigOnly, 0, networkRecreate, "not a config-only network"},
		{"changed but in use", edit(func(w *ConfigNetwork) { w.IPRange = netip.MustParsePrefix("172.80.2.0/24") }), have, 2, networkBlocked,
			"in use by 2 containers; drain first (wanted: ip-range 172.80.1.0/24 -> 172.80.2.0/24)"},
		{"not ours", networkWant40(), unmanaged, 0, networkConflict, "network vlan40-config exists and is not managed by swarmvlan"},
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
		wantAction networkActionKind
		wantReason string
	}{
		{"absent", want, nil, nil, networkCreate, "absent"},
		{"right", want, good, nil, networkNone, ""},
		{"instantiated on this node, with the config network's labels", want, with(func(n *network.Inspect) {
			n.Labels = dockerOwnerLabels(spec.KindVLAN, "vlan40")
		}), nil, networkNone, ""},
		{"local scope", want, with(func(n *network.Inspect) { n.Scope = "local" }), nil, networkRecreate, "scope local, want swarm"},
		{"driver", SwarmNetwork{VLAN: "vlan40", Driver: "ipvlan"}, good, nil, networkRecreate, "driver macvlan, want ipvlan"},
		{"labelled ours but no config-from (default IPAM)", want, with(func(n *network.Inspect) {
			n.ConfigFrom.Network = ""
			n.Labels = dockerOwnerLabels(spec.KindVLAN, "vlan40")
		}), nil, networkRecreate, "config-from none, want vlan40-config"},
		{"wrong and used", SwarmNetwork{VLAN: "vlan40", Driver: "ipvlan"}, good, []string{"service web", "service api"}, networkBlocked,
			"in use by services api, web; drain first (wrong: driver macvlan, want ipvlan)"},
		{"not built from the config network: not ours", want, with(func(n *network.Inspect) { n.ConfigFrom.Network = "" }), nil, networkConflict,
			"network vlan40 exists and is not managed by swarmvlan"},
		{"built from another config network: not ours", want, with(func(n *network.Inspect) { n.ConfigFrom.Network = "other-config" }), nil, networkConflict,
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
		f := newDockerFake()
		st, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err != nil || st.State != NetworkWaiting || !st.Requeue || st.Message != "waiting for config network vlan40-config on this node" {
			t.Errorf("status %+v, err %v", st, err)
		}
		if f.Calls()["NetworkCreate"] != 0 {
			t.Error("created a swarm network without its config network")
		}
	})

	t.Run("config then swarm network, then nothing to do", func(t *testing.T) {
		f := newDockerFake()
		st, err := EnsureConfigNetwork(ctx, f, networkWant40())
		if err != nil || st.State != NetworkReady || st.Message != "created" {
			t.Fatalf("config: %+v, %v", st, err)
		}
		sw, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err != nil || sw.State != NetworkReady || sw.Message != "created" {
			t.Fatalf("swarm: %+v, %v", sw, err)
		}
		creates := f.Calls()["NetworkCreate"]
		if st, err := EnsureConfigNetwork(ctx, f, networkWant40()); err != nil || st.State != NetworkReady || st.Message != "" {
			t.Errorf("second config ensure: %+v, %v", st, err)
		}
		if sw, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"}); err != nil || sw.State != NetworkReady || sw.Message != "" {
			t.Errorf("second swarm ensure: %+v, %v", sw, err)
		}
		if f.Calls()["NetworkCreate"] != creates || f.Calls()["NetworkRemove"] != 0 {
			t.Error("converged networks were touched again")
		}
	})

	t.Run("engine makes a swarm network without config-from", func(t *testing.T) {
		f := newDockerFake()
		if _, err := EnsureConfigNetwork(ctx, f, networkWant40()); err != nil {
			t.Fatal(err)
		}
		f.onNetworkCreate = func(n *network.Inspect) { n.ConfigFrom = network.ConfigReference{} }
		st, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err == nil || st.State != NetworkError || !strings.Contains(st.Message, "config-from none") {
			t.Errorf("status %+v, err %v", st, err)
		}
		if n := f.networkLookup("vlan40"); n != nil {
			t.Error("the wrong network was left in place")
		}
	})

	t.Run("wrong swarm network is recreated when unused, kept when used", func(t *testing.T) {
		f := newDockerFake()
		if _, err := EnsureConfigNetwork(ctx, f, networkWant40()); err != nil {
			t.Fatal(err)
		}
		f.networks["bad"] = &network.Inspect{ID: "bad", Name: "vlan40", Scope: "swarm", Driver: "macvlan", Labels: dockerOwnerLabels(spec.KindVLAN, "vlan40")}
		f.services["s1"] = &swarm.Service{ID: "s1", Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "web"},
			TaskTemplate: swarm.TaskSpec{Networks: []swarm.NetworkAttachmentConfig{{Target: "bad"}}}}}
		st, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err != nil || st.State != NetworkInUse || !st.Requeue || !strings.HasPrefix(st.Message, "in use by services web; drain first") {
			t.Errorf("used: %+v, %v", st, err)
		}
		if f.networks["bad"] == nil {
			t.Fatal("a used network was removed")
		}
		delete(f.services, "s1")
		st, err = EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"})
		if err != nil || st.State != NetworkReady || st.Message != "recreated: config-from none, want vlan40-config" {
			t.Errorf("unused: %+v, %v", st, err)
		}
		if n := f.networkLookup("vlan40"); n == nil || n.ConfigFrom.Network != "vlan40-config" {
			t.Errorf("network now %+v", n)
		}
	})

	t.Run("config network change waits for containers to drain", func(t *testing.T) {
		f := newDockerFake()
		if _, err := EnsureConfigNetwork(ctx, f, networkWant40()); err != nil {
			t.Fatal(err)
		}
		if _, err := EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"}); err != nil {
			t.Fatal(err)
		}
		sw := f.networkLookup("vlan40")
		f.containers = []container.Summary{{ID: "c1", NetworkSettings: &container.NetworkSettingsSummary{
			Networks: map[string]*network.EndpointSettings{"vlan40": {NetworkID: sw.ID, IPAddress: "172.80.1.2"}}}}}
		moved := networkWant40()
		moved.IPRange = netip.MustParsePrefix("172.80.2.0/24")
		st, err := EnsureConfigNetwork(ctx, f, moved)
		if err != nil || st.State != NetworkInUse || !st.Requeue || !strings.HasPrefix(st.Message, "in use by 1 containers; drain first") {
			t.Errorf("in use: %+v, %v", st, err)
		}
		if got := f.networkLookup("vlan40-config").IPAM.Config[0].IPRange; got != "172.80.1.0/24" {
			t.Errorf("config network changed to %s while in use", got)
		}
		if st, err := RemoveConfigNetwork(ctx, f, "vlan40"); err != nil || st.State != NetworkInUse {
			t.Errorf("remove while in use: %+v, %v", st, err)
		}
		f.containers = nil
		st, err = EnsureConfigNetwork(ctx, f, moved)
		if err != nil || st.State != NetworkReady || st.Message != "recreated: ip-range 172.80.1.0/24 -> 172.80.2.0/24" {
			t.Errorf("drained: %+v, %v", st, err)
		}
	})

	t.Run("docker's own in-use refusal is a state", func(t *testing.T) {
		f := newDockerFake()
		if _, err := EnsureConfigNetwork(ctx, f, networkWant40()); err != nil {
			t.Fatal(err)
		}
		f.failNext("NetworkRemove", errors.New(`Error response from daemon: configuration network "vlan40-config" is in use`))
		st, err := RemoveConfigNetwork(ctx, f, "vlan40")
		if err != nil || st.State != NetworkInUse || !st.Requeue {
			t.Errorf("status %+v, err %v", st, err)
		}
		st, err = RemoveConfigNetwork(ctx, f, "vlan40")
		if err != nil || st.State != NetworkAbsent {
			t.Errorf("second try: %+v, %v", st, err)
		}
		st, err = RemoveConfigNetwork(ctx, f, "vlan40")
		if err != nil || st.State != NetworkAbsent {
			t.Errorf("absent: %+v, %v", st, err)
		}
	})

	t.Run("unmanaged networks are never touched", func(t *testing.T) {
		f := newDockerFake()
		f.networks["u1"] = &network.Inspect{ID: "u1", Name: "vlan40-config", Scope: "local", ConfigOnly: true}
		f.networks["u2"] = &network.Inspect{ID: "u2", Name: "vlan40", Scope: "swarm", Driver: "macvlan"}
		var cerr *DockerConflictError
		for name, call := range map[string]func() (NetworkStatus, error){
			"ensure config": func() (NetworkStatus, error) { return EnsureConfigNetwork(ctx, f, networkWant40()) },
			"remove config": func() (NetworkStatus, error) { return RemoveConfigNetwork(ctx, f, "vlan40") },
			"ensure swarm":  func() (NetworkStatus, error) { return EnsureSwarmNetwork(ctx, f, SwarmNetwork{VLAN: "vlan40"}) },
			"remove swarm":  func() (NetworkStatus, error) { return RemoveSwarmNetwork(ctx, f, "vlan40") },
		} {
			st, err := call()
			if !errors.As(err, &cerr) || st.State != NetworkError || !strings.HasSuffix(st.Message, "exists and is not managed by swarmvlan") {
				t.Errorf("%s: status %+v, err %v", name, st, err)
			}
		}
		if c := f.Calls(); c["NetworkCreate"] != 0 || c["NetworkRemove"] != 0 {
			t.Errorf("calls %v", c)
		}
	})
}
