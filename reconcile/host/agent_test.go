//go:build linux

package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/hashicorp/consul/api"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// hostTestVLAN is a VLAN document as users write it (YAML).
func hostTestVLAN(name string, id int, trunk, subnet, extra string) string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata: {name: %s}
spec:
  id: %d
  trunk: %s
  subnet: %s
  rangePlan: {chunkPrefix: 24}
%s`, name, id, trunk, subnet, extra)
}

// hostTestDocs decodes YAML documents as the view does.
func hostTestDocs(t testing.TB, yamls ...string) []spec.Object {
	t.Helper()
	var out []spec.Object
	for _, y := range yamls {
		docs, err := reconcile.ParseDocuments([]byte(y))
		if err != nil {
			t.Fatalf("parse %s: %v", y, err)
		}
		for _, d := range docs {
			out = append(out, d.Object)
		}
	}
	return out
}

// hostTestView is a synced view holding the documents, stored as the spec
// watch would deliver them.
type hostTestView struct {
	*reconcile.View
	index uint64
}

func newHostTestView(t testing.TB, yamls ...string) *hostTestView {
	t.Helper()
	v := &hostTestView{View: reconcile.NewView("swarmvlan/spec/")}
	v.set(t, yamls...)
	return v
}

// set replaces the view's documents by yamls, one document each.
func (v *hostTestView) set(t testing.TB, yamls ...string) {
	t.Helper()
	var pairs api.KVPairs
	for _, y := range yamls {
		obj := hostTestDocs(t, y)[0]
		v.index++
		pairs = append(pairs, &api.KVPair{
			Key:         "swarmvlan/spec/" + spec.Plural(obj.GetKind()) + "/" + obj.GetName(),
			Value:       []byte(y),
			ModifyIndex: v.index,
		})
	}
	v.Sync(pairs)
	for _, p := range pairs {
		k, _ := v.KeyFor(p.Key)
		if e, bad := v.Invalid(k); bad {
			t.Fatalf("document %s invalid: %v", k, e.Err)
		}
	}
}

func TestHostDesired(t *testing.T) {
	off := "  hostAccess: false\n  promiscuous: false\n"
	tests := []struct {
		name   string
		vlan   string
		host   string // Host document, "" for none
		chunks map[string]string
		want   vlanWant
		parent string
	}{
		{
			name:   "untagged, no Host document: the VLAN's trunk, shim at the chunk's end",
			vlan:   hostTestVLAN("v10", 0, "bond0", "172.80.0.0/16", "  gateway: 172.80.0.1\n  mtu: 1400\n  mode: private\n"),
			chunks: map[string]string{"v10": "172.80.3.0/24"},
			want: vlanWant{
				Net: VLAN{Name: "v10", Driver: "macvlan", Trunk: "bond0", MTU: 1400, Promiscuous: true, HostAccess: true, Mode: "private",
					Chunk: netip.MustParsePrefix("172.80.3.0/24"), ShimAddr: netip.MustParseAddr("172.80.3.255")},
				Driver: "macvlan", Subnet: netip.MustParsePrefix("172.80.0.0/16"), Gateway: netip.MustParseAddr("172.80.0.1"),
				Chunk: "172.80.3.0/24",
			},
			parent: "bond0",
		},
		{
			name:   "ipvlan: the links carry the driver, so the shim is an ipvlan in the VLAN's mode",
			vlan:   hostTestVLAN("v12", 12, "bond0", "172.82.0.0/16", "  driver: ipvlan\n  mode: l3\n"),
			chunks: map[string]string{"v12": "172.82.3.0/24"},
			want: vlanWant{
				Net: VLAN{Name: "v12", Trunk: "bond0", ID: 12, Driver: "ipvlan", Promiscuous: true, HostAccess: true, Mode: "l3",
					Chunk: netip.MustParsePrefix("172.82.3.0/24"), ShimAddr: netip.MustParseAddr("172.82.3.255")},
				Driver: "ipvlan", Subnet: netip.MustParsePrefix("172.82.0.0/16"), Chunk: "172.82.3.0/24",
			},
			parent: "bond0.12",
		},
		{
			name:   "tagged, host trunk override",
			vlan:   hostTestVLAN("v40", 40, "bond0", "10.40.0.0/16", ""),
			host:   "apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: worker1}\nspec: {trunk: eth1}\n",
			chunks: map[string]string{"v40": "10.40.1.0/24", "other": "10.9.0.0/24"},
			want: vlanWant{
				Net: VLAN{Name: "v40", Driver: "macvlan", Trunk: "eth1", ID: 40, Promiscuous: true, HostAccess: true, Mode: "bridge",
					Chunk: netip.MustParsePrefix("10.40.1.0/24"), ShimAddr: netip.MustParseAddr("10.40.1.255")},
				Driver: "macvlan", Subnet: netip.MustParsePrefix("10.40.0.0/16"), Chunk: "10.40.1.0/24",
			},
			parent: "eth1.40",
		},
		{
			name:   "per-VLAN trunk override beats the host's trunk",
			vlan:   hostTestVLAN("v40", 40, "bond0", "10.40.0.0/16", ""),
			host:   "apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: worker1}\nspec:\n  trunk: eth1\n  vlans: {v40: {trunk: bond1}}\n",
			chunks: map[string]string{},
			want: vlanWant{
				Net:    VLAN{Name: "v40", Driver: "macvlan", Trunk: "bond1", ID: 40, Promiscuous: true, HostAccess: true, Mode: "bridge"},
				Driver: "macvlan", Subnet: netip.MustParsePrefix("10.40.0.0/16"),
			},
			parent: "bond1.40",
		},
		{
			name:   "a per-VLAN override for another VLAN does not apply",
			vlan:   hostTestVLAN("v41", 41, "bond0", "10.41.0.0/16", ""),
			host:   "apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: worker1}\nspec:\n  vlans: {v40: {trunk: bond1}}\n",
			chunks: map[string]string{"v41": "10.41.7.0/24"},
			want: vlanWant{
				Net: VLAN{Name: "v41", Driver: "macvlan", Trunk: "bond0", ID: 41, Promiscuous: true, HostAccess: true, Mode: "bridge",
					Chunk: netip.MustParsePrefix("10.41.7.0/24"), ShimAddr: netip.MustParseAddr("10.41.7.255")},
				Driver: "macvlan", Subnet: netip.MustParsePrefix("10.41.0.0/16"), Chunk: "10.41.7.0/24",
			},
			parent: "bond0.41",
		},
		{
			name:   "hostAccess false: no shim address; promiscuous false",
			vlan:   hostTestVLAN("v10", 0, "bond0", "172.80.0.0/16", off),
			chunks: map[string]string{"v10": "172.80.3.0/24"},
			want: vlanWant{
				Net:    VLAN{Name: "v10", Driver: "macvlan", Trunk: "bond0", Mode: "bridge", Chunk: netip.MustParsePrefix("172.80.3.0/24")},
				Driver: "macvlan", Subnet: netip.MustParsePrefix("172.80.0.0/16"), Chunk: "172.80.3.0/24",
			},
			parent: "bond0",
		},
		{
			name:   "the subnet's last chunk: the shim steps back from the broadcast address",
			vlan:   hostTestVLAN("v10", 0, "bond0", "172.80.0.0/16", ""),
			chunks: map[string]string{"v10": "172.80.255.0/24"},
			want: vlanWant{
				Net: VLAN{Name: "v10", Driver: "macvlan", Trunk: "bond0", Promiscuous: true, HostAccess: true, Mode: "bridge",
					Chunk: netip.MustParsePrefix("172.80.255.0/24"), ShimAddr: netip.MustParseAddr("172.80.255.254")},
				Driver: "macvlan", Subnet: netip.MustParsePrefix("172.80.0.0/16"), Chunk: "172.80.255.0/24",
			},
			parent: "bond0",
		},
		{
			name:   "an allocation outside the subnet is a problem, not a chunk",
			vlan:   hostTestVLAN("v10", 0, "bond0", "172.80.0.0/16", ""),
			chunks: map[string]string{"v10": "172.81.0.0/24"},
			want: vlanWant{
				Net:    VLAN{Name: "v10", Driver: "macvlan", Trunk: "bond0", Promiscuous: true, HostAccess: true, Mode: "bridge"},
				Driver: "macvlan", Subnet: netip.MustParsePrefix("172.80.0.0/16"), Chunk: "172.81.0.0/24",
				Problem: "allocated chunk 172.81.0.0/24 is outside subnet 172.80.0.0/16",
			},
			parent: "bond0",
		},
		{
			name:   "an allocation that does not parse is a problem",
			vlan:   hostTestVLAN("v10", 0, "bond0", "172.80.0.0/16", ""),
			chunks: map[string]string{"v10": "172.80.3.0"},
			want: vlanWant{
				Net:    VLAN{Name: "v10", Driver: "macvlan", Trunk: "bond0", Promiscuous: true, HostAccess: true, Mode: "bridge"},
				Driver: "macvlan", Subnet: netip.MustParsePrefix("172.80.0.0/16"), Chunk: "172.80.3.0",
				Problem: `allocated chunk "172.80.3.0": netip.ParsePrefix("172.80.3.0"): no '/'`,
			},
			parent: "bond0",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vlan := hostTestDocs(t, tc.vlan)[0].(*spec.VLAN)
			var host *spec.Host
			if tc.host != "" {
				host = hostTestDocs(t, tc.host)[0].(*spec.Host)
			}
			got := desired([]*spec.VLAN{vlan}, host, tc.chunks)
			if len(got) != 1 {
				t.Fatalf("got %d wants, want 1", len(got))
			}
			if !reflect.DeepEqual(got[0], tc.want) {
				t.Errorf("hostDesired\n got %+v\nwant %+v", got[0], tc.want)
			}
			cn := got[0].configNetwork()
			wantCN := ConfigNetwork{VLAN: tc.want.Net.Name, Driver: tc.want.Driver, Parent: tc.parent, Mode: tc.want.Net.Mode,
				Subnet: tc.want.Subnet, Gateway: tc.want.Gateway, IPRange: tc.want.Net.Chunk, ShimAddr: tc.want.Net.ShimAddr, MTU: tc.want.Net.MTU}
			if cn != wantCN {
				t.Errorf("config network\n got %+v\nwant %+v", cn, wantCN)
			}
		})
	}
}

func TestHostVLANStatusOf(t *testing.T) {
	chunked := vlanWant{Net: VLAN{Name: "v40", Driver: "macvlan", Trunk: "eth1", ID: 40, HostAccess: true,
		Chunk: netip.MustParsePrefix("10.40.1.0/24"), ShimAddr: netip.MustParseAddr("10.40.1.255")}, Chunk: "10.40.1.0/24"}
	noChunk := chunked
	noChunk.Net.Chunk, noChunk.Net.ShimAddr, noChunk.Chunk = netip.Prefix{}, netip.Addr{}, ""
	problem := noChunk
	problem.Chunk, problem.Problem = "10.41.0.0/24", "allocated chunk 10.41.0.0/24 is outside subnet 10.40.0.0/16"

	okNet := &NetStatus{Parent: "eth1.40", Link: "ok", Shim: "ok", Route: "ok", Ready: true}
	ready := &state.NetworkStatus{Name: "v40-config", State: state.NetworkReady, Message: "created"}
	tests := []struct {
		name string
		w    vlanWant
		o    observedVLAN
		want VLANStatus
	}{
		{"everything in place", chunked, observedVLAN{Managed: true, Net: okNet, Config: ready},
			VLANStatus{Parent: "eth1.40", Link: "ok", Shim: "ok", Route: "ok", ConfigNetwork: "ready", Chunk: "10.40.1.0/24", Ready: true}},
		{"kernel not managed: the config network decides", chunked, observedVLAN{Config: ready},
			VLANStatus{Parent: "eth1.40", Link: "not managed", ConfigNetwork: "ready", Chunk: "10.40.1.0/24", Ready: true}},
		{"no chunk yet", noChunk,
			observedVLAN{Managed: true, Net: &NetStatus{Parent: "eth1.40", Link: "ok", Shim: reasonNoChunk, Route: reasonNoChunk, Reason: reasonNoChunk}},
			VLANStatus{Parent: "eth1.40", Link: "ok", Shim: reasonNoChunk, Route: reasonNoChunk,
				ConfigNetwork: "not created: waiting for a chunk", Reason: "waiting for a chunk"}},
		{"no 802.1Q: the kernel's reason comes before waiting for a chunk", noChunk,
			observedVLAN{Managed: true, Net: &NetStatus{Parent: "eth1.40", Link: reasonNo8021Q,
				Shim: "waiting for parent eth1.40", Route: "waiting for parent eth1.40", Reason: reasonNo8021Q}},
			VLANStatus{Parent: "eth1.40", Link: reasonNo8021Q, Shim: "waiting for parent eth1.40", Route: "waiting for parent eth1.40",
				ConfigNetwork: "not created: waiting for a chunk", Reason: reasonNo8021Q}},
		{"link down with a chunk: no config network", chunked,
			observedVLAN{Managed: true, Net: &NetStatus{Parent: "eth1.40", Link: "trunk eth1 not found",
				Shim: "waiting for parent eth1.40", Route: "waiting for parent eth1.40", Reason: "trunk eth1 not found"}},
			VLANStatus{Parent: "eth1.40", Link: "trunk eth1 not found", Shim: "waiting for parent eth1.40", Route: "waiting for parent eth1.40",
				ConfigNetwork: "not created: waiting for parent eth1.40", Chunk: "10.40.1.0/24", Reason: "trunk eth1 not found"}},
		{"shim missing with host access", chunked,
			observedVLAN{Managed: true, Net: &NetStatus{Parent: "eth1.40", Link: "ok", Shim: "create shim: permission denied", Route: "ok",
				Reason: "create shim: permission denied"}, Config: ready},
			VLANStatus{Parent: "eth1.40", Link: "ok", Shim: "create shim: permission denied", Route: "ok",
				ConfigNetwork: "ready", Chunk: "10.40.1.0/24", Reason: "create shim: permission denied"}},
		{"config network in use with the old range", chunked,
			observedVLAN{Managed: true, Net: okNet, Config: &state.NetworkStatus{State: state.NetworkInUse, Message: "in use by 2 containers; drain first"}},
			VLANStatus{Parent: "eth1.40", Link: "ok", Shim: "ok", Route: "ok", ConfigNetwork: "in-use: in use by 2 containers; drain first",
				Chunk: "10.40.1.0/24", Reason: "config network v40-config in-use: in use by 2 containers; drain first"}},
		{"kernel unreadable", chunked, observedVLAN{Managed: true, NetErr: errors.New("observe: EPERM")},
			VLANStatus{Parent: "eth1.40", Link: "unknown: observe: EPERM", ConfigNetwork: "not created: waiting for parent eth1.40",
				Chunk: "10.40.1.0/24", Reason: "host network: observe: EPERM"}},
		{"allocation unusable", problem, observedVLAN{Managed: true, Net: &NetStatus{Parent: "eth1.40", Link: "ok", Reason: reasonNoChunk}},
			VLANStatus{Parent: "eth1.40", Link: "ok", ConfigNetwork: "not created: " + problem.Problem, Chunk: "10.41.0.0/24", Reason: problem.Problem}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := vlanStatusOf(tc.w, tc.o); got != tc.want {
				t.Errorf("status\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestHostChunksOf(t *testing.T) {
	root := "swarmvlan/state/allocations/"
	alloc := func(chunk, node string) []byte {
		b, _ := json.Marshal(state.Allocation{Chunk: chunk, Node: node})
		return b
	}
	pairs := api.KVPairs{
		{Key: root + "v40/n1", Value: alloc("10.40.1.0/24", "n1")},
		{Key: root + "v40/n2", Value: alloc("10.40.2.0/24", "n2")},
		{Key: root + "v41/n1", Value: []byte("{not json")},
		{Key: root + "v42/n1", Value: []byte("{not json")},
		{Key: root + "v43/n1", Value: alloc("", "n1")},
		{Key: root + "v44/n1/extra", Value: alloc("10.44.0.0/24", "n1")},
	}
	prev := map[string]string{"v41": "10.41.3.0/24"}
	got, bad := chunksOf(root, "n1", pairs, prev)
	want := map[string]string{"v40": "10.40.1.0/24", "v41": "10.41.3.0/24"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("chunks %v, want %v (v41 keeps its chunk while its record is unreadable)", got, want)
	}
	if len(bad) != 3 {
		t.Errorf("%d unreadable allocations reported, want 3: %v", len(bad), bad)
	}
}

func TestHostReportSame(t *testing.T) {
	base := state.NodeReport{Hostname: "h", VLANs: map[string]state.NodeVLANReport{"v40": {Ready: true, Chunk: "10.40.1.0/24"}}, Updated: time.Now()}
	tests := []struct {
		name string
		edit func(r *state.NodeReport)
		same bool
	}{
		{"only the time differs", func(r *state.NodeReport) { r.Updated = r.Updated.Add(time.Hour) }, true},
		{"readiness differs", func(r *state.NodeReport) {
			r.VLANs = map[string]state.NodeVLANReport{"v40": {Reason: "waiting for a chunk"}}
		}, false},
		{"a VLAN more", func(r *state.NodeReport) {
			r.VLANs = map[string]state.NodeVLANReport{"v40": base.VLANs["v40"], "v41": {}}
		}, false},
		{"hostname differs", func(r *state.NodeReport) { r.Hostname = "other" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := base
			tc.edit(&r)
			if got := reportSame(&base, &r); got != tc.same {
				t.Errorf("hostReportSame = %v, want %v", got, tc.same)
			}
		})
	}
	if reportSame(nil, &base) {
		t.Error("nothing written compares equal to a report")
	}
}

func TestHostStaleConfigNetworks(t *testing.T) {
	cfg := func(name, vlan string, managed, configOnly bool) network.Summary {
		n := network.Summary{Name: name, ConfigOnly: configOnly, Labels: map[string]string{}}
		if managed {
			n.Labels = spec.OwnerLabels(spec.KindVLAN, vlan)
		}
		return n
	}
	nets := []network.Summary{
		cfg("gone-config", "gone", true, true),
		cfg("kept-config", "kept", true, true),
		cfg("theirs-config", "theirs", false, true),
		cfg("foreign-config", "foreign", true, true), // another installation's
		cfg("gone2_net", "gone2", true, true),        // named by spec.docker.configNetwork
		cfg("gone3-config", "gone3", true, false),    // not config-only
		cfg("vlan50_net", "", false, true),           // adopted, its VLAN gone
		cfg("vlan60_net", "", false, true),           // adopted, its VLAN kept
		cfg("vlan70_net", "", false, true),           // hand-made, not adopted
	}
	for i := range nets {
		nets[i].ID = "id-" + nets[i].Name
	}
	adopted := map[string]state.AdoptedNetwork{
		"id-vlan50_net": {ID: "id-vlan50_net", Name: "vlan50_net", VLAN: "vlan50-net", Role: state.AdoptedConfigNetwork},
		"id-vlan60_net": {ID: "id-vlan60_net", Name: "vlan60_net", VLAN: "kept", Role: state.AdoptedConfigNetwork},
	}
	inView := map[string]bool{"kept": true}
	known := map[string]bool{"gone": true, "kept": true, "theirs": true, "gone2": true, "gone3": true}
	got := staleConfigNetworks(nets, inView, known, adopted)
	want := []staleConfig{{VLAN: "gone", Name: "gone-config"}, {VLAN: "gone2", Name: "gone2_net"},
		{VLAN: "vlan50-net", Name: "vlan50_net", AdoptedID: "id-vlan50_net"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stale %v, want %v", got, want)
	}
}

// hostTestAgent is an agent on a fake Engine with its kernel unmanaged,
// identity and view set, and no Consul: converge is driven by hand.
func hostTestAgent(t *testing.T, view *reconcile.View) (*Agent, *enginetest.Fake) {
	t.Helper()
	fake := enginetest.NewFake()
	a := NewAgent(Config{Docker: fake, View: view})
	a.setIdentity(fake.NodeID, "worker1")
	return a, fake
}

func hostTestConverge(t *testing.T, a *Agent) *netPass {
	t.Helper()
	p, ok := a.converge(context.Background())
	if !ok {
		t.Fatal("converge did nothing")
	}
	return p
}

// hostTestConfigNet returns the fake's network named name, or nil.
func hostTestConfigNet(f *enginetest.Fake, name string) *network.Inspect {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if n := f.NetworkLookup(name); n != nil {
		c := enginetest.Clone(*n)
		return &c
	}
	return nil
}

func TestHostConvergeConfigNetworks(t *testing.T) {
	v40 := hostTestVLAN("v40", 40, "bond0", "10.40.0.0/16", "  gateway: 10.40.0.1\n")
	v41 := hostTestVLAN("v41", 0, "bond0", "10.41.0.0/16", "  hostAccess: false\n")
	view := newHostTestView(t, v40, v41,
		"apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: worker1}\nspec: {trunk: eth1}\n")
	a, fake := hostTestAgent(t, view.View)

	t.Run("nothing before the allocations were read", func(t *testing.T) {
		if _, ok := a.converge(context.Background()); ok {
			t.Fatal("converged without allocations")
		}
		for m, n := range fake.Calls() {
			if n != 0 {
				t.Errorf("%d %s calls before the allocations were read", n, m)
			}
		}
	})

	a.setChunks(map[string]string{"v40": "10.40.1.0/24"})
	t.Run("a config network for the VLAN with a chunk only", func(t *testing.T) {
		p := hostTestConverge(t, a)
		if len(p.Errs) > 0 {
			t.Fatal(p.Errs)
		}
		n := hostTestConfigNet(fake, "v40-config")
		if n == nil {
			t.Fatal("v40-config not created")
		}
		ipam := n.IPAM.Config[0]
		if !n.ConfigOnly || n.Options["parent"] != "eth1.40" || ipam.Subnet != "10.40.0.0/16" || ipam.IPRange != "10.40.1.0/24" ||
			ipam.Gateway != "10.40.0.1" || ipam.AuxAddress["shim"] != "10.40.1.255" {
			t.Errorf("v40-config is %+v with IPAM %+v", n, ipam)
		}
		if hostTestConfigNet(fake, "v41-config") != nil {
			t.Error("v41-config created without a chunk")
		}
		want := map[string]state.NodeVLANReport{
			"v40": {Ready: true, Chunk: "10.40.1.0/24"},
			"v41": {Reason: reasonWaitChunk},
		}
		if !reflect.DeepEqual(p.Report.VLANs, want) || p.Report.Hostname != "worker1" {
			t.Errorf("report %+v, want VLANs %+v", p.Report, want)
		}
		if p.Status.Summary != "1 of 2 VLANs ready" || p.Status.VLANs["v40"].Link != "not managed" {
			t.Errorf("status %+v", p.Status)
		}
	})

	t.Run("a second pass makes one list call and no change", func(t *testing.T) {
		before := fake.Calls()
		p := hostTestConverge(t, a)
		after := fake.Calls()
		for m := range after {
			want := uint64(0)
			if m == "NetworkList" {
				want = 1
			}
			if d := after[m] - before[m]; d != want {
				t.Errorf("%d %s calls, want %d", d, m, want)
			}
		}
		if !p.Report.VLANs["v40"].Ready {
			t.Errorf("v40 not ready: %+v", p.Report.VLANs["v40"])
		}
	})

	t.Run("a new chunk recreates the config network with its range", func(t *testing.T) {
		a.setChunks(map[string]string{"v40": "10.40.9.0/24", "v41": "10.41.2.0/24"})
		hostTestConverge(t, a)
		n := hostTestConfigNet(fake, "v40-config")
		if n == nil || n.IPAM.Config[0].IPRange != "10.40.9.0/24" || n.IPAM.Config[0].AuxAddress["shim"] != "10.40.9.255" {
			t.Fatalf("v40-config after the chunk moved: %+v", n)
		}
		n41 := hostTestConfigNet(fake, "v41-config")
		if n41 == nil || n41.IPAM.Config[0].IPRange != "10.41.2.0/24" || len(n41.IPAM.Config[0].AuxAddress) != 0 || n41.Options["parent"] != "eth1" {
			t.Fatalf("v41-config (untagged, no host access): %+v", n41)
		}
	})

	// Another installation's config network on the same Engine.
	if _, err := fake.NetworkCreate(context.Background(), "foreign-config", networkConfigWant(ConfigNetwork{
		VLAN: "foreign", Parent: "eth9", Subnet: netip.MustParsePrefix("10.99.0.0/16")})); err != nil {
		t.Fatal(err)
	}

	t.Run("a VLAN in use keeps its config network when removed", func(t *testing.T) {
		cfg := hostTestConfigNet(fake, "v41-config")
		swarmID, err := fake.NetworkCreate(context.Background(), "v41", network.CreateOptions{Driver: "macvlan", Scope: "swarm",
			ConfigFrom: &network.ConfigReference{Network: cfg.Name}})
		if err != nil {
			t.Fatal(err)
		}
		fake.Mu.Lock()
		fake.Containers = append(fake.Containers, container.Summary{ID: "c1", NetworkSettings: &container.NetworkSettingsSummary{
			Networks: map[string]*network.EndpointSettings{"v41": {NetworkID: swarmID}}}})
		fake.Mu.Unlock()
		view.set(t, v40)
		p := hostTestConverge(t, a)
		if hostTestConfigNet(fake, "v41-config") == nil {
			t.Fatal("v41-config removed while a container uses it")
		}
		if msg := p.Status.Removing["v41"]; !strings.Contains(msg, "in use by 1 containers") || !p.Requeue {
			t.Errorf("removing %q, requeue %v", msg, p.Requeue)
		}
		if _, ok := p.Status.VLANs["v41"]; ok {
			t.Error("v41 still reported among the VLANs in force")
		}
		if _, ok := a.lastWant["v41"]; !ok {
			t.Error("v41's links are no longer wanted while its config network stays")
		}

		fake.Mu.Lock()
		fake.Containers = nil
		delete(fake.Networks, swarmID)
		fake.Mu.Unlock()
		p = hostTestConverge(t, a)
		if hostTestConfigNet(fake, "v41-config") != nil {
			t.Error("v41-config not removed once unused")
		}
		if len(p.Status.Removing) != 0 || p.Requeue {
			t.Errorf("still removing %v (requeue %v)", p.Status.Removing, p.Requeue)
		}
		if _, ok := a.lastWant["v41"]; ok {
			t.Error("v41's links still wanted after its config network went")
		}
		if hostTestConfigNet(fake, "foreign-config") == nil {
			t.Error("a config network of a VLAN this agent never had was removed")
		}
	})

	t.Run("Docker away: nothing removed, links of removed VLANs kept", func(t *testing.T) {
		a.lastWant["gone"] = VLAN{Name: "gone", Trunk: "eth1"}
		fake.FailNext("NetworkList", errors.New("connection refused"))
		p := hostTestConverge(t, a)
		if len(p.Errs) == 0 {
			t.Error("no error reported")
		}
		if _, ok := p.Status.Removing["gone"]; !ok {
			t.Errorf("links of a removed VLAN not kept while Docker is away: %+v", p.Status.Removing)
		}
		if st := p.Status.VLANs["v40"]; st.Ready || !strings.Contains(st.Reason, "connection refused") {
			t.Errorf("v40 while Docker is away: %+v", st)
		}
		if hostTestConfigNet(fake, "v40-config") == nil {
			t.Error("v40-config gone")
		}
	})
}

// TestHostControllerSyntheticKeys checks the controller the agent runs:
// with Keys set, its first pass and resyncs visit only those keys, never
// the view's documents, and a key of a kind that is not a spec kind gets no
// status write (no Consul request at all: the store points nowhere).
func TestHostControllerSyntheticKeys(t *testing.T) {
	view := newHostTestView(t, hostTestVLAN("v40", 40, "bond0", "10.40.0.0/16", ""))
	store, err := state.New(state.Config{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	synthetic := reconcile.Key{Kind: kindNetwork, Name: "n1"}
	var mu sync.Mutex
	var seen []reconcile.Key
	record := reconcile.ReconcilerFunc(func(_ context.Context, k reconcile.Key, _ *reconcile.Doc) reconcile.Outcome {
		mu.Lock()
		seen = append(seen, k)
		mu.Unlock()
		return reconcile.Retry(errors.New("a failure is retried, still without status"))
	})
	c := &reconcile.Controller{Store: store, View: view.View, Log: slog.New(slog.DiscardHandler), Resync: 10 * time.Millisecond,
		Keys: func() []reconcile.Key { return []reconcile.Key{synthetic} }}
	c.Register(kindNetwork, record)
	c.Register(spec.KindVLAN, record)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	hostTestEventually(t, 5*time.Second, "first pass and resyncs", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < 3 {
			return fmt.Errorf("%d reconciles", len(seen))
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, k := range seen {
		if k != synthetic {
			t.Errorf("reconciled %v", k)
		}
	}
	if n := store.Requests(); n != 0 {
		t.Errorf("%d Consul requests for a synthetic key", n)
	}
}

func TestHostVLANFromConfig(t *testing.T) {
	tests := []struct {
		name string
		want VLAN // Promiscuous is always true: not recorded
	}{
		{"tagged with host access and mtu", VLAN{Name: "v40", Driver: "macvlan", Trunk: "bond0", ID: 40, MTU: 1400, Promiscuous: true, HostAccess: true, Mode: "bridge",
			Chunk: netip.MustParsePrefix("10.40.1.0/24"), ShimAddr: netip.MustParseAddr("10.40.1.255")}},
		{"untagged without host access", VLAN{Name: "v41", Driver: "macvlan", Trunk: "eth1", Promiscuous: true, Mode: "private",
			Chunk: netip.MustParsePrefix("10.41.2.0/24")}},
		{"a dotted trunk name that is no tag", VLAN{Name: "v42", Driver: "macvlan", Trunk: "br.lan", Promiscuous: true, Mode: "bridge",
			Chunk: netip.MustParsePrefix("10.42.2.0/24")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := vlanWant{Net: tc.want, Driver: "macvlan", Subnet: netip.MustParsePrefix(tc.want.Chunk.Addr().String() + "/16").Masked()}
			opts := networkConfigWant(w.configNetwork())
			n := network.Summary{Name: spec.ConfigNetworkName(tc.want.Name), ConfigOnly: true, Options: opts.Options, Labels: opts.Labels, IPAM: *opts.IPAM}
			got, ok := vlanFromConfig(tc.want.Name, n)
			if !ok || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("rebuilt\n got %+v (%v)\nwant %+v", got, ok, tc.want)
			}
		})
	}
	if _, ok := vlanFromConfig("v", network.Summary{}); ok {
		t.Error("rebuilt a VLAN from a network without a parent")
	}
}

// TestHostConvergeKeepsLinksOfUnseenVLAN: after a restart, a VLAN removed
// from the spec meanwhile still has its config network, in use; its links
// are kept as the config network records them.
func TestHostConvergeKeepsLinksOfUnseenVLAN(t *testing.T) {
	view := newHostTestView(t, hostTestVLAN("v40", 40, "bond0", "10.40.0.0/16", ""))
	a, fake := hostTestAgent(t, view.View)
	ctx := context.Background()
	old := ConfigNetwork{VLAN: "old", Driver: "macvlan", Parent: "eth1.7", Mode: "bridge", Subnet: netip.MustParsePrefix("10.7.0.0/16"),
		IPRange: netip.MustParsePrefix("10.7.3.0/24"), ShimAddr: netip.MustParseAddr("10.7.3.255")}
	if _, err := fake.NetworkCreate(ctx, spec.ConfigNetworkName("old"), networkConfigWant(old)); err != nil {
		t.Fatal(err)
	}
	swarmID, err := fake.NetworkCreate(ctx, "old", network.CreateOptions{Driver: "macvlan", Scope: "swarm",
		ConfigFrom: &network.ConfigReference{Network: spec.ConfigNetworkName("old")}})
	if err != nil {
		t.Fatal(err)
	}
	fake.Containers = append(fake.Containers, container.Summary{ID: "c1", NetworkSettings: &container.NetworkSettingsSummary{
		Networks: map[string]*network.EndpointSettings{"old": {NetworkID: swarmID}}}})
	// The node's chunk of "old" shows the VLAN was this installation's.
	a.setChunks(map[string]string{"v40": "10.40.1.0/24", "old": "10.7.3.0/24"})

	p := hostTestConverge(t, a)
	if _, ok := p.Status.Removing["old"]; !ok || hostTestConfigNet(fake, "old-config") == nil {
		t.Fatalf("old-config not kept while in use: %+v", p.Status.Removing)
	}
	want := VLAN{Name: "old", Trunk: "eth1", ID: 7, Driver: "macvlan", Promiscuous: true, HostAccess: true, Mode: "bridge",
		Chunk: netip.MustParsePrefix("10.7.3.0/24"), ShimAddr: netip.MustParseAddr("10.7.3.255")}
	if got := a.lastWant["old"]; !reflect.DeepEqual(got, want) {
		t.Errorf("links kept for old\n got %+v\nwant %+v", got, want)
	}
}

// TestHostConvergeHoldsVLANWithInvalidDocument checks that a VLAN whose
// stored document is invalid, with no valid version ever seen (a stricter
// validation after an upgrade), keeps its config network and links, even
// unused: it is held as it is, not treated as deleted.
func TestHostConvergeHoldsVLANWithInvalidDocument(t *testing.T) {
	view := newHostTestView(t, hostTestVLAN("v40", 40, "bond0", "10.40.0.0/16", ""))
	// chunkPrefix 8 is outside what validation allows for a /16.
	view.Sync(api.KVPairs{
		{Key: "swarmvlan/spec/vlans/v40", Value: []byte(hostTestVLAN("v40", 40, "bond0", "10.40.0.0/16", "")), ModifyIndex: 1},
		{Key: "swarmvlan/spec/vlans/old", Value: []byte(strings.Replace(hostTestVLAN("old", 7, "eth1", "10.7.0.0/16", ""), "chunkPrefix: 24", "chunkPrefix: 8", 1)), ModifyIndex: 2},
	})
	if _, bad := view.Invalid(reconcile.Key{Kind: spec.KindVLAN, Name: "old"}); !bad {
		t.Fatal("the test's invalid document validates")
	}
	a, fake := hostTestAgent(t, view.View)
	ctx := context.Background()
	old := ConfigNetwork{VLAN: "old", Driver: "macvlan", Parent: "eth1.7", Mode: "bridge", Subnet: netip.MustParsePrefix("10.7.0.0/16"),
		IPRange: netip.MustParsePrefix("10.7.3.0/24"), ShimAddr: netip.MustParseAddr("10.7.3.255")}
	if _, err := fake.NetworkCreate(ctx, spec.ConfigNetworkName("old"), networkConfigWant(old)); err != nil {
		t.Fatal(err)
	}
	a.setChunks(map[string]string{"v40": "10.40.1.0/24", "old": "10.7.3.0/24"})

	p := hostTestConverge(t, a)
	if hostTestConfigNet(fake, "old-config") == nil || fake.Calls()["NetworkRemove"] != 0 {
		t.Fatalf("old-config removed although its document is only invalid: %+v", p.Status.Removing)
	}
	if why := p.Status.Removing["old"]; !strings.Contains(why, "invalid") {
		t.Errorf("status says %q for old, want it to say the document is invalid", why)
	}
	if got := a.lastWant["old"]; got.Trunk != "eth1" || got.ID != 7 || got.Chunk != old.IPRange {
		t.Errorf("links of old not kept: %+v", got)
	}
}

// TestHostConvergeEngineDisagrees checks that an Engine which does not
// report back what it was given never makes the agent spin: Engine 29's
// null IPAM is read through the label with no further write; an Engine
// that reports a different chunk than it was given gets one re-creation,
// then the VLAN is reported not ready with the reason and left alone until
// the back-off ends, and the next re-creation doubles the back-off.
func TestHostConvergeEngineDisagrees(t *testing.T) {
	v40 := hostTestVLAN("v40", 40, "bond0", "10.40.0.0/16", "  gateway: 10.40.0.1\n")

	t.Run("engine 29: IPAM null on inspect", func(t *testing.T) {
		a, fake := hostTestAgent(t, newHostTestView(t, v40).View)
		fake.OnNetworkCreate = func(n *network.Inspect) {
			if n.ConfigOnly {
				n.IPAM.Config = nil
			}
		}
		a.setChunks(map[string]string{"v40": "10.40.1.0/24"})
		hostTestConverge(t, a)
		before := fake.Calls()
		for range 3 {
			p := hostTestConverge(t, a)
			if st := p.Status.VLANs["v40"]; !st.Ready {
				t.Fatalf("v40 not ready on Engine 29: %+v", st)
			}
		}
		after := fake.Calls()
		if d := after["NetworkCreate"] - before["NetworkCreate"] + after["NetworkRemove"] - before["NetworkRemove"]; d != 0 {
			t.Errorf("%d network writes after the config network was made", d)
		}
	})

	t.Run("an engine that reports another chunk", func(t *testing.T) {
		a, fake := hostTestAgent(t, newHostTestView(t, v40).View)
		fake.OnNetworkCreate = func(n *network.Inspect) {
			if n.ConfigOnly {
				n.IPAM.Config[0].IPRange = "10.40.7.0/24"
			}
		}
		a.setChunks(map[string]string{"v40": "10.40.1.0/24"})
		hostTestConverge(t, a) // created
		p := hostTestConverge(t, a)
		if st := p.Status.VLANs["v40"]; st.Ready || !strings.Contains(st.ConfigNetwork, "waiting: recreated: ip-range 10.40.7.0/24 -> 10.40.1.0/24") || !p.Requeue {
			t.Fatalf("after the re-creation: %+v (requeue %v)", st, p.Requeue)
		}
		before := fake.Calls()
		for range 5 {
			p = hostTestConverge(t, a)
		}
		after := fake.Calls()
		if d := after["NetworkCreate"] - before["NetworkCreate"] + after["NetworkRemove"] - before["NetworkRemove"]; d != 0 {
			t.Errorf("%d network writes in 5 passes within the back-off", d)
		}
		st := p.Status.VLANs["v40"]
		if st.Ready || !strings.Contains(st.Reason, "the engine reports ip-range 10.40.7.0/24 -> 10.40.1.0/24 again after the network was re-created (1 times)") {
			t.Errorf("within the back-off: %+v", st)
		}
		if p.Report.VLANs["v40"].Ready {
			t.Error("the node reports v40 ready while the engine disagrees")
		}

		first := a.remade["v40"].next.Sub(time.Now())
		a.remade["v40"].next = time.Now().Add(-time.Second)
		hostTestConverge(t, a)
		r := a.remade["v40"]
		if r.times != 2 || r.next.Sub(time.Now()) <= first {
			t.Errorf("second re-creation: times %d, next in %v (first back-off %v)", r.times, r.next.Sub(time.Now()), first)
		}

		// The engine comes to agree: the VLAN is ready and the back-off is
		// forgotten.
		fake.Mu.Lock()
		fake.NetworkLookup("v40-config").IPAM.Config[0].IPRange = "10.40.1.0/24"
		fake.Mu.Unlock()
		if p := hostTestConverge(t, a); !p.Status.VLANs["v40"].Ready || a.remade["v40"] != nil {
			t.Errorf("after the engine agrees: %+v, remade %+v", p.Status.VLANs["v40"], a.remade["v40"])
		}
	})
}

// TestHostDesiredSharedParent checks that two VLANs on one parent are
// refused the same way on every Engine: the first by name keeps it, the
// other is not set up and its status says why.
func TestHostDesiredSharedParent(t *testing.T) {
	docs := hostTestDocs(t,
		hostTestVLAN("b", 0, "eth1", "10.2.0.0/16", ""),
		hostTestVLAN("a", 0, "eth1", "10.1.0.0/16", ""),
		hostTestVLAN("c", 40, "eth1", "10.3.0.0/16", ""),
		hostTestVLAN("d", 40, "eth1", "10.4.0.0/16", ""),
		hostTestVLAN("e", 41, "eth1", "10.5.0.0/16", ""),
	)
	var vlans []*spec.VLAN
	for _, d := range docs {
		vlans = append(vlans, d.(*spec.VLAN))
	}
	problems := map[string]string{}
	for _, w := range desired(vlans, nil, map[string]string{}) {
		problems[w.Net.Name] = w.Problem
	}
	want := map[string]string{
		"a": "",
		"b": `parent eth1 is already vlan "a"'s: each VLAN needs a parent of its own on a host (a tag or trunk of its own), as Engines before 27 refuse a second network on one parent`,
		"c": "",
		"d": `parent eth1.40 is already vlan "c"'s: each VLAN needs a parent of its own on a host (a tag or trunk of its own), as Engines before 27 refuse a second network on one parent`,
		"e": "",
	}
	if !reflect.DeepEqual(problems, want) {
		t.Errorf("problems %q\nwant %q", problems, want)
	}
}
