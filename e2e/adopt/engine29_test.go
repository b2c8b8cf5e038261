package adopt

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/spec"
)

// TestAdoptEngine29 runs adopt's discovery against the real Engine 29,
// which reports no subnet, range or gateway for a config-only network (it
// lists a network's pools only once allocated, and a config-only network
// allocates none): the host role reads them through a network made
// --config-from it, so the dry run pins each host's hand-made range, no
// probe network stays behind, and the adopted networks become ready.
func TestAdoptEngine29(t *testing.T) {
	e, err := lab.EngineByName("29")
	if err != nil {
		t.Fatalf("Engine 29 NOT RUN: %v (make engines prepares it)", err)
	}
	b := bed.NewWith(t, lab.ClusterOptions{Hosts: 2, Managers: 1, ConsulServers: 1, Engine: e})
	hosts := b.Cluster.Hosts()
	want := map[string]string{}
	ids := map[string]string{}
	for i, h := range hosts {
		want[h.Name] = fmt.Sprintf("172.80.%d.0/24", i+1)
		ids[h.Name] = createConfigOnly(t, b, h, configNet, subnet, gateway, want[h.Name])
		n, err := b.Docker(h).NetworkInspect(b.Ctx, configNet, network.InspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: Engine 29 reports %s with IPAM %+v", h.Name, configNet, n.IPAM)
	}
	swID := createSwarmNet(t, b, swarmNet, configNet)
	waitReports(b, hosts, configNet)

	out := b.ReconcilerCmd("adopt", "--dry-run")
	t.Logf("adopt --dry-run on Engine 29:\n%s", out)
	docs, err := spec.DecodeAll([]byte(out))
	if err != nil {
		t.Fatalf("the dry run's documents do not decode: %v", err)
	}
	v := findVLAN(t, docs)
	if !reflect.DeepEqual(v.Spec.RangePlan.Pinned, want) || v.Spec.Subnet != subnet || v.Spec.Gateway != gateway {
		t.Errorf("pinned %v, subnet %s, gateway %s; want %v, %s, %s", v.Spec.RangePlan.Pinned, v.Spec.Subnet, v.Spec.Gateway, want, subnet, gateway)
	}
	for _, h := range hosts {
		nets, err := b.Docker(h).NetworkList(b.Ctx, network.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nets {
			if strings.HasPrefix(n.Name, "swarmvlan-probe-") {
				t.Errorf("%s: probe network %s left behind", h.Name, n.Name)
			}
		}
	}

	t.Logf("adopt:\n%s", b.ReconcilerCmd("adopt"))
	waitReady(b, "vlans", vlanDoc)
	for _, h := range hosts {
		waitReady(b, "nodes", h.ID)
	}
	sameNetworks(t, b, hosts, ids, swID)
}
