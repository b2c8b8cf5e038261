package host

import (
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"swarmvlan/reconcile/kernel"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// TestHostNetAdoptsHandMadeShim makes the manual recipe's shim by hand in
// a fresh namespace (a bridge-mode macvlan on the parent, a /32 outside
// the node's range, the range routed through it), checks that the host
// role reports it, then takes it over: the same link keeps its address and
// route, gets swarmvlan's alias, no second shim is made, the host still
// reaches a container in the range through it, and from then on it is
// managed (a deleted route comes back, and it goes with its VLAN).
func TestHostNetAdoptsHandMadeShim(t *testing.T) {
	hostNS, h := hostTestNS(t)
	trunk := hostTestVeth(t, h, "trk0", "trk0p", true)
	chunk := netip.MustParsePrefix("10.40.1.0/24")

	// The recipe: ip link add hshim link trk0 type macvlan mode bridge;
	// ip addr add 10.40.0.11/32 dev hshim; ip link set hshim up;
	// ip route add 10.40.1.0/24 dev hshim.
	shim := hostTestMacvlan(t, h, "hshim", trunk, "10.40.0.11/32")
	if err := h.RouteAdd(kernel.ShimRouteRequest(shim.Attrs().Index, chunk)); err != nil {
		t.Fatal(err)
	}
	// A container in the range, made as Docker makes it.
	hostTestContainer(t, h, trunk, spec.DriverMacvlan, "", "10.40.1.10/16")

	hn := hostTestNew(t, hostNS)
	v := VLAN{Name: "vlan40-net", Trunk: "trk0", Promiscuous: true, Mode: "bridge", Chunk: chunk}
	hostTestEnsure(t, hn, []VLAN{v})
	want := []state.NodeShim{{Name: "hshim", Parent: "trk0", Mode: "bridge", Addrs: []string{"10.40.0.11/32"}, Routes: []string{"10.40.1.0/24"}}}
	if got := hn.HandMadeShims(map[string]bool{"trk0": true}); !reflect.DeepEqual(got, want) {
		t.Fatalf("reported shims %+v, want %+v", got, want)
	}
	if got := hn.HandMadeShims(map[string]bool{"other0": true}); len(got) != 0 {
		t.Errorf("shims reported on another parent: %+v", got)
	}

	v.HostAccess, v.Shim, v.ShimAddr = true, "hshim", netip.MustParseAddr("10.40.0.11")
	t.Run("taken over", func(t *testing.T) {
		st := hostTestEnsure(t, hn, []VLAN{v})
		if s := st[v.Name]; !s.Ready || s.Shim != "ok" || s.Route != "ok" {
			t.Fatalf("status %+v", s)
		}
		adoptShimCheck(t, h, shim.Attrs().Index, chunk)
		if got := hn.HandMadeShims(map[string]bool{"trk0": true}); len(got) != 0 {
			t.Errorf("the shim is still reported as hand-made: %+v", got)
		}
		local, err := hostTestDial(t, hostNS, "10.40.1.10", time.Second)
		if err != nil || local != "10.40.0.11" {
			t.Errorf("host reached the container from %q (%v), want through the shim's 10.40.0.11", local, err)
		}
		writes := hn.k.WriteCount()
		hostTestEnsure(t, hn, []VLAN{v})
		if n := hn.k.WriteCount() - writes; n != 0 {
			t.Errorf("a converged adopted shim took %d more writes", n)
		}
	})

	t.Run("managed from then on", func(t *testing.T) {
		if err := h.RouteDel(kernel.ShimRouteRequest(shim.Attrs().Index, chunk)); err != nil {
			t.Fatal(err)
		}
		hostTestEnsure(t, hn, []VLAN{v})
		adoptShimCheck(t, h, shim.Attrs().Index, chunk)
		hostTestEnsure(t, hn, nil)
		if _, err := h.LinkByName("hshim"); err == nil {
			t.Error("the adopted shim stayed after its VLAN went")
		}
	})

	t.Run("not a shim any more", func(t *testing.T) {
		// A hand-made link of the recorded name that is no bridge-mode
		// macvlan is reported and left alone, never deleted.
		la := netlink.NewLinkAttrs()
		la.Name, la.ParentIndex = "hshim", trunk.Attrs().Index
		if err := h.LinkAdd(&netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_PRIVATE}); err != nil {
			t.Fatal(err)
		}
		st := hostTestEnsure(t, hn, []VLAN{v})
		if s := st[v.Name]; s.Ready || s.Shim == "ok" {
			t.Errorf("status %+v, want the shim's problem", s)
		}
		l, err := h.LinkByName("hshim")
		if err != nil || l.Attrs().Alias != "" || l.(*netlink.Macvlan).Mode != netlink.MACVLAN_MODE_PRIVATE {
			t.Errorf("the foreign link was changed: %v %+v", err, l)
		}
	})
}

// adoptShimCheck fails unless the only macvlan in h's namespace is the
// adopted shim, the very link of index, with swarmvlan's alias, its
// hand-made address and the route to chunk.
func adoptShimCheck(t *testing.T, h *netlink.Handle, index int, chunk netip.Prefix) {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var macvlans []string
	for _, l := range links {
		if l.Type() == "macvlan" {
			macvlans = append(macvlans, l.Attrs().Name)
		}
	}
	if !reflect.DeepEqual(macvlans, []string{"hshim"}) {
		t.Errorf("macvlan links %v, want the adopted hshim alone", macvlans)
	}
	l, err := h.LinkByName("hshim")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().Index != index || l.Attrs().Alias != linkAlias("vlan40-net") || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("hshim: index %d (was %d), alias %q, flags %v", l.Attrs().Index, index, l.Attrs().Alias, l.Attrs().Flags)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.40.0.11/32" {
		t.Errorf("hshim addresses %v (%v), want 10.40.0.11/32 alone", addrs, err)
	}
	routes, err := h.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range routes {
		found = found || (r.Dst != nil && r.Dst.String() == chunk.String())
	}
	if !found {
		t.Errorf("no route to %s through hshim: %v", chunk, routes)
	}
}
