package kernel

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestRequests checks the netlink requests for the links and the route the
// host reconciler makes, field by field.
func TestRequests(t *testing.T) {
	v := VLANRequest("eth0.40", 7, 40, 1400, "swarmvlan:vlan40")
	if v.Type() != "vlan" {
		t.Errorf("vlan link type %q", v.Type())
	}
	got := struct {
		Name          string
		Parent, ID    int
		MTU, TxQLen   int
		Alias         string
		Up            bool
		VlanProtocol  netlink.VlanProtocol
		Master, Index int
	}{v.Name, v.ParentIndex, v.VlanId, v.MTU, v.TxQLen, v.Alias, v.Flags&net.FlagUp != 0, v.VlanProtocol, v.MasterIndex, v.Index}
	want := got
	want.Name, want.Parent, want.ID, want.MTU, want.Alias, want.Up = "eth0.40", 7, 40, 1400, "swarmvlan:vlan40", true
	// TxQLen -1 keeps the request free of IFLA_TXQLEN (0 would set a zero
	// queue); an Index would ask the kernel for a fixed ifindex.
	want.TxQLen, want.VlanProtocol, want.Master, want.Index = -1, netlink.VLAN_PROTOCOL_8021Q, 0, 0
	if got != want {
		t.Errorf("vlan request\n got %+v\nwant %+v", got, want)
	}

	s := ShimRequest("sv-vlan40", 9, 0, "swarmvlan:vlan40")
	if s.Type() != "macvlan" || s.Mode != netlink.MACVLAN_MODE_BRIDGE || s.ParentIndex != 9 || s.Name != "sv-vlan40" ||
		s.Alias != "swarmvlan:vlan40" || s.Flags&net.FlagUp == 0 || s.MTU != 0 || s.TxQLen != -1 {
		t.Errorf("shim request %+v", s)
	}

	r := ShimRouteRequest(9, netip.MustParsePrefix("10.40.1.0/24"))
	if r.LinkIndex != 9 || r.Dst.String() != "10.40.1.0/24" || r.Scope != netlink.SCOPE_LINK ||
		r.Table != unix.RT_TABLE_MAIN || r.Gw != nil || r.Src != nil {
		t.Errorf("shim route %+v", r)
	}
}
