//go:build linux

package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/system"
	"github.com/hashicorp/consul/api"
	"github.com/vishvananda/netlink"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/reconcile/kernel"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// hostTestLogWriter sends the agent's log to the test's log.
type hostTestLogWriter struct{ t testing.TB }

func (w hostTestLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func hostTestLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(hostTestLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hostFakeEngine is the fake Engine with a hostname in Info and an event
// stream the test feeds.
type hostFakeEngine struct {
	*enginetest.Fake
	name   string
	events chan events.Message
}

func newHostFakeEngine(name string) *hostFakeEngine {
	e := &hostFakeEngine{Fake: enginetest.NewFake(), name: name, events: make(chan events.Message, 16)}
	e.Fake.EventsFunc = func(ctx context.Context) (<-chan events.Message, <-chan error) {
		return e.events, make(chan error)
	}
	return e
}

func (e *hostFakeEngine) Info(ctx context.Context) (system.Info, error) {
	info, err := e.Fake.Info(ctx)
	info.Name = e.name
	return info, err
}

// hostTestHarness runs a Agent in-process against a Consul agent, fed
// by its own spec watch as the daemon does.
type hostTestHarness struct {
	agent *Agent
	store *state.Store
	kv    *api.KV // straight to Consul, not through any proxy
	view  *reconcile.View
}

// startHostTestAgent starts the spec watch and the agent and stops both
// (waiting for them) when the test ends.
func startHostTestAgent(t *testing.T, store *state.Store, kv *api.KV, cfg Config) *hostTestHarness {
	t.Helper()
	view := reconcile.NewView(store.SpecPrefix())
	cfg.Store, cfg.View = store, view
	if cfg.Log == nil {
		cfg.Log = hostTestLogger(t)
	}
	a := NewAgent(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		reconcile.WatchSpec(ctx, store, view, state.WatchOptions{}, a.Enqueue, cfg.Log)
	}()
	go func() {
		defer wg.Done()
		if err := a.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	hostTestEventually(t, 10*time.Second, "identity", func() error {
		if id, _ := a.Identity(); id == "" {
			return errors.New("no node ID yet")
		}
		return nil
	})
	return &hostTestHarness{agent: a, store: store, kv: kv, view: view}
}

func (h *hostTestHarness) put(t *testing.T, key string, value []byte) {
	t.Helper()
	if _, err := h.kv.Put(&api.KVPair{Key: key, Value: value}, nil); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func (h *hostTestHarness) putAllocation(t *testing.T, vlan, chunk string) {
	t.Helper()
	nodeID, hostname := h.agent.Identity()
	b, err := json.Marshal(state.Allocation{Chunk: chunk, Node: nodeID, Hostname: hostname, Created: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	h.put(t, h.store.AllocationKey(vlan, nodeID), b)
}

// nodeReport reads state/nodes/<nodeID>; held says a session holds it.
func (h *hostTestHarness) nodeReport(t *testing.T) (r state.NodeReport, held bool, err error) {
	t.Helper()
	nodeID, _ := h.agent.Identity()
	p, _, err := h.kv.Get(h.store.NodeKey(nodeID), nil)
	if err != nil || p == nil {
		return r, false, fmt.Errorf("node key: %v (absent: %v)", err, p == nil)
	}
	if err := json.Unmarshal(p.Value, &r); err != nil {
		return r, false, err
	}
	return r, p.Session != "", nil
}

// nodeStatus reads status/nodes/<nodeID>.
func (h *hostTestHarness) nodeStatus(t *testing.T) (state.Status, Status, error) {
	t.Helper()
	nodeID, _ := h.agent.Identity()
	var obj state.Status
	var st Status
	p, _, err := h.kv.Get(h.store.StatusKey(state.SectionNodes, nodeID), nil)
	if err != nil || p == nil {
		return obj, st, fmt.Errorf("status key: %v (absent: %v)", err, p == nil)
	}
	if err := json.Unmarshal(p.Value, &obj); err != nil {
		return obj, st, err
	}
	if err := json.Unmarshal(obj.Details, &st); err != nil {
		return obj, st, err
	}
	return obj, st, nil
}

// vlanReady checks that both records say vlan is ready with chunk.
// vlanReadyReport checks the node key alone.
func (h *hostTestHarness) vlanReadyReport(t *testing.T, vlan, chunk string) error {
	r, held, err := h.nodeReport(t)
	switch {
	case err != nil:
		return err
	case !held:
		return errors.New("node key not held by a session")
	case r.VLANs[vlan] != state.NodeVLANReport{Ready: true, Chunk: chunk}:
		return fmt.Errorf("node report says %+v", r.VLANs[vlan])
	}
	return nil
}

// vlanReady checks the node key and the node's status.
func (h *hostTestHarness) vlanReady(t *testing.T, vlan, chunk string) error {
	if err := h.vlanReadyReport(t, vlan, chunk); err != nil {
		return err
	}
	obj, st, err := h.nodeStatus(t)
	switch {
	case err != nil:
		return err
	case !st.VLANs[vlan].Ready || st.VLANs[vlan].Chunk != chunk:
		return fmt.Errorf("node status says %+v", st.VLANs[vlan])
	case len(obj.Conditions) != 1 || obj.Conditions[0].Status != "True" || obj.LastError != "":
		return fmt.Errorf("node status conditions %+v, last error %q", obj.Conditions, obj.LastError)
	}
	return nil
}

// TestHostAgentConsul runs the agent against a real Consul agent (through a
// proxy that can cut it off) and the fake Engine, with the kernel
// unmanaged: liveness, readiness, status, registrations, repair of Docker
// drift and fail-static behaviour while Consul is away.
func TestHostAgentConsul(t *testing.T) {
	consul := lab.StartConsul(t)
	proxy := lab.NewFlakyProxy(t, consul.Addr)
	store, err := state.New(state.Config{Address: proxy.Addr, Prefix: "svhost/"})
	if err != nil {
		t.Fatal(err)
	}
	kv := consul.Client(t).KV()
	fe := newHostFakeEngine("worker1")
	// The Engine is away at first: the agent waits for it.
	minB, maxB := identityBackoffMin, identityBackoffMax
	identityBackoffMin, identityBackoffMax = 10*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() { identityBackoffMin, identityBackoffMax = minB, maxB })
	fe.FailNext("Info", errors.New("connection refused"), errors.New("connection refused"))

	var regMu sync.Mutex
	var synced [][]string
	h := startHostTestAgent(t, store, kv, Config{
		Docker: fe,
		SyncRegistrations: func(ctx context.Context, svcs []*spec.Service) error {
			names := make([]string, len(svcs))
			for i, s := range svcs {
				names[i] = s.Metadata.Name
			}
			regMu.Lock()
			synced = append(synced, names)
			regMu.Unlock()
			return nil
		},
	})
	if id, host := h.agent.Identity(); id != fe.NodeID || host != "worker1" {
		t.Fatalf("identity %q %q", id, host)
	}
	h.put(t, store.SpecKey(spec.KindVLAN, "v40"), []byte(hostTestVLAN("v40", 40, "bond0", "10.40.0.0/16", "")))
	h.put(t, store.SpecKey(spec.KindHost, "worker1"), []byte("apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: worker1}\nspec: {trunk: eth1}\n"))

	t.Run("registered, waiting for a chunk", func(t *testing.T) {
		hostTestEventually(t, 10*time.Second, "node key", func() error {
			r, held, err := h.nodeReport(t)
			switch {
			case err != nil:
				return err
			case !held:
				return errors.New("not held by a session")
			case r.Hostname != "worker1" || r.VLANs["v40"] != (state.NodeVLANReport{Reason: "waiting for a chunk"}):
				return fmt.Errorf("report %+v", r)
			}
			return nil
		})
		if fe.NetworkLookup("v40-config") != nil {
			t.Error("config network created without a chunk")
		}
	})

	t.Run("the chunk brings the config network and readiness", func(t *testing.T) {
		h.putAllocation(t, "v40", "10.40.3.0/24")
		hostTestEventually(t, 10*time.Second, "ready", func() error { return h.vlanReady(t, "v40", "10.40.3.0/24") })
		n := hostTestConfigNet(fe.Fake, "v40-config")
		if n == nil || n.Options["parent"] != "eth1.40" || n.IPAM.Config[0].IPRange != "10.40.3.0/24" {
			t.Fatalf("config network %+v", n)
		}
	})

	t.Run("registrations follow Service documents", func(t *testing.T) {
		svc := "apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: web}\nspec: {image: app:1, networks: [v40], replicas: 1}\n"
		h.put(t, store.SpecKey(spec.KindService, "web"), []byte(svc))
		hostTestEventually(t, 10*time.Second, "sync with web", func() error {
			regMu.Lock()
			defer regMu.Unlock()
			if len(synced) > 0 && slices.Equal(synced[len(synced)-1], []string{"web"}) {
				return nil
			}
			return fmt.Errorf("synced %v", synced)
		})
	})

	t.Run("Consul away: Docker drift repaired, nothing removed", func(t *testing.T) {
		failedBefore := proxy.Failed()
		proxy.SetDown(true)
		fe.Mu.Lock()
		for id, n := range fe.Networks {
			if n.Name == "v40-config" {
				delete(fe.Networks, id)
			}
		}
		fe.Mu.Unlock()
		// The first re-creations fail: the agent retries with backoff and
		// cannot record the VLAN's unreadiness meanwhile.
		busy := errors.New("engine busy")
		fe.FailNext("NetworkCreate", busy, busy)
		fe.events <- events.Message{Type: events.NetworkEventType, Action: events.ActionDestroy,
			Actor: events.Actor{ID: "x", Attributes: map[string]string{"name": "v40-config"}}}
		hostTestEventually(t, 10*time.Second, "config network back", func() error {
			if n := hostTestConfigNet(fe.Fake, "v40-config"); n == nil || n.IPAM.Config[0].IPRange != "10.40.3.0/24" {
				return fmt.Errorf("config network %+v", n)
			}
			return nil
		})
		if n := fe.Calls()["NetworkCreate"]; n < 3 {
			t.Errorf("%d network creations, want the 2 failures and a success", n)
		}
		if n := fe.Calls()["NetworkRemove"]; n != 0 {
			t.Errorf("%d network removals while Consul was away", n)
		}
		hostTestEventually(t, 10*time.Second, "Consul requests failing", func() error {
			if proxy.Failed() == failedBefore {
				return errors.New("no request failed yet")
			}
			return nil
		})
		// No write passes the proxy while it is down, so the key's index
		// read now is that of the last write before the cut. The agent
		// stamps Updated before it sends, so a write sent just before the
		// proxy returned and received just after carries an earlier time:
		// the index, not the time, tells a write after the return.
		nodeID, _ := h.agent.Identity()
		cut, _, err := kv.Get(store.NodeKey(nodeID), nil)
		if err != nil || cut == nil {
			t.Fatalf("node key at the cut: %v (absent: %v)", err, cut == nil)
		}
		proxy.SetDown(false)
		hostTestEventually(t, 20*time.Second, "ready after Consul returned", func() error { return h.vlanReady(t, "v40", "10.40.3.0/24") })
		// The unreadiness written while Consul was away may have reached
		// the key or not: the agent writes the value again.
		hostTestEventually(t, 20*time.Second, "node key rewritten", func() error {
			p, _, err := kv.Get(store.NodeKey(nodeID), nil)
			switch {
			case err != nil:
				return err
			case p == nil:
				return errors.New("node key absent")
			case p.ModifyIndex <= cut.ModifyIndex:
				return fmt.Errorf("node key last written at index %d, the cut was at %d", p.ModifyIndex, cut.ModifyIndex)
			}
			return h.vlanReadyReport(t, "v40", "10.40.3.0/24")
		})
	})

	t.Run("the Updated time alone is never rewritten", func(t *testing.T) {
		nodeID, _ := h.agent.Identity()
		before, _, err := kv.Get(store.NodeKey(nodeID), nil)
		if err != nil || before == nil {
			t.Fatal(err)
		}
		// Any network event asks for a pass.
		fe.events <- events.Message{Type: events.NetworkEventType, Action: events.ActionCreate, Actor: events.Actor{ID: "y"}}
		calls := fe.Calls()["NetworkList"]
		hostTestEventually(t, 10*time.Second, "another pass", func() error {
			if fe.Calls()["NetworkList"] == calls {
				return errors.New("no pass yet")
			}
			return nil
		})
		after, _, err := kv.Get(store.NodeKey(nodeID), nil)
		if err != nil || after == nil {
			t.Fatal(err)
		}
		if after.ModifyIndex != before.ModifyIndex {
			t.Errorf("node key rewritten by a pass with unchanged readiness: %s -> %s", before.Value, after.Value)
		}
	})

	t.Run("Docker away: the node report keeps its readiness", func(t *testing.T) {
		nodeID, _ := h.agent.Identity()
		before, _, err := kv.Get(store.NodeKey(nodeID), nil)
		if err != nil || before == nil {
			t.Fatal(err)
		}
		down := errors.New("Cannot connect to the Docker daemon")
		calls := fe.Calls()["NetworkList"]
		fe.FailNext("NetworkList", down, down, down)
		fe.events <- events.Message{Type: events.NetworkEventType, Action: events.ActionCreate, Actor: events.Actor{ID: "z"}}
		hostTestEventually(t, 10*time.Second, "a pass that could not list networks", func() error {
			if fe.Calls()["NetworkList"] < calls+1 {
				return errors.New("no failed pass yet")
			}
			return nil
		})
		if err := h.vlanReadyReport(t, "v40", "10.40.3.0/24"); err != nil {
			t.Fatalf("readiness flipped while Docker was away: %v", err)
		}
		after, _, err := kv.Get(store.NodeKey(nodeID), nil)
		if err != nil || after == nil || after.ModifyIndex != before.ModifyIndex {
			t.Fatalf("node key rewritten while Docker was away: %v", err)
		}
		hostTestEventually(t, 20*time.Second, "ready once Docker answers", func() error { return h.vlanReady(t, "v40", "10.40.3.0/24") })
	})
}

// hostTestFreeSubnet picks 172.x.0.0/16, x in 80-89, that no network on the
// Engine uses and no route in the root namespace reaches.
func hostTestFreeSubnet(t *testing.T, ctx context.Context, d engine.Docker) netip.Prefix {
	t.Helper()
	nets, err := d.NetworkList(ctx, engine.Filter())
	if err != nil {
		t.Fatal(err)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range rand.Perm(10) {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(80 + x), 0, 0}), 16)
		used := false
		for _, n := range nets {
			for _, c := range n.IPAM.Config {
				if q, err := netip.ParsePrefix(c.Subnet); err == nil && q.Overlaps(p) {
					used = true
				}
			}
		}
		for _, r := range routes {
			if r.Dst != nil {
				// The default route (0.0.0.0/0) reaches everything.
				if q, ok := kernel.PrefixOf(r.Dst); ok && q.Bits() > 0 && q.Overlaps(p) {
					used = true
				}
			}
		}
		if !used {
			return p
		}
	}
	t.Skip("every 172.80-89.0.0/16 is in use on this machine")
	return netip.Prefix{}
}

// TestHostAgentIntegration runs the agent with the real Engine, a real
// Consul agent and real netlink. The kernel side lives in a fresh network
// namespace with a veth trunk: a Net in the root namespace would remove
// every swarmvlan link there, including those of other processes on this
// machine. A config-only network only records its parent's name, so the
// Engine accepts one that lives in the test's namespace; no container is
// attached in this test.
func TestHostAgentIntegration(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against the real Docker Engine; skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace, links, addresses and routes")
	}
	lab.EnsureSwarm(t)
	d, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	info, err := d.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}

	suffix := enginetest.Suffix(t)
	vlan := "svh" + suffix
	cfgName := spec.ConfigNetworkName(vlan)
	subnet := hostTestFreeSubnet(t, ctx, d)
	chunk1 := netip.PrefixFrom(netip.AddrFrom4([4]byte{subnet.Addr().As4()[0], subnet.Addr().As4()[1], 1, 0}), 24)
	chunk2 := netip.PrefixFrom(netip.AddrFrom4([4]byte{subnet.Addr().As4()[0], subnet.Addr().As4()[1], 2, 0}), 24)

	// Removed even if the test fails half-way, and only if it is ours.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		n, err := engine.FindNetwork(ctx, d, cfgName, networkConfigOwned)
		if err != nil {
			t.Errorf("cleanup: find %s: %v", cfgName, err)
			return
		}
		if n != nil && spec.Managed(n.Labels) && n.Labels[spec.LabelName] == vlan {
			if err := d.NetworkRemove(ctx, n.ID); err != nil && !engine.IsNotFound(err) {
				t.Errorf("cleanup: remove %s: %v", cfgName, err)
			}
		}
	})
	ns, nh := hostTestNS(t)
	hostTestVeth(t, nh, "trunk0", "trunk0p", true)
	hn := hostTestNew(t, ns)

	consul := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: consul.Addr, Prefix: "svhost-" + suffix + "/"})
	if err != nil {
		t.Fatal(err)
	}
	kv := consul.Client(t).KV()
	// The VLAN names a trunk this host lacks; the Host document for the
	// Engine's hostname points it at the veth.
	vlanKey := store.SpecKey(spec.KindVLAN, vlan)
	if _, err := kv.Put(&api.KVPair{Key: vlanKey, Value: []byte(hostTestVLAN(vlan, 0, "bond0", subnet.String(), ""))}, nil); err != nil {
		t.Fatal(err)
	}
	hostDoc := fmt.Sprintf("apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: %s}\nspec: {trunk: trunk0}\n", info.Name)
	if _, err := kv.Put(&api.KVPair{Key: store.SpecKey(spec.KindHost, info.Name), Value: []byte(hostDoc)}, nil); err != nil {
		t.Fatal(err)
	}
	h := startHostTestAgent(t, store, kv, Config{Docker: d, Net: hn})
	nodeID, _ := h.agent.Identity()
	if nodeID != info.Swarm.NodeID {
		t.Fatalf("node ID %q, engine says %q", nodeID, info.Swarm.NodeID)
	}

	want := func(chunk netip.Prefix) VLAN {
		return VLAN{Name: vlan, Trunk: "trunk0", Promiscuous: true, HostAccess: true, Mode: "bridge",
			Chunk: chunk, ShimAddr: spec.ShimAddress(subnet, chunk)}
	}
	configOK := func(chunk netip.Prefix) error {
		n, err := d.NetworkInspect(ctx, cfgName)
		if err != nil {
			return err
		}
		ipam := n.IPAM.Config
		switch {
		case !n.ConfigOnly || !spec.Managed(n.Labels):
			return fmt.Errorf("%s is not a swarmvlan config-only network: %+v", cfgName, n)
		case n.Options["parent"] != "trunk0":
			return fmt.Errorf("parent %q", n.Options["parent"])
		case len(ipam) != 1 || ipam[0].Subnet != subnet.String() || ipam[0].IPRange != chunk.String() ||
			ipam[0].AuxAddress["shim"] != spec.ShimAddress(subnet, chunk).String():
			return fmt.Errorf("IPAM %+v", ipam)
		}
		return nil
	}
	modifyIndex := func(t *testing.T, key string) uint64 {
		t.Helper()
		p, _, err := kv.Get(key, nil)
		if err != nil || p == nil {
			t.Fatalf("get %s: %v", key, err)
		}
		return p.ModifyIndex
	}

	t.Run("links, shim, route, config network and readiness from KV", func(t *testing.T) {
		h.putAllocation(t, vlan, chunk1.String())
		hostTestEventually(t, 20*time.Second, "kernel state", func() error { return hostTestCheck(nh, want(chunk1)) })
		hostTestEventually(t, 20*time.Second, "config network", func() error { return configOK(chunk1) })
		hostTestEventually(t, 20*time.Second, "ready in KV", func() error { return h.vlanReady(t, vlan, chunk1.String()) })
	})

	t.Run("a reboot is repaired with no KV change", func(t *testing.T) {
		specIndex, allocIndex := modifyIndex(t, vlanKey), modifyIndex(t, store.AllocationKey(vlan, nodeID))
		shim, err := nh.LinkByName(spec.ShimName(vlan))
		if err != nil {
			t.Fatal(err)
		}
		n, err := d.NetworkInspect(ctx, cfgName)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := nh.LinkDel(shim); err != nil {
			t.Fatal(err)
		}
		if err := d.NetworkRemove(ctx, n.ID); err != nil {
			t.Fatal(err)
		}
		hostTestEventually(t, 10*time.Second, "shim back", func() error { return hostTestCheck(nh, want(chunk1)) })
		t.Logf("shim back after %v", time.Since(start).Round(time.Millisecond))
		// The Engine announces no removal of a config-only network; the
		// periodic pass (hostConfigPoll) finds it.
		hostTestEventually(t, configPoll+10*time.Second, "config network back", func() error { return configOK(chunk1) })
		t.Logf("config network back after %v", time.Since(start).Round(time.Millisecond))
		hostTestEventually(t, 10*time.Second, "ready again", func() error { return h.vlanReady(t, vlan, chunk1.String()) })
		if s, a := modifyIndex(t, vlanKey), modifyIndex(t, store.AllocationKey(vlan, nodeID)); s != specIndex || a != allocIndex {
			t.Errorf("KV changed during the repair: spec %d -> %d, allocation %d -> %d", specIndex, s, allocIndex, a)
		}
	})

	t.Run("a new chunk moves the shim, route and config network", func(t *testing.T) {
		h.putAllocation(t, vlan, chunk2.String())
		hostTestEventually(t, 20*time.Second, "config network with the new range", func() error { return configOK(chunk2) })
		hostTestEventually(t, 20*time.Second, "kernel state", func() error { return hostTestCheck(nh, want(chunk2)) })
		if _, routes := hostTestOwned(t, nh, chunk1); len(routes) != 0 {
			t.Errorf("routes to the old chunk remain: %v", routes)
		}
		hostTestEventually(t, 20*time.Second, "ready in KV", func() error { return h.vlanReady(t, vlan, chunk2.String()) })
	})

	t.Run("deleting the VLAN removes links, routes and the config network", func(t *testing.T) {
		if _, err := kv.Delete(vlanKey, nil); err != nil {
			t.Fatal(err)
		}
		hostTestEventually(t, 20*time.Second, "removal", func() error {
			links, routes := hostTestOwned(t, nh, chunk2)
			if len(links) != 0 || len(routes) != 0 {
				return fmt.Errorf("links %v, routes %v remain", links, routes)
			}
			if n, err := engine.FindNetwork(ctx, d, cfgName, networkConfigOwned); err != nil || n != nil {
				return fmt.Errorf("config network still there (%v)", err)
			}
			if trunk, err := nh.LinkByName("trunk0"); err != nil || hostTestPromisc(trunk) {
				return fmt.Errorf("trunk still promiscuous (%v)", err)
			}
			return nil
		})
		hostTestEventually(t, 10*time.Second, "status without the VLAN", func() error {
			_, st, err := h.nodeStatus(t)
			if err != nil {
				return err
			}
			if len(st.VLANs) != 0 || len(st.Removing) != 0 {
				return fmt.Errorf("status %+v", st)
			}
			r, _, err := h.nodeReport(t)
			if err != nil || len(r.VLANs) != 0 {
				return fmt.Errorf("report %+v (%v)", r, err)
			}
			return nil
		})
	})
}

// BenchmarkHostPassNoop50 measures the network reconcile of a host with 50
// VLANs (untagged, host access, allocations present) once everything is in
// place: the kernel in a fresh namespace with 50 veth trunks, the 50 config
// networks in the real Engine, status and readiness in a real Consul. It
// reports the whole pass and its netlink and Docker parts, and fails if a
// pass writes anything anywhere.
func BenchmarkHostPassNoop50(b *testing.B) {
	const n = 50
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates a network namespace and links")
	}
	lab.EnsureSwarm(b)
	d, err := engine.New("")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	ctx := context.Background()
	info, err := d.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	suffix := enginetest.Suffix(b)
	ns, nh := hostTestNS(b)
	hn := hostTestNew(b, ns)
	var docs []string
	chunks := map[string]string{}
	names := make([]string, n)
	for i := range n {
		trunk := fmt.Sprintf("t%d", i)
		hostTestVeth(b, nh, trunk, trunk+"p", true)
		names[i] = fmt.Sprintf("svb%s%d", suffix, i)
		docs = append(docs, hostTestVLAN(names[i], 0, trunk, fmt.Sprintf("10.%d.0.0/16", 100+i), ""))
		chunks[names[i]] = fmt.Sprintf("10.%d.1.0/24", 100+i)
	}
	b.Cleanup(func() {
		for _, name := range names {
			c, err := engine.FindNetwork(ctx, d, spec.ConfigNetworkName(name), networkConfigOwned)
			if err == nil && c != nil && spec.Managed(c.Labels) && c.Labels[spec.LabelName] == name {
				if err := d.NetworkRemove(ctx, c.ID); err != nil {
					b.Errorf("cleanup: remove %s: %v", c.Name, err)
				}
			}
		}
	})
	consul := lab.StartConsul(b)
	store, err := state.New(state.Config{Address: consul.Addr, Prefix: "svbench-" + suffix + "/"})
	if err != nil {
		b.Fatal(err)
	}
	view := newHostTestView(b, docs...)
	a := NewAgent(Config{Store: store, Docker: d, View: view.View, Net: hn, Log: slog.New(slog.DiscardHandler)})
	a.setIdentity(info.Swarm.NodeID, info.Name)
	a.setChunks(chunks)

	if out := a.reconcileNetwork(ctx); out.Err() != nil {
		b.Fatal(out.Err())
	}
	a.mu.Lock()
	report := a.report
	a.mu.Unlock()
	for _, name := range names {
		if r := report.VLANs[name]; !r.Ready {
			b.Fatalf("%s not ready after the first pass: %+v", name, r)
		}
	}
	writes, calls, requests := hn.writes(), d.Calls(), store.Requests()
	var net, docker time.Duration
	for b.Loop() {
		if out := a.reconcileNetwork(ctx); out.Err() != nil || out.After() != 0 {
			b.Fatalf("no-op pass: %+v", out)
		}
		net += a.lastPass.Net
		docker += a.lastPass.Docker
	}
	if w := hn.writes() - writes; w != 0 {
		b.Errorf("no-op passes made %d netlink writes", w)
	}
	for m, c := range d.Calls() {
		if m != "NetworkList" && c != calls[m] {
			b.Errorf("no-op passes made %d Docker %s calls", c-calls[m], m)
		}
	}
	if r := store.Requests() - requests; r != 0 {
		b.Errorf("no-op passes made %d Consul requests", r)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(b.Elapsed()), "ms/op")
	b.ReportMetric(ms(net), "netlink-ms/op")
	b.ReportMetric(ms(docker), "docker-ms/op")
}
