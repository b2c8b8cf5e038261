//go:build linux

package host_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	"github.com/vishvananda/netlink"

	"swarmvlan/lab"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/reconcile/host"
	"swarmvlan/reconcile/kernel"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// discoveryBed is one host's worth of real parts for the registration
// tests: a veth trunk, the VLAN's shim and route (Net), its config and
// swarm networks, the node's readiness label, a service of the test image
// with a consul block, a Consul agent in the root namespace and a Registrar
// for this node.
type discoveryBed struct {
	ctx     context.Context
	d       engine.Docker
	cli     *client.Client
	agent   *lab.ConsulAgent
	consul  *api.Client
	reg     *host.Registrar
	self    string
	vlan    string
	subnet  netip.Prefix
	chunk   netip.Prefix
	shim    netip.Addr
	doc     *spec.Service
	targets map[string]host.RegistrationTarget
}

// discoveryTestBed builds the bed with a service of replicas tasks whose
// check runs every interval, or skips saying what is missing. Everything it
// makes is removed when the test ends, whether it passed or not.
func discoveryTestBed(tb testing.TB, replicas int, interval spec.Duration) *discoveryBed {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test against the real Docker Engine, netlink and a Consul agent; skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates a veth trunk, a shim link and a route in the root namespace")
	}
	cli := lab.EnsureSwarm(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	tb.Cleanup(cancel)
	if _, err := lab.BuildTestImage(ctx, ""); err != nil {
		tb.Fatalf("build test image: %v", err)
	}
	d, err := engine.New("")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	info, err := d.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		tb.Fatalf("netlink handle: %v", err)
	}
	tb.Cleanup(h.Close)
	discoveryTestNoForeignShims(tb, h)

	agent := lab.StartConsul(tb)
	suffix := enginetest.Suffix(tb)
	b := &discoveryBed{
		ctx: ctx, d: d, cli: cli, agent: agent, consul: agent.Client(tb),
		self: info.Swarm.NodeID, vlan: "svr" + suffix,
	}
	b.subnet, b.chunk = discoveryTestSubnet(tb, ctx, h, d)
	b.shim = spec.ShimAddress(b.subnet, b.chunk)
	parent := discoveryTestVeth(tb, h, suffix)

	// Net in the root namespace, where the agent runs, so the agent's
	// checks reach the tasks through the shim (libnetwork #1915). Deleting
	// the veth at cleanup takes the shim and its route with it; Ensure is
	// not called again with less, because that would also remove shims
	// other swarmvlan tests made in this namespace.
	hn := host.NewNet(kernel.New(h))
	sts, err := hn.Ensure(ctx, []host.VLAN{{
		Name: b.vlan, Trunk: parent, Promiscuous: true, HostAccess: true, Mode: "bridge",
		Chunk: b.chunk, ShimAddr: b.shim,
	}})
	if err != nil || !sts[b.vlan].Ready {
		tb.Fatalf("Net.Ensure: %+v, %v", sts[b.vlan], err)
	}

	// Cleanups run last-registered first: registrations, service, node
	// label, networks, then the veth registered above.
	tb.Cleanup(func() { enginetest.RemoveVLANNetworks(tb, cli, b.vlan) })
	if st, err := host.EnsureConfigNetwork(ctx, d, host.ConfigNetwork{
		VLAN: b.vlan, Parent: parent, Subnet: b.subnet,
		Gateway: b.subnet.Addr().Next(), IPRange: b.chunk, ShimAddr: b.shim,
	}); err != nil || st.State != state.NetworkReady {
		tb.Fatalf("EnsureConfigNetwork: %+v, %v", st, err)
	}
	// An error is the reconcile contract's "retry": the engine has been
	// seen to answer the first inspection of a fresh swarm network without
	// its driver, and EnsureSwarmNetwork then removes what it made.
	enginetest.Poll(tb, time.Minute, "EnsureSwarmNetwork", func() (bool, string) {
		st, err := cluster.EnsureSwarmNetwork(ctx, d, cluster.SwarmNetwork{VLAN: b.vlan})
		if err != nil {
			tb.Logf("EnsureSwarmNetwork (retried): %+v, %v", st, err)
		}
		return err == nil && st.State == state.NetworkReady, fmt.Sprintf("%+v, %v", st, err)
	})

	tb.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		view, vlans := enginetest.ReadyView(tb, cctx, d, b.self, b.vlan, false)
		if err := cluster.EnsureNodeLabels(cctx, d, view, vlans); err != nil {
			tb.Errorf("cleanup: node label: %v", err)
		}
	})
	view, vlans := enginetest.ReadyView(tb, ctx, d, b.self, b.vlan, true)
	if err := cluster.EnsureNodeLabels(ctx, d, view, vlans); err != nil {
		tb.Fatalf("EnsureNodeLabels: %v", err)
	}

	b.doc = &spec.Service{
		Metadata: spec.ObjectMeta{Name: "svrweb" + suffix},
		Spec: spec.ServiceSpec{
			Image:    lab.ImageTestApp,
			Command:  []string{"/app"},
			Args:     []string{"--listen", ":8080"},
			Networks: []string{b.vlan},
			Replicas: &replicas,
			Restart:  &spec.RestartPolicy{Condition: "any", Delay: "1s"},
			Consul: &spec.ConsulService{
				Port:  8080,
				Tags:  []string{"v1"},
				Meta:  map[string]string{"owner": "lab"},
				Check: &spec.ConsulCheck{HTTP: "/health", Interval: interval, Timeout: "1s", DeregisterAfter: "1m"},
			},
		},
	}
	spec.SetDefaults(b.doc)
	if err := spec.Validate(b.doc); err != nil {
		tb.Fatalf("service document: %v", err)
	}
	b.targets = host.RegistrationTargets([]*spec.Service{b.doc})
	tb.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		if err := cluster.RemoveService(cctx, d, b.doc.Metadata.Name); err != nil {
			tb.Errorf("cleanup: service: %v", err)
		}
	})
	if _, err := cluster.EnsureService(ctx, d, cluster.ServiceInput{Service: b.doc, Replicas: replicas}); err != nil {
		tb.Fatalf("EnsureService: %v", err)
	}

	store, err := state.New(state.Config{Address: b.agent.Addr})
	if err != nil {
		tb.Fatal(err)
	}
	b.reg = &host.Registrar{Agent: store.LocalAgent(), Docker: d, NodeID: b.self, Hostname: info.Name}
	tb.Cleanup(func() {
		// The agent dies with the test; removing the registrations first
		// still leaves nothing behind should it be reused.
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		if _, err := b.reg.Sync(cctx, map[string]host.RegistrationTarget{}); err != nil {
			tb.Errorf("cleanup: deregister: %v", err)
		}
	})
	return b
}

// discoveryTestNoForeignShims skips when another swarmvlan Net owns links
// in the root namespace: Ensure converges the namespace to exactly what it
// is given, so it would remove them.
func discoveryTestNoForeignShims(tb testing.TB, h *netlink.Handle) {
	tb.Helper()
	links, err := h.LinkList()
	if err != nil {
		tb.Fatalf("list links: %v", err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, host.AliasPrefixForTest) {
			tb.Skipf("link %s (alias %q) belongs to another swarmvlan host reconciler in the root namespace; Net.Ensure here would remove it",
				l.Attrs().Name, l.Attrs().Alias)
		}
	}
}

// discoveryTestSubnet picks a /16 in 172.81-89.0.0 that no route and no
// Docker network on this host overlaps, and a random /24 chunk in it.
func discoveryTestSubnet(tb testing.TB, ctx context.Context, h *netlink.Handle, d engine.Docker) (netip.Prefix, netip.Prefix) {
	tb.Helper()
	var used []netip.Prefix
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		tb.Fatalf("list routes: %v", err)
	}
	for _, r := range routes {
		// The default route overlaps everything and says nothing about use.
		if r.Dst == nil {
			continue
		}
		if p, ok := kernel.PrefixOf(r.Dst); ok && p.Bits() > 0 {
			used = append(used, p)
		}
	}
	nets, err := d.NetworkList(ctx, engine.Filter())
	if err != nil {
		tb.Fatalf("list networks: %v", err)
	}
	for _, n := range nets {
		for _, c := range n.IPAM.Config {
			if p, err := netip.ParsePrefix(c.Subnet); err == nil {
				used = append(used, p)
			}
		}
	}
	for _, second := range rand.Perm(9) {
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(81 + second), 0, 0}), 16)
		if slices.ContainsFunc(used, subnet.Overlaps) {
			continue
		}
		chunk := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(81 + second), byte(1 + rand.IntN(254)), 0}), 24)
		return subnet, chunk
	}
	tb.Skipf("every /16 in 172.81-89.0.0 is in use on this host: %v", used)
	return netip.Prefix{}, netip.Prefix{}
}

// discoveryTestVeth creates a veth pair standing in for the trunk (this
// kernel has no 802.1Q) and deletes it when the test ends. It returns the
// end used as the parent.
func discoveryTestVeth(tb testing.TB, h *netlink.Handle, suffix string) string {
	tb.Helper()
	a, b := "svr"+suffix+"a", "svr"+suffix+"b"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}
	if err := h.LinkAdd(veth); err != nil {
		tb.Skipf("cannot create a veth pair: %v", err)
	}
	tb.Cleanup(func() {
		l, err := h.LinkByName(a)
		if err != nil {
			tb.Errorf("cleanup: veth %s: %v", a, err)
			return
		}
		if err := h.LinkDel(l); err != nil {
			tb.Errorf("cleanup: delete veth %s: %v", a, err)
		}
	})
	for _, name := range []string{a, b} {
		l, err := h.LinkByName(name)
		if err == nil {
			err = h.LinkSetUp(l)
		}
		if err != nil {
			tb.Fatalf("set %s up: %v", name, err)
		}
	}
	return a
}

// passing returns the passing catalog entries of the bed's Consul service
// by service ID, with their addresses.
func (b *discoveryBed) passing() (map[string]string, error) {
	entries, _, err := b.consul.Health().Service(b.doc.Spec.Consul.Service, "", true, (&api.QueryOptions{}).WithContext(b.ctx))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range entries {
		out[e.Service.ID] = e.Service.Address
	}
	return out, nil
}

// running returns the running tasks' addresses on the VLAN by the Consul
// service ID they should have, as the swarm manager and this engine report
// them (independently of the Registrar).
func (b *discoveryBed) running() (map[string]string, error) {
	obs, err := cluster.ObserveService(b.ctx, b.d, b.doc.Metadata.Name)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, t := range obs.Tasks {
		if t.State == "running" && t.Addresses[b.vlan] != "" {
			out[host.RegistrationServiceID(b.doc.Metadata.Name, t.ID)] = t.Addresses[b.vlan]
		}
	}
	return out, nil
}

// discoveryTestDNS returns the A records the agent's DNS interface answers
// for name, sorted.
func discoveryTestDNS(ctx context.Context, dnsAddr, name string) ([]string, error) {
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, dnsAddr)
		},
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The trailing dot keeps resolv.conf's search domains out of it.
	ips, err := r.LookupIP(ctx, "ip4", name+".service.consul.")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	sort.Strings(out)
	return out, nil
}

// TestRegistrarIntegration registers a three-replica service's tasks with
// a real agent, follows a scale-down, and checks the catalog, the health
// endpoint and the agent's DNS against the addresses Docker reports.
func TestRegistrarIntegration(t *testing.T) {
	b := discoveryTestBed(t, 3, "1s")
	ctx := b.ctx
	agent := b.consul.Agent()
	name := b.doc.Spec.Consul.Service

	// What a registrar left behind before a restart: one of its own for a
	// task that no longer exists, one another node's registrar made on this
	// agent, and one swarmvlan did not make at all. The last two carry
	// other Consul names so they stay out of the health and DNS answers
	// checked below.
	stale := host.RegistrationServiceID(b.doc.Metadata.Name, "gonetask0000000000000000")
	foreign := &api.AgentServiceRegistration{ID: "foreign-" + name, Name: "foreign-" + name, Address: "192.0.2.10", Port: 8080}
	otherNode := &api.AgentServiceRegistration{ID: host.RegistrationServiceID(b.doc.Metadata.Name, "othertask000000000000000"), Name: "elsewhere-" + name,
		Address: "192.0.2.11", Port: 8080, Meta: map[string]string{state.MetaTask: "othertask000000000000000", state.MetaNode: "othernode"}}
	for _, r := range []*api.AgentServiceRegistration{
		{ID: stale, Name: name, Address: "192.0.2.9", Port: 8080, Meta: map[string]string{state.MetaTask: "gonetask0000000000000000", state.MetaNode: b.self}},
		foreign, otherNode,
	} {
		if err := agent.ServiceRegister(r); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, id := range []string{foreign.ID, otherNode.ID} {
			if err := agent.ServiceDeregister(id); err != nil && !consulNotFound(err) {
				t.Errorf("cleanup: deregister %s: %v", id, err)
			}
		}
	})

	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	var three map[string]string
	step("three tasks registered and passing", func(t *testing.T) {
		var st host.RegistrationStatus
		enginetest.Poll(t, 2*time.Minute, "Sync registers three tasks", func() (bool, string) {
			var err error
			st, err = b.reg.Sync(ctx, b.targets)
			return err == nil && len(st.Tasks) == 3, fmt.Sprintf("%+v, %v", st, err)
		})
		enginetest.Poll(t, time.Minute, "three passing entries", func() (bool, string) {
			var err error
			three, err = b.passing()
			return err == nil && len(three) == 3, fmt.Sprintf("%v, %v", three, err)
		})
		running, err := b.running()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(three, running) {
			t.Errorf("passing entries %v, want the running tasks %v", three, running)
		}
		if !maps.Equal(st.Tasks, running) {
			t.Errorf("Sync reports %v, want %v", st.Tasks, running)
		}
		seen := map[netip.Addr]bool{}
		for id, s := range three {
			a, err := netip.ParseAddr(s)
			switch {
			case err != nil:
				t.Errorf("%s: address %q: %v", id, s, err)
			case !b.chunk.Contains(a) || a == b.shim:
				t.Errorf("%s: address %s is not a task address in the chunk %s", id, a, b.chunk)
			case seen[a]:
				t.Errorf("%s: address %s registered twice", id, a)
			}
			seen[a] = true
		}
		all, err := agent.Services()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := all[stale]; ok {
			t.Errorf("stale registration %s of a task that no longer exists survived the first Sync", stale)
		}
		for _, id := range []string{foreign.ID, otherNode.ID} {
			if _, ok := all[id]; !ok {
				t.Errorf("registration %s that this registrar does not own was removed", id)
			}
		}
		for id := range three {
			s := all[id]
			if s.Port != 8080 || !slices.Equal(s.Tags, []string{"v1"}) || s.Meta["owner"] != "lab" ||
				s.Meta[state.MetaNode] != b.self || s.Meta[state.MetaVLAN] != b.vlan ||
				s.Meta[state.MetaService] != b.doc.Metadata.Name || id != host.RegistrationServiceID(b.doc.Metadata.Name, s.Meta[state.MetaTask]) {
				t.Errorf("registration %s: %+v", id, s)
			}
		}
	})

	step("converged sync writes nothing", func(t *testing.T) {
		st, err := b.reg.Sync(ctx, b.targets)
		if err != nil || len(st.Registered) != 0 || len(st.Deregistered) != 0 {
			t.Errorf("Sync on a converged host: %+v, %v", st, err)
		}
	})

	step("changed tags re-register with the check replaced", func(t *testing.T) {
		doc := *b.doc
		c := *doc.Spec.Consul
		c.Tags = []string{"v2"}
		doc.Spec.Consul = &c
		st, err := b.reg.Sync(ctx, host.RegistrationTargets([]*spec.Service{&doc}))
		if err != nil || len(st.Registered) != 3 || len(st.Deregistered) != 0 {
			t.Fatalf("Sync with new tags: %+v, %v", st, err)
		}
		all, err := agent.Services()
		if err != nil {
			t.Fatal(err)
		}
		for id := range three {
			if !slices.Equal(all[id].Tags, []string{"v2"}) {
				t.Errorf("%s tags %v, want [v2]", id, all[id].Tags)
			}
		}
		checks, err := agent.Checks()
		if err != nil {
			t.Fatal(err)
		}
		perService := map[string]int{}
		for _, c := range checks {
			perService[c.ServiceID]++
		}
		for id := range three {
			if perService[id] != 1 {
				t.Errorf("%s has %d checks after re-registration, want 1", id, perService[id])
			}
		}
		// Back to the document the rest uses.
		if st, err := b.reg.Sync(ctx, b.targets); err != nil || len(st.Registered) != 3 {
			t.Fatalf("Sync back to v1: %+v, %v", st, err)
		}
	})

	var two map[string]string
	step("scaled to two, the stopped task's entry is gone", func(t *testing.T) {
		if _, err := cluster.EnsureService(ctx, b.d, cluster.ServiceInput{Service: b.doc, Replicas: 2}); err != nil {
			t.Fatal(err)
		}
		deregistered := map[string]bool{}
		enginetest.Poll(t, 2*time.Minute, "Sync follows the scale-down", func() (bool, string) {
			st, err := b.reg.Sync(ctx, b.targets)
			for _, id := range st.Deregistered {
				deregistered[id] = true
			}
			return err == nil && len(st.Tasks) == 2, fmt.Sprintf("%+v, %v", st, err)
		})
		enginetest.Poll(t, time.Minute, "two passing entries", func() (bool, string) {
			var err error
			two, err = b.passing()
			return err == nil && len(two) == 2, fmt.Sprintf("%v, %v", two, err)
		})
		running, err := b.running()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(two, running) {
			t.Errorf("passing entries %v, want the running tasks %v", two, running)
		}
		var gone []string
		for id, addr := range three {
			if _, ok := two[id]; !ok {
				gone = append(gone, id)
			} else if two[id] != addr {
				t.Errorf("%s moved from %s to %s", id, addr, two[id])
			}
		}
		if len(gone) != 1 || !deregistered[gone[0]] || len(deregistered) != 1 {
			t.Errorf("stopped tasks %v, deregistered %v: want the one stopped task", gone, slices.Sorted(maps.Keys(deregistered)))
		}
		all, err := agent.Services()
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range gone {
			if _, ok := all[id]; ok {
				t.Errorf("the stopped task's registration %s is still on the agent", id)
			}
		}
	})

	step("agent DNS answers the two addresses", func(t *testing.T) {
		want := slices.Sorted(maps.Values(two))
		var got []string
		enginetest.Poll(t, 30*time.Second, "DNS answer", func() (bool, string) {
			var err error
			got, err = discoveryTestDNS(ctx, b.agent.DNSAddr, name)
			return err == nil && slices.Equal(got, want), fmt.Sprintf("%v, %v", got, err)
		})
	})

	step("service without consul block is deregistered", func(t *testing.T) {
		st, err := b.reg.Sync(ctx, map[string]host.RegistrationTarget{})
		if err != nil || len(st.Deregistered) != 2 || len(st.Tasks) != 0 {
			t.Fatalf("Sync without targets: %+v, %v", st, err)
		}
		all, err := agent.Services()
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(maps.Keys(all)); !slices.Equal(got, slices.Sorted(slices.Values([]string{foreign.ID, otherNode.ID}))) {
			t.Errorf("agent services %v: want only the two this registrar does not own", got)
		}
	})
}

// BenchmarkTaskToPassing measures the time from scaling a service up by one
// task to that task's entry passing in Consul, with Sync driven by Docker
// container events and a 20 msOf loop. It reports the three stages: until
// the engine starts the container (Swarm scheduling and container start),
// until Sync has registered it, and until its check passes. The check
// interval bounds the last stage: Consul runs a new check's first probe at
// a random point within one interval (1 s here), so about half an interval
// is added on average.
func BenchmarkTaskToPassing(b *testing.B) {
	bed := discoveryTestBed(b, 1, "1s")
	ctx := bed.ctx
	name := bed.doc.Metadata.Name
	events := engine.Events(ctx, bed.d, "container")
	settle := func(n int) {
		b.Helper()
		enginetest.Poll(b, 2*time.Minute, fmt.Sprintf("%d passing", n), func() (bool, string) {
			st, err := bed.reg.Sync(ctx, bed.targets)
			if err != nil || len(st.Tasks) != n {
				return false, fmt.Sprintf("%+v, %v", st, err)
			}
			p, err := bed.passing()
			return err == nil && len(p) == n, fmt.Sprintf("%v, %v", p, err)
		})
	}
	settle(1)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var toStarted, toRegistered, toPassing time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := cluster.EnsureService(ctx, bed.d, cluster.ServiceInput{Service: bed.doc, Replicas: 2}); err != nil {
			b.Fatal(err)
		}
		var started, registered time.Duration
		deadline := time.After(2 * time.Minute)
		for {
			select {
			case ev := <-events:
				if started == 0 && ev.Action == "start" && ev.Attributes[host.LabelServiceNameForTest] == name {
					started = time.Since(start)
				}
			case <-tick.C:
			case <-deadline:
				b.Fatal("the new task did not pass within 2 minutes")
			}
			st, err := bed.reg.Sync(ctx, bed.targets)
			if err != nil {
				b.Fatal(err)
			}
			if registered == 0 && len(st.Tasks) == 2 {
				registered = time.Since(start)
			}
			p, err := bed.passing()
			if err != nil {
				b.Fatal(err)
			}
			if len(p) == 2 {
				break
			}
		}
		toPassing += time.Since(start)
		toRegistered += registered
		toStarted += started
		b.StopTimer()
		if _, err := cluster.EnsureService(ctx, bed.d, cluster.ServiceInput{Service: bed.doc, Replicas: 1}); err != nil {
			b.Fatal(err)
		}
		settle(1)
		// Drain the events of the scale-down so they do not drive the next
		// measurement's first Sync.
		for len(events) > 0 {
			<-events
		}
		b.StartTimer()
	}
	msOf := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(msOf(toStarted), "msOf-to-started")
	b.ReportMetric(msOf(toRegistered), "msOf-to-registered")
	b.ReportMetric(msOf(toPassing), "msOf-to-passing")
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// consulNotFound reports whether the agent answered 404: the registration
// is gone already.
func consulNotFound(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}
