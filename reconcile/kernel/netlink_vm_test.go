package kernel

import (
	"errors"
	"net/netip"
	"runtime"
	"swarmvlan/lab/vmtest"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// kernelVM runs this package's TestVM tests on a kernel with 802.1Q,
// bonding and ipvlan (see lab/vmtest).
var kernelVM = vmtest.New(vmtest.Config{Kinds: []string{"veth", "vlan", "bond", "macvlan", "ipvlan"}})

// kernelTestNS makes a fresh unnamed network namespace, closed at cleanup
// (the kernel frees it, and every link in it, with its last reference).
func kernelTestNS(t *testing.T) (netns.NsHandle, *netlink.Handle) {
	t.Helper()
	type made struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan made)
	go func() {
		// The thread stays locked in the new namespace, so the runtime
		// discards it with this goroutine.
		runtime.LockOSThread()
		ns, err := netns.New()
		ch <- made{ns, err}
	}()
	m := <-ch
	if m.err != nil {
		t.Fatalf("new namespace: %v", m.err)
	}
	t.Cleanup(func() { m.ns.Close() })
	h, err := netlink.NewHandleAt(m.ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return m.ns, h
}

// TestVMKernelAdapter drives the adapter's writes on a real kernel with
// 802.1Q, bonding and ipvlan, and reads the result back through Observe.
func TestVMKernelAdapter(t *testing.T) {
	kernelVM.Run(t, func(t *testing.T) {
		ns, h := kernelTestNS(t)
		k, err := NewAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		la := netlink.NewLinkAttrs()
		la.Name = "bond0"
		if err := h.LinkAdd(netlink.NewLinkBond(la)); err != nil {
			t.Fatal(err)
		}
		bond, found, err := k.IndexOf("bond0")
		if err != nil || !found {
			t.Fatalf("bond0: %v %v", found, err)
		}

		// The kernel refuses to bring an 802.1Q link up on a lower device
		// that is down, and then makes none: the planner brings trunks up
		// first.
		if err := k.AddVLAN("bond0.40", bond, 40, 1400, "swarmvlan:vlan40"); !errors.Is(err, unix.ENETDOWN) {
			t.Errorf("802.1Q link on a trunk that is down: %v, want ENETDOWN", err)
		}
		if _, found, _ := k.IndexOf("bond0.40"); found {
			t.Error("bond0.40 made although refused")
		}
		if err := k.SetUp(bond); err != nil {
			t.Fatal(err)
		}
		for _, id := range []int{40, 41} {
			name := "bond0." + map[int]string{40: "40", 41: "41"}[id]
			if err := k.AddVLAN(name, bond, id, 1400, "swarmvlan:vlan"+name[6:]); err != nil {
				t.Fatalf("AddVLAN %s: %v", name, err)
			}
		}
		sub40, _, _ := k.IndexOf("bond0.40")
		sub41, _, _ := k.IndexOf("bond0.41")
		if err := k.AddShim("sv-vlan40", sub40, 1400, "swarmvlan:vlan40"); err != nil {
			t.Fatal(err)
		}
		if err := k.AddIPvlanShim("sv-vlan41", sub41, 1300, "l3", "swarmvlan:vlan41"); err != nil {
			t.Fatal(err)
		}
		if err := k.AddIPvlanShim("sv-x", sub41, 0, "l3s", "swarmvlan:x"); err == nil {
			t.Error("ipvlan shim in mode l3s made")
		}
		shim41, _, _ := k.IndexOf("sv-vlan41")
		chunk := netip.MustParsePrefix("172.81.2.0/24")
		if err := k.AddAddr(shim41, netip.MustParsePrefix("172.81.2.255/32")); err != nil {
			t.Fatal(err)
		}
		if err := k.AddRoute(shim41, chunk); err != nil {
			t.Fatal(err)
		}
		// Made twice: EEXIST is a state, not an error.
		if err := k.AddVLAN("bond0.40", bond, 40, 1400, "swarmvlan:vlan40"); err != nil {
			t.Errorf("AddVLAN again: %v", err)
		}

		have, err := k.Observe()
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]Link{}
		for _, l := range have.Links {
			byName[l.Name] = l
		}
		type shape struct {
			Kind, Alias, MacvlanMode, IpvlanMode string
			Parent, VlanID, MTU                  int
			Up                                   bool
		}
		for name, want := range map[string]shape{
			"bond0":     {Kind: "bond", MTU: 1500, Up: true},
			"bond0.40":  {Kind: "vlan", Alias: "swarmvlan:vlan40", Parent: bond, VlanID: 40, MTU: 1400, Up: true},
			"bond0.41":  {Kind: "vlan", Alias: "swarmvlan:vlan41", Parent: bond, VlanID: 41, MTU: 1400, Up: true},
			"sv-vlan40": {Kind: "macvlan", Alias: "swarmvlan:vlan40", MacvlanMode: "bridge", Parent: sub40, MTU: 1400, Up: true},
			"sv-vlan41": {Kind: "ipvlan", Alias: "swarmvlan:vlan41", IpvlanMode: "l3", Parent: sub41, MTU: 1300, Up: true},
		} {
			l, ok := byName[name]
			if !ok {
				t.Errorf("%s not observed", name)
				continue
			}
			if got := (shape{l.Kind, l.Alias, l.MacvlanMode, l.IpvlanMode, l.ParentIndex, l.VlanID, l.MTU, l.Up}); got != want {
				t.Errorf("%s observed as %+v, want %+v", name, got, want)
			}
		}
		if a := byName["sv-vlan41"].Addrs; len(a) == 0 || a[0] != netip.MustParsePrefix("172.81.2.255/32") {
			t.Errorf("sv-vlan41 addresses %v", a)
		}
		routed := false
		for _, r := range have.Routes {
			if r.LinkIndex == shim41 && r.Dst == chunk && r.Scope == ScopeLink {
				routed = true
			}
		}
		if !routed {
			t.Errorf("no route %s dev sv-vlan41 scope link in %+v", chunk, have.Routes)
		}

		// Deleting a sub-interface takes its shim with it.
		if err := k.Del(sub40); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := k.IndexOf("sv-vlan40"); found {
			t.Error("shim outlived its parent")
		}
		if err := k.Del(sub40); err != nil {
			t.Errorf("deleting a link already gone: %v", err)
		}
	})
}
