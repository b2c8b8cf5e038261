package host

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"swarmvlan/reconcile/ipam"
	"swarmvlan/reconcile/kernel"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// TestClusterShimRoutes: in mode cluster the shim holds its leased
// address and routes each of this host's tasks, not a chunk; routes of
// tasks gone are removed.
func TestClusterShimRoutes(t *testing.T) {
	want := hostTestWant()[:1]
	want[0].Chunk = netip.Prefix{}
	want[0].Cluster = true
	want[0].ShimAddr = netip.MustParseAddr("10.40.1.255")
	want[0].TaskRoutes = []netip.Prefix{netip.MustParsePrefix("10.40.7.3/32"), netip.MustParsePrefix("10.40.9.9/32")}
	have := hostConverged()
	// The shim routes 10.40.1.0/24 (a chunk of old) and one task still
	// there, 10.40.9.9.
	have.Routes = append(have.Routes, kernel.Route{LinkIndex: hostTestShim40, Dst: netip.MustParsePrefix("10.40.9.9/32"), Scope: kernel.ScopeLink, Protocol: 3})
	var adds, dels []netip.Prefix
	for _, a := range planLinks(want, have) {
		if a.VLAN != "vlan40" {
			continue
		}
		switch a.Op {
		case linkAddRoute:
			adds = append(adds, a.Addr)
		case linkDelRoute:
			dels = append(dels, a.Addr)
		case linkAddAddr, linkDelAddr:
			t.Errorf("shim address touched: %+v", a)
		}
	}
	if !reflect.DeepEqual(adds, []netip.Prefix{netip.MustParsePrefix("10.40.7.3/32")}) {
		t.Errorf("routes added %v, want the missing task's /32", adds)
	}
	if !slices.Contains(dels, netip.MustParsePrefix("10.40.1.0/24")) || slices.Contains(dels, netip.MustParsePrefix("10.40.9.9/32")) {
		t.Errorf("routes deleted %v, want the chunk's only", dels)
	}

	// No leased shim address yet: the shim waits, as for a chunk.
	want[0].ShimAddr = netip.Addr{}
	st := linkStatuses(want, planLinks(want, have), nil)
	if st["vlan40"].Ready {
		t.Errorf("ready without a shim address: %+v", st["vlan40"])
	}
}

func TestTaskRoutesOf(t *testing.T) {
	ep := func(ip string) *network.EndpointSettings { return &network.EndpointSettings{IPAddress: ip} }
	ctrs := []container.Summary{
		{NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"v40": ep("10.40.0.9")}}},
		{NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"v40": ep("10.40.0.3"), "other": ep("10.1.0.1")}}},
		{NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"v40": ep("192.168.0.1")}}},
		{NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"v40": ep("")}}},
		{},
	}
	got := taskRoutesOf(ctrs, "v40", netip.MustParsePrefix("10.40.0.0/16"))
	want := []netip.Prefix{netip.MustParsePrefix("10.40.0.3/32"), netip.MustParsePrefix("10.40.0.9/32")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("taskRoutesOf = %v, want %v", got, want)
	}
}

// TestClusterConfigNetwork: a cluster-mode VLAN's config network names
// the plugin as IPAM driver with the VLAN as IPAM option, holds no
// ip-range nor shim aux address, and one made by Docker's default IPAM
// differs from it (and the reverse).
func TestClusterConfigNetwork(t *testing.T) {
	w := vlanWant{Net: VLAN{Name: "v40", Trunk: "eth0", ID: 40, Mode: "bridge", HostAccess: true,
		Cluster: true, ShimAddr: netip.MustParseAddr("10.40.0.62")},
		Driver: "macvlan", Subnet: netip.MustParsePrefix("10.40.0.0/26"), Cluster: true}
	cn := w.configNetwork()
	opts := networkConfigWant(cn)
	if opts.IPAM.Driver != spec.IPAMDriver || opts.IPAM.Options[spec.IPAMOptVLAN] != "v40" {
		t.Errorf("ipam = %+v", opts.IPAM)
	}
	c := opts.IPAM.Config[0]
	if c.IPRange != "" || len(c.AuxAddress) != 0 || c.Subnet != "10.40.0.0/26" || c.Gateway != "10.40.0.1" {
		t.Errorf("ipam config = %+v", c)
	}
	made := network.Inspect{ConfigOnly: true, Options: opts.Options, Labels: opts.Labels, IPAM: *opts.IPAM}
	if d := networkConfigDiff(cn, &made); len(d) != 0 {
		t.Errorf("diff with itself: %v", d)
	}
	// Engine 29 reports no IPAM for a config-only network: the label says.
	made.IPAM = network.IPAM{}
	if d := networkConfigDiff(cn, &made); len(d) != 0 {
		t.Errorf("diff without reported IPAM: %v", d)
	}
	chunks := w
	chunks.Cluster, chunks.Net.Cluster = false, false
	chunks.Net.Chunk = netip.MustParsePrefix("10.40.0.16/28")
	old := networkConfigWant(chunks.configNetwork())
	had := network.Inspect{ConfigOnly: true, Options: old.Options, Labels: old.Labels, IPAM: *old.IPAM}
	if d := networkConfigDiff(cn, &had); !slices.Contains(d, "ipam driver default -> swarmvlan") {
		t.Errorf("chunks network against cluster want: %v", d)
	}
}

func TestStickySlots(t *testing.T) {
	ctr := func(svc, task, ip string) container.Summary {
		return container.Summary{
			Labels:          map[string]string{"com.docker.swarm.service.name": svc, "com.docker.swarm.task.name": task},
			NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"v40": {IPAddress: ip}}},
		}
	}
	ctrs := []container.Summary{
		ctr("web", "web.3.abc", "10.40.0.9"),
		ctr("web", "web.x.abc", "10.40.0.10"),
		ctr("db", "db.1.abc", "10.40.0.11"),
		ctr("web", "web.4.def", "10.41.0.1"),
	}
	got := stickySlots(ctrs, "v40", netip.MustParsePrefix("10.40.0.0/16"), map[string]bool{"web": true})
	want := map[netip.Addr]ipam.SlotRef{netip.MustParseAddr("10.40.0.9"): {Service: "web", Slot: 3}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stickySlots = %v, want %v", got, want)
	}
}

// gcIPAM records the addresses the host role tells GC are held.
type gcIPAM struct {
	IPAMServer
	have    map[string][]netip.Addr
	repairs []map[netip.Addr]ipam.Held
}

func (g *gcIPAM) GC(ctx context.Context, vlan string, have []netip.Addr) (int, error) {
	g.have[vlan] = have
	return 0, nil
}

func (g *gcIPAM) Annotate(ctx context.Context, vlan string, slots map[netip.Addr]ipam.SlotRef) error {
	return nil
}

func (g *gcIPAM) Repair(ctx context.Context, vlan string, held map[netip.Addr]ipam.Held) (int, error) {
	g.repairs = append(g.repairs, held)
	return 0, nil
}

// TestLeaseGCCountsPausedTasks: a paused or restarting task keeps its
// endpoint and its address, so orphan collection counts it as holding its
// lease; only the addresses of containers that left are orphans.
func TestLeaseGCCountsPausedTasks(t *testing.T) {
	a, fake := hostTestAgent(t, newHostTestView(t).View)
	g := &gcIPAM{have: map[string][]netip.Addr{}}
	a.cfg.IPAM = g
	on := func(id, state, ip string) container.Summary {
		return container.Summary{ID: id, State: state, NetworkSettings: &container.NetworkSettingsSummary{
			Networks: map[string]*network.EndpointSettings{"v40": {IPAddress: ip}}}}
	}
	fake.Containers = []container.Summary{
		on("run", "running", "10.40.0.3"),
		on("paused", "paused", "10.40.0.4"),
		on("restarting", "restarting", "10.40.0.5"),
		on("exited", "exited", "10.40.0.6"),
	}
	want := []vlanWant{{Net: VLAN{Name: "v40"}, Subnet: netip.MustParsePrefix("10.40.0.0/16"), Cluster: true}}
	if err := a.listTaskRoutes(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	held := []netip.Addr{netip.MustParseAddr("10.40.0.3"), netip.MustParseAddr("10.40.0.4"), netip.MustParseAddr("10.40.0.5")}
	if got, ok := g.have["v40"]; !ok || !slices.Equal(got, held) {
		t.Errorf("GC told %v held (called: %v), want %v", got, ok, held)
	}
}

// TestLeaseRepairOnLoss: the pass hands what this node's endpoints hold
// (tasks since their containers were made, and the shim) to the repair
// while the lease watch has not answered, and again only when its answer
// shows one of them lost.
func TestLeaseRepairOnLoss(t *testing.T) {
	a, fake := hostTestAgent(t, newHostTestView(t).View)
	g := &gcIPAM{have: map[string][]netip.Addr{}}
	a.cfg.IPAM = g
	a.shims["v40"] = netip.MustParseAddr("10.40.0.62")
	made := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	fake.Containers = []container.Summary{{ID: "run", State: "running", Created: made.Unix(), NetworkSettings: &container.NetworkSettingsSummary{
		Networks: map[string]*network.EndpointSettings{"v40": {IPAddress: "10.40.0.3"}}}}}
	want := []vlanWant{{Net: VLAN{Name: "v40"}, Subnet: netip.MustParsePrefix("10.40.0.0/16"), Cluster: true}}
	pass := func() {
		t.Helper()
		if err := a.listTaskRoutes(context.Background(), want); err != nil {
			t.Fatal(err)
		}
	}
	task, shim := netip.MustParseAddr("10.40.0.3"), netip.MustParseAddr("10.40.0.62")
	pass()
	wantHeld := map[netip.Addr]ipam.Held{task: {Kind: state.LeaseTask, Since: made}, shim: {Kind: state.LeaseShim}}
	if len(g.repairs) != 1 || !reflect.DeepEqual(g.repairs[0], wantHeld) {
		t.Fatalf("repairs before the watch answered: %v, want one of %v", g.repairs, wantHeld)
	}
	node, _ := a.Identity()
	a.mu.Lock()
	a.leases = map[string]map[netip.Addr]state.LeaseEntry{"v40": {
		task: {Lease: state.Lease{Node: node, Kind: state.LeaseTask}},
		shim: {Lease: state.Lease{Node: node, Kind: state.LeaseShim}},
	}}
	a.mu.Unlock()
	pass()
	if len(g.repairs) != 1 {
		t.Fatalf("repair with every lease in force: %v", g.repairs[1:])
	}
	// Rolled back: the task's lease gone.
	a.mu.Lock()
	delete(a.leases["v40"], task)
	a.mu.Unlock()
	pass()
	if len(g.repairs) != 2 {
		t.Fatalf("no repair after the task's lease was lost")
	}
}
