package host

import (
	"net/netip"
	"swarmvlan/lab/vmtest"
	"testing"
)

// hostVM runs this package's TestVM tests on a kernel with 802.1Q,
// bonding and ipvlan: this machine's, in a fresh network namespace, when it
// has them, Debian's cloud kernel under qemu otherwise.
var hostVM = vmtest.New(vmtest.Config{Kinds: []string{"veth", "vlan", "bond", "macvlan", "ipvlan"}})

// TestVMHostNetVLANSubInterface converges a tagged VLAN on a veth trunk.
func TestVMHostNetVLANSubInterface(t *testing.T) {
	hostVM.Run(t, func(t *testing.T) {
		ns, h := hostTestNS(t)
		if !hostTestHas8021Q(t, h) {
			t.Fatal("no 802.1Q on the VM kernel")
		}
		hostTestVeth(t, h, "trk0", "trk0p", true)
		v := VLAN{Name: "vlan40", Trunk: "trk0", ID: 40, MTU: 1400, Promiscuous: true, HostAccess: true,
			Chunk: netip.MustParsePrefix("10.40.1.0/24"), ShimAddr: netip.MustParseAddr("10.40.1.255")}
		hn := hostTestNew(t, ns)
		st := hostTestEnsure(t, hn, []VLAN{v})
		if !st["vlan40"].Ready || st["vlan40"].Parent != "trk0.40" {
			t.Errorf("status %+v", st["vlan40"])
		}
		if err := hostTestCheck(h, v); err != nil {
			t.Fatal(err)
		}
		before := hn.writes()
		hostTestEnsure(t, hn, []VLAN{v})
		if n := hn.writes() - before; n != 0 {
			t.Errorf("converged Ensure made %d writes", n)
		}
		hostTestEnsure(t, hn, nil)
		if links, routes := hostTestOwned(t, h, v.Chunk); len(links) != 0 || len(routes) != 0 {
			t.Errorf("left behind: %v %v", links, routes)
		}
	})
}
