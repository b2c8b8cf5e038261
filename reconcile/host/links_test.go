package host

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"swarmvlan/reconcile/kernel"
	"testing"
)

// Indexes of the links in hostConverged.
const (
	hostTestTrunk   = 2
	hostTestTrunk2  = 3
	hostTestForeign = 5
	hostTestSub     = 10
	hostTestShim40  = 11
	hostTestShim50  = 12
)

// hostTestWant is a tagged VLAN (vlan40 on eth0.40) and an untagged one
// (vlan50 on eth1), both with host access and a chunk.
func hostTestWant() []VLAN {
	return []VLAN{
		{Name: "vlan40", Trunk: "eth0", ID: 40, MTU: 1400, Promiscuous: true, HostAccess: true, Mode: "bridge",
			Chunk: netip.MustParsePrefix("10.40.1.0/24"), ShimAddr: netip.MustParseAddr("10.40.1.255")},
		{Name: "vlan50", Trunk: "eth1", Promiscuous: true, HostAccess: true, Mode: "bridge",
			Chunk: netip.MustParsePrefix("10.50.2.0/24"), ShimAddr: netip.MustParseAddr("10.50.2.255")},
	}
}

// hostConverged is the kernel state hostTestWant converges to, plus a
// foreign macvlan (fm0) with its own address and route on eth0.
func hostConverged() kernel.Observed {
	return kernel.Observed{
		Links: []kernel.Link{
			{Index: 1, Name: "lo", Kind: "device", Up: true, MTU: 65536, Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
			{Index: hostTestTrunk, Name: "eth0", Kind: "veth", Up: true, Promisc: true, MTU: 1500},
			{Index: hostTestTrunk2, Name: "eth1", Kind: "veth", Up: true, Promisc: true, MTU: 1500},
			{Index: hostTestForeign, Name: "fm0", Kind: "macvlan", MacvlanMode: "bridge", ParentIndex: hostTestTrunk, Up: true, MTU: 1500,
				Addrs: []netip.Prefix{netip.MustParsePrefix("10.40.1.7/16")}},
			{Index: hostTestSub, Name: "eth0.40", Kind: "vlan", VlanID: 40, ParentIndex: hostTestTrunk, Alias: "swarmvlan:vlan40",
				Up: true, Promisc: true, MTU: 1400},
			{Index: hostTestShim40, Name: "sv-vlan40", Kind: "macvlan", MacvlanMode: "bridge", ParentIndex: hostTestSub,
				Alias: "swarmvlan:vlan40", Up: true, MTU: 1400,
				Addrs: []netip.Prefix{netip.MustParsePrefix("10.40.1.255/32"), netip.MustParsePrefix("fe80::1/64")}},
			{Index: hostTestShim50, Name: "sv-vlan50", Kind: "macvlan", MacvlanMode: "bridge", ParentIndex: hostTestTrunk2,
				Alias: "swarmvlan:vlan50", Up: true, MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("10.50.2.255/32")}},
		},
		Routes: []kernel.Route{
			{LinkIndex: hostTestForeign, Dst: netip.MustParsePrefix("10.40.0.0/16"), Scope: kernel.ScopeLink, Protocol: kernel.ProtoKernel},
			{LinkIndex: hostTestShim40, Dst: netip.MustParsePrefix("10.40.1.0/24"), Scope: kernel.ScopeLink, Protocol: 3},
			{LinkIndex: hostTestShim40, Dst: netip.MustParsePrefix("fe80::/64"), Protocol: kernel.ProtoKernel},
			{LinkIndex: hostTestShim50, Dst: netip.MustParsePrefix("10.50.2.0/24"), Scope: kernel.ScopeLink, Protocol: 3},
		},
		PromiscSet: map[string]bool{},
	}
}

func obsLink(o *kernel.Observed, name string) *kernel.Link {
	for i := range o.Links {
		if o.Links[i].Name == name {
			return &o.Links[i]
		}
	}
	return nil
}

func obsWithout(o *kernel.Observed, names ...string) {
	gone := map[int]bool{}
	o.Links = slices.DeleteFunc(o.Links, func(l kernel.Link) bool {
		if slices.Contains(names, l.Name) {
			gone[l.Index] = true
			return true
		}
		return false
	})
	o.Routes = slices.DeleteFunc(o.Routes, func(r kernel.Route) bool { return gone[r.LinkIndex] })
}

// hostSteps renders a plan as lines that read like the kernel change.
func hostSteps(plan []linkAction) []string {
	out := make([]string, 0, len(plan))
	for _, a := range plan {
		if a.Op == linkBlock {
			out = append(out, fmt.Sprintf("block %s: %s", a.VLAN, a.Why))
			continue
		}
		out = append(out, a.verb())
	}
	return out
}

func TestHostPlan(t *testing.T) {
	scratch := kernel.Observed{Links: []kernel.Link{
		{Index: 1, Name: "lo", Kind: "device", Up: true, MTU: 65536},
		{Index: hostTestTrunk, Name: "eth0", Kind: "veth", MTU: 1500},
		{Index: hostTestTrunk2, Name: "eth1", Kind: "veth", Up: true, MTU: 1500},
		{Index: hostTestForeign, Name: "fm0", Kind: "macvlan", MacvlanMode: "bridge", ParentIndex: hostTestTrunk, Up: true, MTU: 1500},
	}}
	tests := []struct {
		name  string
		want  func() []VLAN
		have  func() kernel.Observed
		steps []string
	}{
		{
			name: "from scratch",
			want: hostTestWant,
			have: func() kernel.Observed { return scratch },
			steps: []string{
				"set eth0 up",
				"set promiscuous mode on eth0",
				"create 802.1Q link eth0.40 id 40 on eth0",
				"set promiscuous mode on eth0.40",
				"create shim sv-vlan40 on eth0.40",
				"add address 10.40.1.255/32 to sv-vlan40",
				"add route 10.40.1.0/24 dev sv-vlan40",
				"set promiscuous mode on eth1",
				"create shim sv-vlan50 on eth1",
				"add address 10.50.2.255/32 to sv-vlan50",
				"add route 10.50.2.0/24 dev sv-vlan50",
			},
		},
		{
			name:  "converged",
			want:  hostTestWant,
			have:  hostConverged,
			steps: []string{},
		},
		{
			name: "converged, caller order and duplicates do not matter",
			want: func() []VLAN {
				w := hostTestWant()
				return []VLAN{w[1], w[0], w[1]}
			},
			have:  hostConverged,
			steps: []string{},
		},
		{
			name: "shim deleted",
			want: hostTestWant,
			have: func() kernel.Observed { o := hostConverged(); obsWithout(&o, "sv-vlan50"); return o },
			steps: []string{
				"create shim sv-vlan50 on eth1",
				"add address 10.50.2.255/32 to sv-vlan50",
				"add route 10.50.2.0/24 dev sv-vlan50",
			},
		},
		{
			name: "shim address removed",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "sv-vlan40").Addrs = obsLink(&o, "sv-vlan40").Addrs[1:]
				return o
			},
			steps: []string{"add address 10.40.1.255/32 to sv-vlan40"},
		},
		{
			name: "route removed",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				o.Routes = slices.DeleteFunc(o.Routes, func(r kernel.Route) bool { return r.LinkIndex == hostTestShim50 })
				return o
			},
			steps: []string{"add route 10.50.2.0/24 dev sv-vlan50"},
		},
		{
			name: "route with the wrong scope",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				o.Routes[3].Scope = 0
				return o
			},
			steps: []string{"delete route 10.50.2.0/24 dev sv-vlan50", "add route 10.50.2.0/24 dev sv-vlan50"},
		},
		{
			name: "promiscuous off on trunk and sub-interface",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "eth0").Promisc = false
				obsLink(&o, "eth0.40").Promisc = false
				obsLink(&o, "eth1").Promisc = false
				return o
			},
			steps: []string{
				"set promiscuous mode on eth0",
				"set promiscuous mode on eth0.40",
				"set promiscuous mode on eth1",
			},
		},
		{
			name: "links down",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				for _, n := range []string{"eth0", "eth0.40", "sv-vlan40", "sv-vlan50"} {
					obsLink(&o, n).Up = false
				}
				return o
			},
			steps: []string{"set eth0 up", "set eth0.40 up", "set sv-vlan40 up", "set sv-vlan50 up"},
		},
		{
			name: "mtu changed",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "eth0.40").MTU = 1500
				obsLink(&o, "sv-vlan40").MTU = 1300
				return o
			},
			steps: []string{"set mtu 1400 on eth0.40", "set mtu 1400 on sv-vlan40"},
		},
		{
			name: "alias changed on an owned link",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "eth0.40").Alias = "swarmvlan:old"
				return o
			},
			steps: []string{`set alias "swarmvlan:vlan40" on eth0.40`},
		},
		{
			name: "stray address and route from an old chunk",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				s := obsLink(&o, "sv-vlan50")
				s.Addrs = []netip.Prefix{netip.MustParsePrefix("10.50.9.255/32")}
				o.Routes[3].Dst = netip.MustParsePrefix("10.50.9.0/24")
				return o
			},
			steps: []string{
				"delete address 10.50.9.255/32 from sv-vlan50",
				"delete route 10.50.9.0/24 dev sv-vlan50",
				"add address 10.50.2.255/32 to sv-vlan50",
				"add route 10.50.2.0/24 dev sv-vlan50",
			},
		},
		{
			name: "vlan removed: owned links go, shim first; trunk promiscuous stays (not set by us)",
			want: func() []VLAN { return hostTestWant()[1:] },
			have: hostConverged,
			steps: []string{
				"delete sv-vlan40",
				"delete eth0.40",
			},
		},
		{
			name:  "every vlan removed; promiscuous off only where this reconciler set it",
			want:  func() []VLAN { return nil },
			have:  func() kernel.Observed { o := hostConverged(); o.PromiscSet["eth1"] = true; return o },
			steps: []string{"delete sv-vlan40", "delete sv-vlan50", "delete eth0.40", "set promiscuous mode off eth1"},
		},
		{
			name: "host access off removes an owned shim",
			want: func() []VLAN { w := hostTestWant(); w[1].HostAccess = false; return w },
			have: hostConverged,
			steps: []string{
				"delete sv-vlan50",
			},
		},
		{
			name: "no chunk yet: shim without address or route",
			want: func() []VLAN {
				w := hostTestWant()
				w[1].Chunk, w[1].ShimAddr = netip.Prefix{}, netip.Addr{}
				return w
			},
			have: func() kernel.Observed { o := hostConverged(); obsWithout(&o, "sv-vlan50"); return o },
			steps: []string{
				"create shim sv-vlan50 on eth1",
				"block vlan50: " + reasonNoChunk,
				"block vlan50: " + reasonNoChunk,
			},
		},
		{
			name: "name collision with a foreign shim is reported, not deleted",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "sv-vlan50").Alias = ""
				return o
			},
			steps: []string{
				`block vlan50: ` + collision("sv-vlan50", "vlan50"),
				"block vlan50: waiting for shim sv-vlan50",
			},
		},
		{
			// As Docker's macvlan driver leaves it when it made the parent.
			name: "a foreign sub-interface that is the wanted 802.1Q link is used as it is",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "eth0.40").Alias = ""
				obsLink(&o, "eth0.40").MTU = 1500
				obsLink(&o, "eth0.40").Up = false
				obsLink(&o, "eth0.40").Promisc = false
				return o
			},
			steps: []string{
				"set eth0.40 up",
				"set promiscuous mode on eth0.40",
			},
		},
		{
			name: "a foreign sub-interface with too small an mtu is reported, not changed",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "eth0.40").Alias = ""
				obsLink(&o, "eth0.40").MTU = 1300
				return o
			},
			steps: []string{
				"block vlan40: mtu 1400 exceeds eth0.40 mtu 1300 (eth0.40 is not managed by swarmvlan)",
				"block vlan40: waiting for parent eth0.40",
				"block vlan40: waiting for parent eth0.40",
			},
		},
		{
			name: "name collision with a foreign sub-interface is reported, not deleted",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "eth0.40").Alias = "made by hand"
				obsLink(&o, "eth0.40").VlanID = 41
				return o
			},
			steps: []string{
				"block vlan40: " + collision("eth0.40", "vlan40"),
				"block vlan40: waiting for parent eth0.40",
				"block vlan40: waiting for parent eth0.40",
			},
		},
		{
			name: "an ipvlan VLAN's shim is an ipvlan in the VLAN's mode",
			want: func() []VLAN { w := hostTestWant(); w[1].Driver, w[1].Mode = "ipvlan", "l3"; return w },
			have: hostConverged,
			steps: []string{
				"delete sv-vlan50",
				"create ipvlan l3 shim sv-vlan50 on eth1",
				"add address 10.50.2.255/32 to sv-vlan50",
				"add route 10.50.2.0/24 dev sv-vlan50",
			},
		},
		{
			name: "an ipvlan shim in the other mode is replaced",
			want: func() []VLAN { w := hostTestWant(); w[1].Driver, w[1].Mode = "ipvlan", ""; return w },
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "sv-vlan50").Kind, obsLink(&o, "sv-vlan50").MacvlanMode = "ipvlan", ""
				obsLink(&o, "sv-vlan50").IpvlanMode = "l3"
				return o
			},
			steps: []string{
				"delete sv-vlan50",
				"create ipvlan l2 shim sv-vlan50 on eth1",
				"add address 10.50.2.255/32 to sv-vlan50",
				"add route 10.50.2.0/24 dev sv-vlan50",
			},
		},
		{
			name: "a passthru macvlan VLAN takes no shim",
			want: func() []VLAN { w := hostTestWant(); w[1].Mode = "passthru"; return w },
			have: hostConverged,
			steps: []string{
				"delete sv-vlan50",
				"block vlan50: " + reasonPassthruShim,
				"block vlan50: " + reasonPassthruShim,
			},
		},
		{
			name: "owned shim of the wrong kind is replaced",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "sv-vlan50").MacvlanMode = "private"
				return o
			},
			steps: []string{
				"delete sv-vlan50",
				"create shim sv-vlan50 on eth1",
				"add address 10.50.2.255/32 to sv-vlan50",
				"add route 10.50.2.0/24 dev sv-vlan50",
			},
		},
		{
			name: "sub-interface with the wrong tag is replaced, and its shim with it",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "eth0.40").VlanID = 41
				return o
			},
			steps: []string{
				"delete eth0.40",
				"create 802.1Q link eth0.40 id 40 on eth0",
				"set promiscuous mode on eth0.40",
				"create shim sv-vlan40 on eth0.40",
				"add address 10.40.1.255/32 to sv-vlan40",
				"add route 10.40.1.0/24 dev sv-vlan40",
			},
		},
		{
			name: "trunk missing",
			want: hostTestWant,
			have: func() kernel.Observed { o := hostConverged(); obsWithout(&o, "eth1", "sv-vlan50"); return o },
			steps: []string{
				"block vlan50: trunk eth1 not found",
				"block vlan50: waiting for parent eth1",
				"block vlan50: waiting for parent eth1",
			},
		},
		{
			name: "mtu above the trunk's",
			want: func() []VLAN { w := hostTestWant(); w[0].MTU = 9000; return w },
			have: hostConverged,
			steps: []string{
				"block vlan40: mtu 9000 exceeds trunk eth0 mtu 1500",
				"block vlan40: waiting for parent eth0.40",
				"block vlan40: waiting for parent eth0.40",
			},
		},
		{
			name: "foreign route to the chunk",
			want: hostTestWant,
			have: func() kernel.Observed {
				o := hostConverged()
				o.Routes[3].LinkIndex = hostTestForeign
				return o
			},
			steps: []string{"block vlan50: route to 10.50.2.0/24 already exists via fm0"},
		},
		{
			name: "shim address outside the chunk",
			want: func() []VLAN {
				w := hostTestWant()
				w[1].ShimAddr = netip.MustParseAddr("10.50.3.255")
				return w
			},
			have: hostConverged,
			steps: []string{
				"block vlan50: shim address 10.50.3.255 is not in chunk 10.50.2.0/24",
				"block vlan50: shim address 10.50.3.255 is not in chunk 10.50.2.0/24",
			},
		},
		{
			name: "two vlans with one tag on one trunk",
			want: func() []VLAN {
				w := hostTestWant()
				dup := w[0]
				dup.Name, dup.HostAccess = "vlan40b", false
				return append(w, dup)
			},
			have: hostConverged,
			steps: []string{
				`block vlan40b: eth0.40 is already used by vlan "vlan40"`,
			},
		},
		{
			name: "owned sub-interface with a foreign child is kept",
			want: func() []VLAN { return hostTestWant()[1:] },
			have: func() kernel.Observed {
				o := hostConverged()
				obsLink(&o, "fm0").ParentIndex = hostTestSub
				return o
			},
			steps: []string{
				"delete sv-vlan40",
				"block vlan40: keep eth0.40: fm0, which swarmvlan does not manage, rides on it",
			},
		},
		{
			name: "vlan id out of range",
			want: func() []VLAN { w := hostTestWant(); w[0].ID = 5000; return w[:1] },
			have: func() kernel.Observed { o := hostConverged(); obsWithout(&o, "sv-vlan50"); return o },
			steps: []string{
				"delete eth0.40",
				"block vlan40: 802.1Q id 5000 is outside 0-4094",
				"block vlan40: waiting for parent eth0.5000",
				"block vlan40: waiting for parent eth0.5000",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have := tt.have()
			plan := planLinks(tt.want(), have)
			if got := hostSteps(plan); !reflect.DeepEqual(got, tt.steps) {
				t.Errorf("plan:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.steps, "\n  "))
			}
			hostCheckOwnership(t, have, plan)
			// Executing the plan must converge: planning again on the result
			// leaves only the problems no write can fix.
			after := hostSimulate(t, have, plan)
			for _, a := range planLinks(tt.want(), after) {
				if a.writes() {
					t.Errorf("not converged after one pass: %s", a.verb())
				}
			}
		})
	}
}

// hostCheckOwnership fails on any step that writes to a link without our
// alias, other than bringing a trunk up or switching its promiscuous mode.
func hostCheckOwnership(t *testing.T, have kernel.Observed, plan []linkAction) {
	t.Helper()
	for _, a := range plan {
		if !a.writes() || a.Op == linkCreateVLAN || a.Op == linkCreateShim {
			continue
		}
		l := obsLink(&have, a.Link)
		if l == nil || linkOwned(l) {
			continue
		}
		if a.Op == linkSetUp || a.Op == linkSetPromisc {
			if !a.Foreign {
				t.Errorf("%s: foreign link not marked Foreign", a.verb())
			}
			continue
		}
		t.Errorf("plan writes to foreign link: %s", a.verb())
	}
}

// hostSimulate applies plan to a copy of have the way the kernel would,
// including deleting a link's macvlan and 802.1Q children with it.
func hostSimulate(t *testing.T, have kernel.Observed, plan []linkAction) kernel.Observed {
	t.Helper()
	o := kernel.Observed{Links: slices.Clone(have.Links), Routes: slices.Clone(have.Routes), PromiscSet: map[string]bool{}}
	for i := range o.Links {
		o.Links[i].Addrs = slices.Clone(o.Links[i].Addrs)
	}
	for n := range have.PromiscSet {
		o.PromiscSet[n] = true
	}
	next := 100
	var del func(index int)
	del = func(index int) {
		var children []int
		for _, l := range o.Links {
			if l.ParentIndex == index && l.Index != index {
				children = append(children, l.Index)
			}
		}
		for _, c := range children {
			del(c)
		}
		o.Links = slices.DeleteFunc(o.Links, func(l kernel.Link) bool { return l.Index == index })
		o.Routes = slices.DeleteFunc(o.Routes, func(r kernel.Route) bool { return r.LinkIndex == index })
	}
	for _, a := range plan {
		if a.Op == linkBlock {
			continue
		}
		if a.Op == linkCreateVLAN || a.Op == linkCreateShim {
			p := obsLink(&o, a.Parent)
			if p == nil {
				t.Fatalf("%s: no parent", a.verb())
			}
			if obsLink(&o, a.Link) != nil {
				t.Fatalf("%s: name taken", a.verb())
			}
			next++
			l := kernel.Link{Index: next, Name: a.Link, ParentIndex: p.Index, Alias: a.Alias, Up: true, MTU: p.MTU}
			if a.MTU > 0 {
				l.MTU = a.MTU
			}
			if a.Op == linkCreateVLAN {
				l.Kind, l.VlanID = "vlan", a.VlanID
			} else if a.Kind == "ipvlan" {
				l.Kind, l.IpvlanMode = "ipvlan", a.Mode
			} else {
				l.Kind, l.MacvlanMode = "macvlan", "bridge"
			}
			o.Links = append(o.Links, l)
			continue
		}
		l := obsLink(&o, a.Link)
		if l == nil {
			if a.Op == linkDelete {
				continue
			}
			t.Fatalf("%s: no such link", a.verb())
		}
		if a.Index != 0 && a.Index != l.Index {
			t.Fatalf("%s: index %d, link has %d", a.verb(), a.Index, l.Index)
		}
		switch a.Op {
		case linkDelete:
			del(l.Index)
		case linkSetAlias:
			l.Alias = a.Alias
		case linkSetUp:
			l.Up = true
		case linkSetMTU:
			l.MTU = a.MTU
		case linkSetPromisc:
			l.Promisc = a.On
			if a.Foreign && a.On {
				o.PromiscSet[a.Link] = true
			} else if a.Foreign {
				delete(o.PromiscSet, a.Link)
			}
		case linkAddAddr:
			l.Addrs = append(l.Addrs, a.Addr)
		case linkDelAddr:
			l.Addrs = slices.DeleteFunc(l.Addrs, func(p netip.Prefix) bool { return p == a.Addr })
		case linkAddRoute:
			o.Routes = append(o.Routes, kernel.Route{LinkIndex: l.Index, Dst: a.Addr, Scope: kernel.ScopeLink, Protocol: 3})
		case linkDelRoute:
			o.Routes = slices.DeleteFunc(o.Routes, func(r kernel.Route) bool {
				return r.LinkIndex == l.Index && r.Dst == a.Addr && r.Scope == a.Scope
			})
		}
	}
	return o
}

// hostTestHash is the rule's hash, spelled out apart from ShimName.
func hostTestHash(s string) string {
	return fmt.Sprintf("%x", sha256.Sum256([]byte(s)))
}

func TestHostStatuses(t *testing.T) {
	want := hostTestWant()
	noAccess := want[1]
	noAccess.HostAccess = false
	tests := []struct {
		name     string
		want     []VLAN
		residual []linkAction
		failed   map[string]linkFailure
		status   map[string]NetStatus
	}{
		{
			name: "ready",
			want: want,
			status: map[string]NetStatus{
				"vlan40": {Parent: "eth0.40", Link: "ok", Shim: "ok", Route: "ok", Ready: true},
				"vlan50": {Parent: "eth1", Link: "ok", Shim: "ok", Route: "ok", Ready: true},
			},
		},
		{
			name: "no 802.1Q support leaves the other vlan ready",
			want: want,
			residual: []linkAction{
				{Op: linkCreateVLAN, VLAN: "vlan40", Part: linkPartLink, Link: "eth0.40", Why: "eth0.40 missing"},
				{Op: linkCreateShim, VLAN: "vlan40", Part: linkPartShim, Link: "sv-vlan40", Why: "shim sv-vlan40 missing"},
			},
			failed: map[string]linkFailure{"vlan40": {Part: linkPartLink, Reason: reasonNo8021Q}},
			status: map[string]NetStatus{
				"vlan40": {Parent: "eth0.40", Link: reasonNo8021Q, Shim: "waiting for parent eth0.40",
					Route: "waiting for parent eth0.40", Reason: reasonNo8021Q},
				"vlan50": {Parent: "eth1", Link: "ok", Shim: "ok", Route: "ok", Ready: true},
			},
		},
		{
			name: "no chunk yet",
			want: want[1:],
			residual: []linkAction{
				{Op: linkBlock, VLAN: "vlan50", Part: linkPartShim, Why: reasonNoChunk},
				{Op: linkBlock, VLAN: "vlan50", Part: linkPartRoute, Why: reasonNoChunk},
			},
			status: map[string]NetStatus{
				"vlan50": {Parent: "eth1", Link: "ok", Shim: reasonNoChunk, Route: reasonNoChunk, Reason: reasonNoChunk},
			},
		},
		{
			name: "without host access there is no shim or route to report",
			want: []VLAN{noAccess},
			status: map[string]NetStatus{
				"vlan50": {Parent: "eth1", Link: "ok", Ready: true},
			},
		},
		{
			name: "route problem",
			want: want[1:],
			residual: []linkAction{
				{Op: linkBlock, VLAN: "vlan50", Part: linkPartRoute, Why: "route to 10.50.2.0/24 already exists via fm0"},
			},
			status: map[string]NetStatus{
				"vlan50": {Parent: "eth1", Link: "ok", Shim: "ok", Route: "route to 10.50.2.0/24 already exists via fm0",
					Reason: "route to 10.50.2.0/24 already exists via fm0"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := linkStatuses(tt.want, tt.residual, tt.failed)
			if !reflect.DeepEqual(got, tt.status) {
				t.Errorf("status:\n got %+v\nwant %+v", got, tt.status)
			}
		})
	}
}

func TestHostInterestConcerns(t *testing.T) {
	in := interestOf(hostTestWant(), hostConverged())
	tests := []struct {
		name string
		e    kernel.Event
		want bool
	}{
		{"trunk by name", kernel.Event{Kind: kernel.EventLink, LinkName: "eth0", LinkIndex: hostTestTrunk}, true},
		{"trunk recreated with a new index", kernel.Event{Kind: kernel.EventLink, LinkName: "eth1", LinkIndex: 99}, true},
		{"shim deleted", kernel.Event{Kind: kernel.EventLink, LinkName: "sv-vlan40", LinkIndex: hostTestShim40}, true},
		{"owned link under another name", kernel.Event{Kind: kernel.EventLink, LinkName: "x", LinkIndex: 77, Alias: "swarmvlan:old"}, true},
		{"foreign macvlan", kernel.Event{Kind: kernel.EventLink, LinkName: "fm0", LinkIndex: hostTestForeign}, false},
		{"unrelated veth", kernel.Event{Kind: kernel.EventLink, LinkName: "veth1234", LinkIndex: 300}, false},
		{"shim address", kernel.Event{Kind: kernel.EventAddr, LinkIndex: hostTestShim50}, true},
		{"foreign address", kernel.Event{Kind: kernel.EventAddr, LinkIndex: hostTestForeign}, false},
		{"shim route", kernel.Event{Kind: kernel.EventRoute, LinkIndex: hostTestShim40, Table: kernel.TableMain,
			Dst: netip.MustParsePrefix("10.40.1.0/24")}, true},
		{"foreign route to a chunk", kernel.Event{Kind: kernel.EventRoute, LinkIndex: hostTestForeign, Table: kernel.TableMain,
			Dst: netip.MustParsePrefix("10.50.2.0/24")}, true},
		{"local table", kernel.Event{Kind: kernel.EventRoute, LinkIndex: hostTestShim40, Table: 255,
			Dst: netip.MustParsePrefix("10.40.1.255/32")}, false},
		{"foreign route", kernel.Event{Kind: kernel.EventRoute, LinkIndex: hostTestForeign, Table: kernel.TableMain,
			Dst: netip.MustParsePrefix("10.40.0.0/16")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := in.concerns(tt.e); got != tt.want {
				t.Errorf("concerns(%+v) = %v, want %v", tt.e, got, tt.want)
			}
		})
	}
	var none *linkInterest
	if !none.concerns(kernel.Event{Kind: kernel.EventAddr, LinkIndex: 300}) {
		t.Error("before the first Ensure every event must concern it")
	}
}
