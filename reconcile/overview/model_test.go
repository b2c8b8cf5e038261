package overview

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/host"
	"swarmvlan/state"
)

const testVLAN = `apiVersion: swarmvlan/v1
kind: VLAN
metadata: {name: v1}
spec:
  trunk: eth1
  id: 80
  subnet: 10.0.0.0/22
  rangePlan: {chunkPrefix: 24, exclude: [10.0.0.0/24], pinned: {h3: 10.0.3.0/24}}
`

const testService = `apiVersion: swarmvlan/v1
kind: Service
metadata: {name: web}
spec:
  image: nginx
  networks: [v1]
  replicas: 3
  env: {PASSWORD: hunter2}
  scaling: {min: 2, max: 6}
  consul: {port: 80}
`

func testStore(t testing.TB) *state.Store {
	t.Helper()
	s, err := state.New(state.Config{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testPairs is a listing of the prefix: two nodes holding chunks (n2's
// agent gone), a quarantined chunk, the web service with three tasks.
func testPairs(t *testing.T, s *state.Store) api.KVPairs {
	left := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	svcDet := cluster.ServiceDetails{Replicas: 4, Service: cluster.ServiceStatus{Name: "web", Desired: 4, Running: 3, Tasks: []cluster.TaskStatus{
		{ID: "t1", Slot: 1, Node: "n1", State: "running", Addresses: map[string]string{"v1": "10.0.1.2"}},
		{ID: "t2", Slot: 2, Node: "n2", State: "running", Addresses: map[string]string{"v1": "10.0.2.2"}},
		{ID: "t3", Slot: 3, Node: "n1", State: "running"}, // its address only in n1's report
		{ID: "t4", Slot: 4, Node: "n1", State: "pending"},
	}}}
	st := state.Status{Conditions: []state.Condition{{Type: "Ready", Status: "False", Message: "3/4"}}, Details: mustJSON(t, svcDet)}
	hostSt := state.Status{Details: mustJSON(t, host.Status{Hostname: "h1", VLANs: map[string]host.VLANStatus{
		"v1": {Parent: "eth1.80", Link: "ok", Shim: "ok", Route: "ok", ConfigNetwork: "ready", Chunk: "10.0.1.0/24", Ready: true}}})}
	return api.KVPairs{
		{Key: s.SpecKey("VLAN", "v1"), Value: []byte(testVLAN), ModifyIndex: 1},
		{Key: s.SpecKey("Service", "web"), Value: []byte(testService), ModifyIndex: 2},
		{Key: s.LeaderKey(), Value: []byte("m1"), Session: "sess"},
		{Key: s.AllocationKey("v1", "n1"), Value: mustJSON(t, state.Allocation{Chunk: "10.0.1.0/24", Node: "n1", Hostname: "h1"})},
		{Key: s.AllocationKey("v1", "n2"), Value: mustJSON(t, state.Allocation{Chunk: "10.0.2.0/24", Node: "n2", Hostname: "h2"})},
		{Key: s.AllocationKey("v1", "n9"), Value: mustJSON(t, state.Allocation{Chunk: "10.0.3.0/24", Node: "n9", Hostname: "h9", Left: &left})},
		{Key: s.NodeKey("n1"), Session: "s1", Value: mustJSON(t, state.NodeReport{Hostname: "h1", Updated: time.Now().Add(-3 * time.Second),
			VLANs: map[string]state.NodeVLANReport{"v1": {Ready: true, Chunk: "10.0.1.0/24"}}})},
		{Key: s.NodeKey("n2"), Value: []byte(`{"hostname":"h2"}`)}, // no session: not live
		{Key: s.StatusKey("services", "web"), Value: mustJSON(t, st)},
		{Key: s.StatusKey("nodes", "n1"), Value: mustJSON(t, hostSt)},
		// n1 runs t3 and t5 (started since the leader wrote); n2's agent
		// is gone, so t9 of its last report is not shown.
		{Key: s.StatusKey(state.SectionTasks, "n1"), Value: mustJSON(t, state.Status{Details: mustJSON(t, host.TaskReport{Hostname: "h1", Tasks: []host.RunningTask{
			{ID: "t3", Service: "web", Slot: 3, Addresses: map[string]string{"v1": "10.0.1.3", "ingress": "10.255.0.4"}},
			{ID: "t5", Service: "web", Slot: 5, Addresses: map[string]string{"v1": "10.0.1.5"}},
		}})})},
		{Key: s.StatusKey(state.SectionTasks, "n2"), Value: mustJSON(t, state.Status{Details: mustJSON(t, host.TaskReport{Hostname: "h2", Tasks: []host.RunningTask{
			{ID: "t9", Service: "web", Slot: 9, Addresses: map[string]string{"v1": "10.0.2.9"}},
		}})})},
		{Key: s.StatusKey("vlans", "v1"), Value: mustJSON(t, state.Status{LastError: "boom", Details: mustJSON(t, cluster.VLANDetails{Network: state.NetworkStatus{State: "ready"}})})},
		{Key: s.SyncStatusKey(), Value: []byte(`{"repo":"git@x:y","branch":"main","commit":{"hash":"abc123","author":"Ann","message":"web to 4\nmore"},"lastResult":"unchanged","driftMode":"revert","driftCorrections":0}`)},
		{Key: s.ScaleKey("web"), Value: mustJSON(t, state.ScaleIntent{Replicas: 4, Reason: "load", UpdatedBy: "api"})},
	}
}

func TestSourceSnapshot(t *testing.T) {
	s := testStore(t)
	src := NewSource(s, "m2", nil)
	src.SetChecks(map[string]string{host.RegistrationServiceID("web", "t1"): "passing", host.RegistrationServiceID("web", "t2"): "critical"})
	src.SetTree(s.Tree(testPairs(t, s)))
	b, _ := src.Snapshot()
	var o Overview
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	if o.Manager != "m2" || o.Leader != "m1" || !o.Synced {
		t.Errorf("manager %q leader %q synced %v", o.Manager, o.Leader, o.Synced)
	}
	if len(o.VLANs) != 1 {
		t.Fatalf("%d VLANs", len(o.VLANs))
	}
	v := o.VLANs[0]
	type slot struct {
		kind, host, pinned string
		down               bool
		tasks              int
	}
	want := []slot{{"excluded", "", "", false, 0}, {"chunk", "h1", "", false, 3}, {"chunk", "h2", "", true, 1}, {"quarantined", "h9", "h3", false, 0}}
	if len(v.Slots) != len(want) || !v.Drawn {
		t.Fatalf("slots %+v", v.Slots)
	}
	for i, w := range want {
		got := v.Slots[i]
		if g := (slot{got.Kind, got.Hostname, got.PinnedTo, got.Down, len(got.Tasks)}); g != w {
			t.Errorf("slot %d (%s) = %+v, want %+v", i, got.CIDR, g, w)
		}
	}
	if v.Slots[1].Shim != "10.0.1.255" || v.Slots[2].Shim != "10.0.2.255" {
		t.Errorf("shims %q %q", v.Slots[1].Shim, v.Slots[2].Shim)
	}
	if v.Allocated != 2 || v.Quarantined != 1 || v.Free != 0 || v.Excluded != 1 {
		t.Errorf("counts %d/%d/%d/%d", v.Allocated, v.Quarantined, v.Free, v.Excluded)
	}
	if v.Network != "ready" || len(v.Errors) != 1 || v.Errors[0] != "boom" {
		t.Errorf("network %q errors %q", v.Network, v.Errors)
	}
	svc := o.Services[0]
	if svc.Desired != 4 || svc.Running != 3 || svc.Passing != 1 || svc.Replicas != 4 || *svc.SpecReplicas != 3 || svc.Min != 2 || svc.Max != 6 {
		t.Errorf("service counts %+v", svc)
	}
	if svc.Scale == nil || svc.Scale.Source != "api" || svc.Scale.Reason != "load" {
		t.Errorf("scale %+v", svc.Scale)
	}
	if len(svc.Tasks) != 5 || svc.Tasks[1].Hostname != "h2" || !svc.Tasks[1].NodeDown || svc.Tasks[0].NodeDown || svc.Tasks[1].Health != "critical" {
		t.Errorf("tasks %+v", svc.Tasks)
	}
	if t3 := svc.Tasks[2]; t3.ID != "t3" || len(t3.Addresses) != 1 || t3.Addresses["v1"] != "10.0.1.3" {
		t.Errorf("t3 (address from its host's report, its other networks left out) = %+v", t3)
	}
	if t5 := svc.Tasks[4]; t5.ID != "t5" || t5.Node != "n1" || t5.Hostname != "h1" || t5.Addresses["v1"] != "10.0.1.5" {
		t.Errorf("t5 (reported by its host, not yet by the leader) = %+v", t5)
	}
	if len(o.Nodes) != 2 || o.Nodes[0].Hostname != "h1" || !o.Nodes[0].Live || o.Nodes[1].Live {
		t.Fatalf("nodes %+v", o.Nodes)
	}
	nv := o.Nodes[0].VLANs[0]
	if !nv.Ready || nv.Parent != "eth1.80" || nv.ShimAddress != "10.0.1.255" || nv.Trunk != "eth1" || o.Nodes[0].Age < 2 {
		t.Errorf("node vlan %+v age %v", nv, o.Nodes[0].Age)
	}
	if len(o.Activity.Sync) != 1 || o.Activity.Sync[0].Commit != "abc123" || !o.Activity.Sync[0].Ready ||
		o.Activity.Sync[0].Branch != "main" || o.Activity.Sync[0].Message != "web to 4 (Ann)" {
		t.Errorf("sync %+v", o.Activity.Sync)
	}
	if len(o.Activity.Errors) != 1 || o.Activity.Errors[0].Object != "vlans/v1" {
		t.Errorf("errors %+v", o.Activity.Errors)
	}
	if contains(b, "hunter2") || contains(b, "PASSWORD") {
		t.Errorf("snapshot shows an env value: %s", b)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

func TestActivityChanges(t *testing.T) {
	s := testStore(t)
	src := NewSource(s, "m2", nil)
	pairs := testPairs(t, s)
	src.SetTree(s.Tree(pairs))
	// n1's agent goes away; the leader changes.
	var next api.KVPairs
	for _, p := range pairs {
		q := *p
		if q.Key == s.NodeKey("n1") {
			continue
		}
		if q.Key == s.LeaderKey() {
			q.Value = []byte("m3")
		}
		next = append(next, &q)
	}
	src.SetTree(s.Tree(next))
	b, _ := src.Snapshot()
	var o Overview
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range o.Activity.Changes {
		got[c.Object] = c.What
	}
	if got["leader"] != `leader "m1" -> "m3"` || got["node h1"] != "host agent gone" {
		t.Errorf("changes %+v", o.Activity.Changes)
	}
	if !o.VLANs[0].Slots[1].Down {
		t.Errorf("h1's chunk not marked down: %+v", o.VLANs[0].Slots[1])
	}
}

func TestNextPrefix(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.0/24": "10.0.1.0/24", "10.0.255.0/24": "10.1.0.0/24", "10.0.0.192/26": "10.0.1.0/26", "fd00::/64": "fd00:0:0:1::/64"} {
		p := mustPrefix(t, in)
		if got := nextPrefix(p).String(); got != want {
			t.Errorf("nextPrefix(%s) = %s, want %s", in, got, want)
		}
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestClusterModeVLAN: a VLAN in mode cluster is shown by its pool's use
// and each node's leases (count, shim, task addresses), not by chunks.
func TestClusterModeVLAN(t *testing.T) {
	s := testStore(t)
	now := time.Now().UTC()
	released := now.Add(-time.Minute)
	long := now.Add(-time.Hour)
	lease := func(addr string, l state.Lease) *api.KVPair {
		return &api.KVPair{Key: s.LeaseKey("c1", netip.MustParseAddr(addr)), Value: mustJSON(t, l)}
	}
	svcDet := cluster.ServiceDetails{Replicas: 2, Service: cluster.ServiceStatus{Name: "api", Desired: 2, Running: 2, Tasks: []cluster.TaskStatus{
		{ID: "t1", Slot: 1, Node: "n1", State: "running", Addresses: map[string]string{"c1": "10.9.0.10"}},
		{ID: "t2", Slot: 2, Node: "n2", State: "running", Addresses: map[string]string{"c1": "10.9.0.20"}},
	}}}
	pairs := api.KVPairs{
		{Key: s.SpecKey("VLAN", "c1"), Value: []byte("apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: c1}\nspec: {trunk: eth1, subnet: 10.9.0.0/26, rangePlan: {mode: cluster, quarantine: 10m}}\n")},
		{Key: s.SpecKey("Service", "api"), Value: []byte("apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: api}\nspec: {image: nginx, networks: [c1], replicas: 2}\n")},
		{Key: s.NodeKey("n1"), Session: "s1", Value: mustJSON(t, state.NodeReport{Hostname: "h1", Updated: now})},
		{Key: s.StatusKey("services", "api"), Value: mustJSON(t, state.Status{Details: mustJSON(t, svcDet)})},
		{Key: s.StatusKey("vlans", "c1"), Value: mustJSON(t, state.Status{Details: mustJSON(t, cluster.VLANDetails{Mode: "cluster", Network: state.NetworkStatus{State: "ready"}})})},
		lease("10.9.0.62", state.Lease{Node: "n1", Hostname: "h1", Kind: state.LeaseShim}),
		lease("10.9.0.10", state.Lease{Node: "n1", Hostname: "h1", Kind: state.LeaseTask}),
		lease("10.9.0.11", state.Lease{Node: "n1", Hostname: "h1", Kind: state.LeaseTask}), // no task known
		lease("10.9.0.61", state.Lease{Node: "n2", Hostname: "h2", Kind: state.LeaseShim}),
		lease("10.9.0.20", state.Lease{Node: "n2", Hostname: "h2", Kind: state.LeaseTask, Service: "api", Slot: 2, FreshFor: "10.9.0.30"}),
		lease("10.9.0.30", state.Lease{Node: "n1", Kind: state.LeaseTask, Released: &released}), // quarantined
		lease("10.9.0.31", state.Lease{Node: "n1", Kind: state.LeaseTask, Released: &long}),     // quarantine over: free
	}
	tree := s.Tree(pairs)
	if len(tree.Problems) > 0 {
		t.Fatal(tree.Problems)
	}
	src := NewSource(s, "m1", nil)
	src.SetTree(tree)
	b, _ := src.Snapshot()
	var o Overview
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	if len(o.VLANs) != 1 {
		t.Fatalf("%d VLANs", len(o.VLANs))
	}
	v := o.VLANs[0]
	if v.Mode != "cluster" || len(v.Slots) != 0 || v.Pool == nil {
		t.Fatalf("mode %q slots %d pool %v", v.Mode, len(v.Slots), v.Pool)
	}
	// A /26: 62 addresses less the gateway (the first one).
	if want := (PoolUse{Size: 61, Leased: 5, Quarantined: 1, Free: 55}); *v.Pool != want {
		t.Errorf("pool %+v, want %+v", *v.Pool, want)
	}
	if len(v.Leases) != 2 {
		t.Fatalf("leases %+v", v.Leases)
	}
	h1, h2 := v.Leases[0], v.Leases[1]
	if h1.Hostname != "h1" || h1.Down || h1.Shim != "10.9.0.62" || h1.Count != 2 || len(h1.Tasks) != 2 {
		t.Errorf("h1 %+v", h1)
	}
	if h1.Tasks[0].FreshFor != "" || h1.Tasks[0].Address != "10.9.0.10" || h1.Tasks[0].Service != "api" || h1.Tasks[0].Slot != 1 || h1.Tasks[1].Address != "10.9.0.11" || h1.Tasks[1].Service != "" {
		t.Errorf("h1 tasks %+v", h1.Tasks)
	}
	if h2.Hostname != "h2" || !h2.Down || h2.Shim != "10.9.0.61" || h2.Count != 1 || h2.Tasks[0].Service != "api" || h2.Tasks[0].Slot != 2 || h2.Tasks[0].FreshFor != "10.9.0.30" {
		t.Errorf("h2 (agent gone) %+v", h2)
	}
	// The chunk test's VLAN is still shown by chunks.
	tree = s.Tree(testPairs(t, s))
	src.SetTree(tree)
	b, _ = src.Snapshot()
	var oc Overview
	if err := json.Unmarshal(b, &oc); err != nil {
		t.Fatal(err)
	}
	if v := oc.VLANs[0]; v.Mode != "chunks" || v.Pool != nil || v.Leases != nil || len(v.Slots) == 0 {
		t.Errorf("chunks VLAN: mode %q pool %v leases %v slots %d", v.Mode, v.Pool, v.Leases, len(v.Slots))
	}
}
