package adopt

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// The hand-made setup, named as the seed's recipe names it.
const (
	configNet  = "vlan40_net"
	swarmNet   = "swarm-vlan40_net"
	service    = "stack_web"
	subnet     = "172.80.0.0/16"
	gateway    = "172.80.0.1"
	vlanDoc    = "vlan40-net" // the VLAN document adopt names after configNet
	serviceDoc = "stack-web"  // the Service document adopt names after service
)

// ranges are the hand-made --ip-range of each host; h3's is of another
// size, recorded as it is.
var ranges = map[string]string{"h1": "172.80.1.0/24", "h2": "172.80.2.0/24", "h3": "172.80.4.0/23"}

// TestAdoptHandMade does the manual recipe by hand with the Docker API
// and ip(8) on three of four lab hosts (the fourth out of the swarm),
// checks that adopt refuses a plan whose ranges overlap, then adopts the
// recipe: the dry run pins each host's own range and turns host access on
// for the hand-made shims, the takeover keeps every network, task and
// shim (exactly one macvlan shim on each parent, through which the host
// still reaches its tasks), every status becomes ready, a scale request
// adds a task with an address from its host's range, the adopted tasks
// register in Consul, the fourth host joining gets a chunk that overlaps
// none of the hand-made ranges, and deleting the documents removes the
// service, the adopted networks and the taken-over shims.
func TestAdoptHandMade(t *testing.T) {
	b := bed.NewCluster(t, lab.ClusterOptions{Hosts: 4, Managers: 3, ConsulServers: 3})
	h4 := b.Cluster.Host(4)
	leaveSwarm(t, b, h4)
	hosts := b.Cluster.Hosts()[:3]
	for _, h := range hosts {
		b.StartReconciler(h)
	}

	t.Run("overlap refused", func(t *testing.T) {
		b := b.For(t)
		ids := map[*lab.Host]string{}
		for h, r := range map[*lab.Host]string{hosts[0]: "172.81.1.0/24", hosts[1]: "172.81.0.0/23"} {
			ids[h] = createConfigOnly(t, b, h, "vlan41_net", "172.81.0.0/16", "172.81.0.1", r)
		}
		swID := createSwarmNet(t, b, "swarm-vlan41_net", "vlan41_net")
		waitReports(b, hosts[:2], "vlan41_net")
		out, errOut, err := b.ReconcilerTry("adopt", "--dry-run")
		if err == nil {
			t.Fatalf("adopt accepted overlapping ranges:\n%s\n%s", out, errOut)
		}
		for _, want := range []string{"refused", "nodes h1 and h2", "172.81.1.0/24 and 172.81.0.0/23", "overlap in 172.81.1.0/24"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("adopt's refusal does not say %q:\n%s", want, errOut)
			}
		}
		t.Logf("adopt refuses:\n%s", errOut)
		if pairs, _, err := b.Consul(b.H1).KV().List(bed.KVPrefix+"spec/", nil); err != nil || len(pairs) > 0 {
			t.Errorf("a refused adopt wrote documents: %d (%v)", len(pairs), err)
		}
		if err := b.Mgr.NetworkRemove(b.Ctx, swID); err != nil {
			t.Fatal(err)
		}
		for h, id := range ids {
			if err := b.Docker(h).NetworkRemove(b.Ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		waitReports(b, hosts[:2])
	})

	// The recipe, by hand: the shim that lets each host reach its own
	// containers (an address of the gateway's /24, outside every range),
	// then the networks and the service.
	cfgIDs := map[string]string{}
	for i, h := range hosts {
		makeShim(t, b, h, fmt.Sprintf("172.80.0.%d", 11+i), ranges[h.Name])
		cfgIDs[h.Name] = createConfigOnly(t, b, h, configNet, subnet, gateway, ranges[h.Name])
	}
	swID := createSwarmNet(t, b, swarmNet, configNet)
	replicas := uint64(3)
	created, err := b.Mgr.ServiceCreate(b.Ctx, swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: service},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: lab.ImageTestApp, Args: []string{"-listen", ":8080"}},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: swID}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}, swarm.ServiceCreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var before map[string]task
	b.WaitFor("3 hand-made tasks running, each in its host's range", 3*time.Minute, func(ctx context.Context) error {
		var err error
		before, err = running(ctx, b, hosts, 3)
		return err
	})
	svcBefore, _, err := b.Mgr.ServiceInspectWithRaw(b.Ctx, created.ID, swarm.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitReports(b, hosts, configNet)

	var docs []spec.Document
	t.Run("dry run", func(t *testing.T) {
		b := b.For(t)
		out := b.ReconcilerCmd("adopt", "--dry-run")
		t.Logf("adopt --dry-run:\n%s", out)
		var err error
		if docs, err = spec.DecodeAll([]byte(out)); err != nil {
			t.Fatalf("the dry run's documents do not decode: %v", err)
		}
		v := findVLAN(t, docs)
		if !reflect.DeepEqual(v.Spec.RangePlan.Pinned, ranges) {
			t.Errorf("pinned chunks %v, want the hand-made ranges %v", v.Spec.RangePlan.Pinned, ranges)
		}
		if d := v.Spec.Docker; d == nil || d.ConfigNetwork != configNet || d.Network != swarmNet {
			t.Errorf("docker names %+v", d)
		}
		if !spec.BoolOr(v.Spec.HostAccess, false) || v.Spec.RangePlan.Mode != spec.RangeModeChunks {
			t.Errorf("hostAccess %v, rangePlan.mode %q: want host access through the hand-made shims, mode chunks", v.Spec.HostAccess, v.Spec.RangePlan.Mode)
		}
		for _, want := range []string{"config network vlan40_net (" + cfgIDs["h1"], "swarm network swarm-vlan40_net (" + swID, "service stack_web (" + created.ID,
			"shim " + handShim + " (172.80.0.11) on node h1", "shim " + handShim + " (172.80.0.13) on node h3", "dry run: nothing was written"} {
			if !strings.Contains(out, want) {
				t.Errorf("the dry run does not say %q", want)
			}
		}
		if pairs, _, err := b.Consul(b.H1).KV().List(bed.KVPrefix+"spec/", nil); err != nil || len(pairs) > 0 {
			t.Errorf("the dry run wrote documents: %d (%v)", len(pairs), err)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("takeover", func(t *testing.T) {
		b := b.For(t)
		t.Logf("adopt:\n%s", b.ReconcilerCmd("adopt"))
		waitReady(b, "vlans", vlanDoc)
		for _, h := range hosts {
			waitReady(b, "nodes", h.ID)
		}
		waitReady(b, "services", serviceDoc)
		sameNetworks(t, b, hosts, cfgIDs, swID)
		sameTasks(t, b, hosts, before)
		svc, _, err := b.Mgr.ServiceInspectWithRaw(b.Ctx, created.ID, swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !spec.Managed(svc.Spec.Labels) || !slices.Contains(svc.Spec.TaskTemplate.Placement.Constraints, spec.NodeReadyConstraint(vlanDoc)) {
			t.Errorf("adopted service: labels %v, placement %+v", svc.Spec.Labels, svc.Spec.TaskTemplate.Placement)
		}
		sameTemplate(t, svcBefore.Spec.TaskTemplate, svc.Spec.TaskTemplate)
		// The hand-made shim is taken over as it is, not duplicated, and
		// the host reaches its tasks through it.
		for i, h := range hosts {
			checkShim(t, b, h, handShim, fmt.Sprintf("172.80.0.%d", 11+i), ranges[h.Name])
			for _, tk := range before {
				if tk.host == h.Name {
					reachThrough(t, b, h, tk.addr, handShim)
				}
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("registration and scale", func(t *testing.T) {
		b := b.For(t)
		// Bounds for the scale API and a Consul registration: neither
		// changes what Swarm runs, so the tasks stay.
		s := findService(t, docs)
		s.Spec.Scaling = &spec.Scaling{Min: 1, Max: 6}
		s.Spec.Consul = &spec.ConsulService{Port: 8080, Check: &spec.ConsulCheck{HTTP: "/health", Interval: "1s", Timeout: "1s"}}
		doc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		b.Apply(string(doc))
		b.WaitFor("the 3 adopted tasks passing in Consul", 2*time.Minute, func(ctx context.Context) error {
			return passing(ctx, b, before)
		})
		sameTasks(t, b, hosts, before)

		b.ReconcilerCmd("scale", serviceDoc, "4")
		var after map[string]task
		b.WaitFor("a fourth task, in its host's range", 2*time.Minute, func(ctx context.Context) error {
			var err error
			after, err = running(ctx, b, hosts, 4)
			return err
		})
		for id, tk := range before {
			if after[id] != tk {
				t.Errorf("task %s changed with the scale request: %+v -> %+v", id, tk, after[id])
			}
		}
		for id, tk := range after {
			if _, old := before[id]; !old {
				t.Logf("new task %s on %s at %s (range %s)", id, tk.host, tk.addr, ranges[tk.host])
			}
		}
		b.WaitFor("the 4 tasks passing in Consul", 2*time.Minute, func(ctx context.Context) error {
			return passing(ctx, b, after)
		})
		svc, _, err := b.Mgr.ServiceInspectWithRaw(b.Ctx, created.ID, swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sameTemplate(t, svcBefore.Spec.TaskTemplate, svc.Spec.TaskTemplate)
	})

	t.Run("fourth host", func(t *testing.T) {
		b := b.For(t)
		joinSwarm(t, b, h4)
		b.StartReconciler(h4)
		waitReady(b, "nodes", h4.ID)
		var chunk netip.Prefix
		b.WaitFor("a chunk for h4", 2*time.Minute, func(ctx context.Context) error {
			var a state.Allocation
			p, _, err := b.Consul(b.H1).KV().Get(bed.KVPrefix+"state/allocations/"+vlanDoc+"/"+h4.ID, (&api.QueryOptions{}).WithContext(ctx))
			if err != nil || p == nil {
				return fmt.Errorf("no allocation yet (%v)", err)
			}
			if err := json.Unmarshal(p.Value, &a); err != nil {
				return err
			}
			chunk, err = netip.ParsePrefix(a.Chunk)
			return err
		})
		for h, r := range ranges {
			if netip.MustParsePrefix(r).Overlaps(chunk) {
				t.Errorf("h4's chunk %s overlaps %s's hand-made range %s", chunk, h, r)
			}
		}
		n, err := b.Docker(h4).NetworkInspect(b.Ctx, configNet, network.InspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(n.IPAM.Config) != 1 || n.IPAM.Config[0].IPRange != chunk.String() || !spec.Managed(n.Labels) {
			t.Errorf("h4's %s: %+v, labels %v; want range %s", configNet, n.IPAM.Config, n.Labels, chunk)
		}
		t.Logf("h4 joined and got %s, beside %v", chunk, ranges)
		waitReady(b, "vlans", vlanDoc)
		sameNetworks(t, b, hosts, cfgIDs, swID)
		// h4 had no hand-made shim: it gets swarmvlan's own.
		checkShim(t, b, h4, spec.ShimName(vlanDoc), spec.ShimAddress(netip.MustParsePrefix(subnet), chunk).String(), chunk.String())
	})
	if t.Failed() {
		return
	}

	t.Run("deleted", func(t *testing.T) {
		b := b.For(t)
		all := append(slices.Clone(hosts), h4)
		b.ReconcilerCmd("delete", "service", serviceDoc)
		b.WaitFor("the adopted service removed", 2*time.Minute, func(ctx context.Context) error {
			if _, _, err := b.Mgr.ServiceInspectWithRaw(ctx, created.ID, swarm.ServiceInspectOptions{}); err == nil {
				return fmt.Errorf("service %s still there", service)
			}
			return nil
		})
		b.ReconcilerCmd("delete", "vlan", vlanDoc)
		b.WaitFor("the adopted networks and shims removed", 2*time.Minute, func(ctx context.Context) error {
			if _, err := b.Mgr.NetworkInspect(ctx, swID, network.InspectOptions{}); err == nil {
				return fmt.Errorf("%s still there", swarmNet)
			}
			for _, h := range all {
				if _, err := b.Docker(h).NetworkInspect(ctx, configNet, network.InspectOptions{}); err == nil {
					return fmt.Errorf("%s: %s still there", h.Name, configNet)
				}
				if out, err := h.Exec(ctx, "ip", "-o", "link", "show", "type", "macvlan").CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
					return fmt.Errorf("%s: macvlan links left (%v): %s", h.Name, err, out)
				}
			}
			return nil
		})
	})
}

// checkShim fails unless the one macvlan link on h is the shim name, with
// swarmvlan's alias, address addr and the route to rng through it.
func checkShim(t *testing.T, b *bed.Bed, h *lab.Host, name, addr, rng string) {
	t.Helper()
	out, err := h.Exec(b.Ctx, "ip", "-o", "link", "show", "type", "macvlan").CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) != 1 || !strings.Contains(lines[0], " "+name+"@"+lab.TrunkInterface+":") ||
		!strings.Contains(lines[0], "alias swarmvlan:"+vlanDoc) {
		t.Errorf("%s: macvlan links (%v), want %s alone, with swarmvlan's alias:\n%s", h.Name, err, name, out)
	}
	if out, err := h.Exec(b.Ctx, "ip", "-o", "addr", "show", "dev", name).CombinedOutput(); err != nil || !strings.Contains(string(out), " "+addr+"/32 ") {
		t.Errorf("%s: %s addresses (%v), want %s/32:\n%s", h.Name, name, err, addr, out)
	}
	if out, err := h.Exec(b.Ctx, "ip", "route", "show", rng).CombinedOutput(); err != nil || !strings.Contains(string(out), "dev "+name) {
		t.Errorf("%s: route to %s (%v), want it through %s:\n%s", h.Name, rng, err, name, out)
	}
}

// reachThrough fails unless h routes addr through the shim and gets an
// answer from the task there.
func reachThrough(t *testing.T, b *bed.Bed, h *lab.Host, addr netip.Addr, shim string) {
	t.Helper()
	if out, err := h.Exec(b.Ctx, "ip", "route", "get", addr.String()).CombinedOutput(); err != nil || !strings.Contains(string(out), "dev "+shim+" ") {
		t.Errorf("%s: route to task %s (%v), want through %s:\n%s", h.Name, addr, err, shim, out)
	}
	if out, err := h.Exec(b.Ctx, "curl", "-sf", "--max-time", "5", "http://"+addr.String()+":8080/health").CombinedOutput(); err != nil {
		t.Errorf("%s: task %s not reached through %s: %v\n%s", h.Name, addr, shim, err, out)
	}
}

// task is one running task container.
type task struct {
	host string
	addr netip.Addr
}

// running returns the running tasks of the hand-made service by task ID,
// and fails unless there are n, each with an address from its host's
// hand-made range on the swarm network.
func running(ctx context.Context, b *bed.Bed, hosts []*lab.Host, n int) (map[string]task, error) {
	out := map[string]task{}
	for _, h := range hosts {
		ctrs, err := b.Docker(h).ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
			filters.Arg("label", "com.docker.swarm.service.name="+service), filters.Arg("status", "running"))})
		if err != nil {
			return nil, err
		}
		for _, c := range ctrs {
			var addr netip.Addr
			if c.NetworkSettings != nil && c.NetworkSettings.Networks[swarmNet] != nil {
				addr, _ = netip.ParseAddr(c.NetworkSettings.Networks[swarmNet].IPAddress)
			}
			if !netip.MustParsePrefix(ranges[h.Name]).Contains(addr) {
				return nil, fmt.Errorf("task on %s has address %s, outside %s", h.Name, addr, ranges[h.Name])
			}
			out[c.Labels["com.docker.swarm.task.id"]] = task{host: h.Name, addr: addr}
		}
	}
	if len(out) != n {
		return nil, fmt.Errorf("%d tasks running, want %d", len(out), n)
	}
	return out, nil
}

// passing checks that exactly the tasks' addresses pass in Consul.
func passing(ctx context.Context, b *bed.Bed, tasks map[string]task) error {
	got, err := b.Passing(ctx, b.H1, serviceDoc)
	if err != nil {
		return err
	}
	want := map[netip.Addr]bool{}
	for _, tk := range tasks {
		want[tk.addr] = true
	}
	if !maps.Equal(got, want) {
		return fmt.Errorf("passing %v, want %v", got, want)
	}
	return nil
}

func sameTasks(t *testing.T, b *bed.Bed, hosts []*lab.Host, before map[string]task) {
	t.Helper()
	now, err := running(b.Ctx, b, hosts, len(before))
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(now, before) {
		t.Errorf("tasks changed: %v -> %v", before, now)
	}
}

func sameNetworks(t *testing.T, b *bed.Bed, hosts []*lab.Host, cfgIDs map[string]string, swID string) {
	t.Helper()
	for _, h := range hosts {
		n, err := b.Docker(h).NetworkInspect(b.Ctx, configNet, network.InspectOptions{})
		if err != nil || n.ID != cfgIDs[h.Name] {
			t.Errorf("%s: %s is %s (%v), was %s", h.Name, configNet, n.ID, err, cfgIDs[h.Name])
		}
	}
	n, err := b.Mgr.NetworkInspect(b.Ctx, swarmNet, network.InspectOptions{})
	if err != nil || n.ID != swID {
		t.Errorf("%s is %s (%v), was %s", swarmNet, n.ID, err, swID)
	}
}

// sameTemplate fails unless the task template is what it was, apart from
// the readiness constraint: what would replace every task.
func sameTemplate(t *testing.T, was, now swarm.TaskSpec) {
	t.Helper()
	was.Placement, now.Placement = nil, nil
	a, _ := json.Marshal(was)
	c, _ := json.Marshal(now)
	if string(a) != string(c) {
		t.Errorf("the task template changed:\n%s\n->\n%s", a, c)
	}
}

func waitReady(b *bed.Bed, section, name string) {
	b.WaitFor(section+"/"+name+" ready", 3*time.Minute, func(ctx context.Context) error {
		st, ok, err := b.Status(ctx, section, name)
		if err != nil || !ok {
			return fmt.Errorf("no status (%v)", err)
		}
		c, _ := bed.Condition(st, "Ready")
		if c.Status != "True" {
			return fmt.Errorf("%s: %s", c.Reason, c.Message)
		}
		return nil
	})
}

// waitReports waits until each host's report lists exactly the hand-made
// config networks named.
func waitReports(b *bed.Bed, hosts []*lab.Host, names ...string) {
	for _, h := range hosts {
		b.WaitFor(h.Name+" reports "+strings.Join(names, ", "), time.Minute, func(ctx context.Context) error {
			p, _, err := b.Consul(b.H1).KV().Get(bed.KVPrefix+"state/nodes/"+h.ID, (&api.QueryOptions{}).WithContext(ctx))
			if err != nil || p == nil {
				return fmt.Errorf("no report (%v)", err)
			}
			var r state.NodeReport
			if err := json.Unmarshal(p.Value, &r); err != nil {
				return err
			}
			var got []string
			for _, c := range r.ConfigNetworks {
				got = append(got, c.Name)
			}
			if !slices.Equal(got, names) {
				return fmt.Errorf("reports %v", got)
			}
			return nil
		})
	}
}

// handShim is the shim the recipe makes by hand on each host.
const handShim = "vlan40-shim"

// makeShim is the recipe's step 2 on h: a macvlan link on the parent with
// an address, and the host's range routed through it.
func makeShim(t *testing.T, b *bed.Bed, h *lab.Host, addr, rng string) {
	t.Helper()
	for _, args := range [][]string{
		{"link", "add", handShim, "link", lab.TrunkInterface, "type", "macvlan", "mode", "bridge"},
		{"addr", "add", addr + "/32", "dev", handShim},
		{"link", "set", handShim, "up"},
		{"route", "add", rng, "dev", handShim},
	} {
		if out, err := h.Exec(b.Ctx, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: ip %s: %v\n%s", h.Name, strings.Join(args, " "), err, out)
		}
	}
}

func createConfigOnly(t *testing.T, b *bed.Bed, h *lab.Host, name, subnet, gw, rng string) string {
	t.Helper()
	r, err := b.Docker(h).NetworkCreate(b.Ctx, name, network.CreateOptions{
		Driver: "macvlan", ConfigOnly: true,
		Options: map[string]string{"parent": lab.TrunkInterface},
		IPAM:    &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet, IPRange: rng, Gateway: gw}}},
	})
	if err != nil {
		t.Fatalf("%s: create %s: %v", h.Name, name, err)
	}
	return r.ID
}

func createSwarmNet(t *testing.T, b *bed.Bed, name, from string) string {
	t.Helper()
	r, err := b.Mgr.NetworkCreate(b.Ctx, name, network.CreateOptions{Driver: "macvlan", Scope: "swarm",
		ConfigFrom: &network.ConfigReference{Network: from}})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return r.ID
}

// leaveSwarm takes h out of the swarm, to join again later as a new node.
func leaveSwarm(t *testing.T, b *bed.Bed, h *lab.Host) {
	t.Helper()
	if err := b.Docker(h).SwarmLeave(b.Ctx, true); err != nil {
		t.Fatal(err)
	}
	b.WaitFor(h.Name+" removed from the swarm", time.Minute, func(ctx context.Context) error {
		return b.Mgr.NodeRemove(ctx, h.ID, swarm.NodeRemoveOptions{Force: true})
	})
}

func joinSwarm(t *testing.T, b *bed.Bed, h *lab.Host) {
	t.Helper()
	sw, err := b.Mgr.SwarmInspect(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := b.Docker(h)
	if err := d.SwarmJoin(b.Ctx, swarm.JoinRequest{ListenAddr: h.Addr + ":2377", AdvertiseAddr: h.Addr,
		RemoteAddrs: []string{b.H1.Addr + ":2377"}, JoinToken: sw.JoinTokens.Worker}); err != nil {
		t.Fatal(err)
	}
	info, err := d.Info(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	h.ID = info.Swarm.NodeID
}

func findVLAN(t *testing.T, docs []spec.Document) *spec.VLAN {
	t.Helper()
	for _, d := range docs {
		if v, ok := d.Object.(*spec.VLAN); ok && v.Metadata.Name == vlanDoc {
			return v
		}
	}
	t.Fatalf("no VLAN %s among the documents", vlanDoc)
	return nil
}

func findService(t *testing.T, docs []spec.Document) *spec.Service {
	t.Helper()
	for _, d := range docs {
		if s, ok := d.Object.(*spec.Service); ok && s.Metadata.Name == serviceDoc {
			return s
		}
	}
	t.Fatalf("no Service %s among the documents", serviceDoc)
	return nil
}
