package engines

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/host"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// engineMajor is the major version h1's Engine reports.
func engineMajor(t *testing.T, b *bed.Bed) int {
	v, err := b.Mgr.ServerVersion(b.Ctx)
	if err != nil {
		t.Fatalf("engine version: %v", err)
	}
	major, err := strconv.Atoi(strings.SplitN(v.Version, ".", 2)[0])
	if err != nil {
		t.Fatalf("engine version %q: %v", v.Version, err)
	}
	return major
}

// checkHostBits shows the Engines' difference over CIDRs with host bits
// set, and that swarmvlan's requests carry none: Engine 25 and later
// refuse an ip-range with host bits, older ones take it; the host role's
// config network, given such a chunk, is accepted by every Engine because
// every CIDR it sends is masked (and spec refuses unmasked ones in the
// documents, with the field named).
func checkHostBits(t *testing.T, b *bed.Bed) {
	major := engineMajor(t, b)
	ctx, cancel := context.WithTimeout(b.Ctx, time.Minute)
	defer cancel()
	raw := "hostbits-raw-config"
	_, err := b.Mgr.NetworkCreate(ctx, raw, network.CreateOptions{
		ConfigOnly: true,
		Options:    map[string]string{"parent": lab.TrunkInterface},
		IPAM: &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{
			Subnet: "172.81.0.0/16", IPRange: "172.81.1.7/24", Gateway: "172.81.0.1"}}},
	})
	if err == nil {
		defer b.Mgr.NetworkRemove(context.Background(), raw)
	}
	refused := err != nil
	t.Logf("Engine %d, an ip-range with host bits sent as is: refused=%v (%v)", major, refused, err)
	if want := major >= 25; refused != want {
		t.Errorf("Engine %d refused an ip-range with host bits: %v, want %v", major, refused, want)
	}

	d, err := engine.New(b.H1.DockerHost)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := host.ConfigNetwork{VLAN: "hostbits", Parent: lab.TrunkInterface,
		Subnet: netip.MustParsePrefix("172.81.3.4/16"), IPRange: netip.MustParsePrefix("172.81.1.7/24"),
		ShimAddr: netip.MustParseAddr("172.81.1.255")}
	st, err := host.EnsureConfigNetwork(ctx, d, want)
	if err != nil || st.State != state.NetworkReady {
		t.Fatalf("Engine %d: the host role's config network for a chunk with host bits: %+v, %v", major, st, err)
	}
	defer host.RemoveConfigNetwork(context.Background(), d, "hostbits")
	n, err := b.Mgr.NetworkInspect(ctx, spec.ConfigNetworkName("hostbits"), network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Labels[spec.LabelIPAM]; got != "subnet=172.81.0.0/16,ip-range=172.81.1.0/24,gateway=172.81.0.1,aux.shim=172.81.1.255" {
		t.Errorf("Engine %d: config network made with %q", major, got)
	}
	if st, err := host.RemoveConfigNetwork(ctx, d, "hostbits"); err != nil || st.State != state.NetworkAbsent {
		t.Errorf("remove: %+v, %v", st, err)
	}
}

// sharedParentVLAN is a second VLAN on the walkthrough VLAN's parent
// (the trunk, untagged).
const sharedParentVLAN = "vlan81"

// checkSharedParent shows that two VLANs on one parent get the same answer
// on every Engine, although Engines 20.10 to 26 refuse a second network's
// task there and 27 and later accept it: the second VLAN by name is not set
// up on any host, each node reports why, and what runs on the first is
// untouched. Deleting the second VLAN leaves nothing of it.
func checkSharedParent(t *testing.T, b *bed.Bed) {
	was, err := b.World(b.Ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	b.Apply(fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: %s
spec:
  trunk: %s
  subnet: 172.81.0.0/16
  rangePlan:
    chunkPrefix: 24
`, sharedParentVLAN, lab.TrunkInterface))
	why := fmt.Sprintf("parent %s is already vlan %q's", lab.TrunkInterface, bed.VLANName)
	b.WaitFor("every node reports "+sharedParentVLAN+" refused for its shared parent", 2*time.Minute, func(ctx context.Context) error {
		pairs, _, err := b.Consul(b.H1).KV().List(bed.KVPrefix+"state/nodes/", (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		if len(pairs) != len(b.Up()) {
			return fmt.Errorf("%d node reports, want %d", len(pairs), len(b.Up()))
		}
		for _, p := range pairs {
			var r state.NodeReport
			if err := json.Unmarshal(p.Value, &r); err != nil {
				return err
			}
			v, ok := r.VLANs[sharedParentVLAN]
			if !ok || v.Ready || !strings.Contains(v.Reason, why) {
				return fmt.Errorf("%s: %s is %+v", r.Hostname, sharedParentVLAN, v)
			}
			if !r.VLANs[bed.VLANName].Ready {
				return fmt.Errorf("%s: %s not ready: %+v", r.Hostname, bed.VLANName, r.VLANs[bed.VLANName])
			}
		}
		return nil
	})
	for _, h := range b.Up() {
		if _, err := b.Docker(h).NetworkInspect(b.Ctx, spec.ConfigNetworkName(sharedParentVLAN), network.InspectOptions{}); err == nil {
			t.Errorf("%s: %s made although its parent is %s's", h.Name, spec.ConfigNetworkName(sharedParentVLAN), bed.VLANName)
		}
	}
	now, err := b.World(b.Ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if err := was.Same(now); err != nil {
		t.Errorf("what runs on %s changed: %v", bed.VLANName, err)
	}

	b.ReconcilerCmd("delete", "vlan", sharedParentVLAN)
	b.WaitFor(sharedParentVLAN+" gone from every node's report and from Docker", 2*time.Minute, func(ctx context.Context) error {
		pairs, _, err := b.Consul(b.H1).KV().List(bed.KVPrefix+"state/nodes/", (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		for _, p := range pairs {
			var r state.NodeReport
			if err := json.Unmarshal(p.Value, &r); err != nil {
				return err
			}
			if _, ok := r.VLANs[sharedParentVLAN]; ok {
				return fmt.Errorf("%s still reports %s", r.Hostname, sharedParentVLAN)
			}
		}
		if _, err := b.Mgr.NetworkInspect(ctx, sharedParentVLAN, network.InspectOptions{}); err == nil {
			return fmt.Errorf("swarm network %s still there", sharedParentVLAN)
		}
		return nil
	})
}

// checkConfigFrom shows what a swarm network made --config-from may
// carry, and that swarmvlan's request fits every Engine: all four refuse
// such a request with labels, and Engine 28.0.1 and later also refuse IPAM,
// options and IPv4/IPv6 switches beside it, so the leader sends the driver,
// scope, name and config-from only; the walkthrough's swarm network, made
// that way, is the one every task runs on.
func checkConfigFrom(t *testing.T, b *bed.Bed) {
	major := engineMajor(t, b)
	ctx, cancel := context.WithTimeout(b.Ctx, time.Minute)
	defer cancel()
	id, err := b.Mgr.NetworkCreate(ctx, "configfrom-labelled", network.CreateOptions{
		Driver: "macvlan", Scope: "swarm",
		ConfigFrom: &network.ConfigReference{Network: bed.ConfigNetwork},
		Labels:     map[string]string{"probe": "true"},
	})
	if err == nil {
		b.Mgr.NetworkRemove(context.Background(), id.ID)
	}
	t.Logf("Engine %d, a config-from request with labels: refused=%v (%v)", major, err != nil, err)
	if err == nil {
		t.Errorf("Engine %d accepted a config-from request with labels", major)
	}
	n, err := b.Mgr.NetworkInspect(ctx, bed.SwarmNetwork, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.ConfigFrom.Network != bed.ConfigNetwork || n.Scope != "swarm" || len(n.Labels) > 0 && n.Labels["probe"] != "" {
		t.Errorf("Engine %d: swarm network %s is %+v", major, bed.SwarmNetwork, n)
	}
}
