package host

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"

	"swarmvlan/spec"
)

// A hand-made config network is reported for adopt, one of swarmvlan's is
// not, and an adopted one is compared on what decides its addresses only.
func TestHandMadeAndAdoptedConfigNetworks(t *testing.T) {
	hand := network.Summary{ID: "n1", Name: "vlan40_net", ConfigOnly: true, Options: map[string]string{"parent": "eth1.40"},
		IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "172.80.0.0/16", IPRange: "172.80.1.0/24", Gateway: "172.80.0.1"}}}}
	own := network.Summary{ID: "n2", Name: "v-config", ConfigOnly: true, Options: map[string]string{"parent": "eth1"},
		Labels: spec.OwnerLabels(spec.KindVLAN, "v")}
	bridge := network.Summary{ID: "n3", Name: "bridge"}
	got := handMadeConfigNetworks([]network.Summary{own, bridge, hand})
	if len(got) != 1 || got[0].ID != "n1" || got[0].Parent != "eth1.40" || got[0].IPRange != "172.80.1.0/24" || got[0].Pools != 1 {
		t.Fatalf("reported %+v", got)
	}

	want := ConfigNetwork{VLAN: "vlan40-net", Name: "vlan40_net", Parent: "eth1.40",
		Subnet: netip.MustParsePrefix("172.80.0.0/16"), IPRange: netip.MustParsePrefix("172.80.1.0/24"),
		// A shim's aux address, labels and name are not compared.
		ShimAddr: netip.MustParseAddr("172.80.1.255")}
	if d := adoptedConfigDiff(want, hand); len(d) != 0 {
		t.Errorf("diff %v, want none", d)
	}
	want.IPRange = netip.MustParsePrefix("172.80.9.0/24")
	if d := adoptedConfigDiff(want, hand); len(d) != 1 || !strings.Contains(d[0], "ip-range 172.80.1.0/24, want 172.80.9.0/24") {
		t.Errorf("diff %v", d)
	}
}
