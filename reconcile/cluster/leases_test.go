package cluster

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"swarmvlan/spec"
	"swarmvlan/state"
)

func TestPlanLeases(t *testing.T) {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	q := 10 * time.Minute
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	have := map[netip.Addr]state.LeaseEntry{
		a("10.0.0.2"): {Lease: state.Lease{Node: "up"}},                             // held, node in the swarm (down or not)
		a("10.0.0.3"): {Lease: state.Lease{Node: "up", Kind: state.LeaseShim}},      // its shim
		a("10.0.0.4"): {Lease: state.Lease{Node: "gone"}},                           // node removed: quarantine starts
		a("10.0.0.5"): {Lease: state.Lease{Node: "up", Released: ago(time.Minute)}}, // in quarantine
		a("10.0.0.6"): {Lease: state.Lease{Node: "gone", Released: ago(q)}},         // quarantine over
	}
	p := planLeases(have, map[string]bool{"up": true}, now, q)
	if !reflect.DeepEqual(p.Release, []netip.Addr{a("10.0.0.4")}) {
		t.Errorf("release %v", p.Release)
	}
	if !reflect.DeepEqual(p.Delete, []netip.Addr{a("10.0.0.6")}) {
		t.Errorf("delete %v", p.Delete)
	}
	if p.Held["up"] != 2 || len(p.Held) != 1 || p.Quarantined != 2 {
		t.Errorf("held %v quarantined %d", p.Held, p.Quarantined)
	}
	if want := now.Add(q - time.Minute); !p.NextRelease.Equal(want) {
		t.Errorf("next release %s, want %s", p.NextRelease, want)
	}
}

func TestPlanReservations(t *testing.T) {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	have := map[netip.Addr]state.LeaseEntry{
		a("10.0.0.2"): {Lease: state.Lease{Node: "n1", Service: "web", Slot: 1, Released: &now}},                    // slot 1 released: reserve for n2
		a("10.0.0.3"): {Lease: state.Lease{Node: "n1", Service: "web", Slot: 2}},                                    // slot 2 held: not reserved
		a("10.0.0.4"): {Lease: state.Lease{Node: "n1", Service: "web", Slot: 3, Released: &now, ReservedFor: "n3"}}, // no pending task: drop
		a("10.0.0.5"): {Lease: state.Lease{Node: "n1", Service: "db", Slot: 1, Released: &now}},                     // another service
		a("10.0.0.6"): {Lease: state.Lease{Node: "n1", Service: "web", Slot: 4, Released: &now, ReservedFor: "n1"}}, // already reserved
	}
	reserve, drop := planReservations("web", have, []pendingSlot{{Slot: 1, Node: "n2"}, {Slot: 2, Node: "n2"}, {Slot: 4, Node: "n1"}})
	if !reflect.DeepEqual(reserve, map[netip.Addr]string{a("10.0.0.2"): "n2"}) {
		t.Errorf("reserve %v", reserve)
	}
	if !reflect.DeepEqual(drop, []netip.Addr{a("10.0.0.4")}) {
		t.Errorf("drop %v", drop)
	}
}

func TestPreviewLeases(t *testing.T) {
	o, err := spec.Decode([]byte("apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: v}\nspec: {trunk: eth0, subnet: 10.0.0.0/29, rangePlan: {mode: cluster, quarantine: 1m}}"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	have := map[netip.Addr]state.LeaseEntry{
		a("10.0.0.2"): {Lease: state.Lease{Node: "n1", Hostname: "h1", Kind: state.LeaseTask}},
		a("10.0.0.6"): {Lease: state.Lease{Node: "n1", Hostname: "h1", Kind: state.LeaseShim}},
		a("10.0.0.3"): {Lease: state.Lease{Node: "gone", Hostname: "h9", Kind: state.LeaseTask}},
		a("10.0.0.4"): {Lease: state.Lease{Node: "n1", Kind: state.LeaseTask, Released: &now}},
	}
	p, err := PreviewLeases(o.(*spec.VLAN), []SwarmNode{{ID: "n1", Hostname: "h1"}, {ID: "n2", Hostname: "h2"}}, have, now)
	if err != nil {
		t.Fatal(err)
	}
	// A /29: 5 usable (less network, broadcast, gateway .1); 3 held, 1 in
	// quarantine, 1 free.
	if p.PoolSize != 5 || p.Free != 1 || p.Quarantined != 1 {
		t.Errorf("pool %d free %d quarantined %d", p.PoolSize, p.Free, p.Quarantined)
	}
	want := []LeasePreview{
		{Hostname: "h1", Node: "n1", InSwarm: true, Shim: "10.0.0.6", Tasks: []string{"10.0.0.2"}},
		{Hostname: "h2", Node: "n2", InSwarm: true},
		{Hostname: "h9", Node: "gone", Tasks: []string{"10.0.0.3"}},
	}
	if !reflect.DeepEqual(p.Nodes, want) {
		t.Errorf("nodes\n got %+v\nwant %+v", p.Nodes, want)
	}
}
