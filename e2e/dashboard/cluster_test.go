package dashboard

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hashicorp/consul/api"

	"swarmvlan/reconcile/cluster"
	"swarmvlan/state"
)

// TestClusterModePage renders a VLAN in rangePlan.mode cluster in the
// browser: no chunk map, the pool's use, and a card per node with its
// lease count, shim address and task addresses, a sticky slot's fresh
// address marked.
func TestClusterModePage(t *testing.T) {
	s, err := state.New(state.Config{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	lease := func(addr, node, host, kind string) *api.KVPair {
		return &api.KVPair{Key: s.LeaseKey("pool1", netip.MustParseAddr(addr)), Value: mustJSON(t, state.Lease{Node: node, Hostname: host, Kind: kind, Created: now})}
	}
	det := cluster.ServiceDetails{Service: cluster.ServiceStatus{Name: "api", Desired: 3, Running: 3, Tasks: []cluster.TaskStatus{
		{ID: "t1", Slot: 1, Node: "n1", State: "running", Addresses: map[string]string{"pool1": "10.9.0.10"}},
		{ID: "t2", Slot: 2, Node: "n1", State: "running", Addresses: map[string]string{"pool1": "10.9.0.11"}},
		{ID: "t3", Slot: 3, Node: "n2", State: "running", Addresses: map[string]string{"pool1": "10.9.0.20"}},
	}}}
	pairs := api.KVPairs{
		{Key: s.SpecKey("VLAN", "pool1"), Value: []byte("apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: pool1}\nspec: {trunk: eth1, subnet: 10.9.0.0/26, rangePlan: {mode: cluster}}\n"), ModifyIndex: 1},
		{Key: s.SpecKey("Service", "api"), Value: []byte("apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: api}\nspec: {image: swarmvlan-testapp:dev, networks: [pool1], replicas: 3}\n"), ModifyIndex: 2},
		{Key: s.LeaderKey(), Value: []byte("m1"), Session: "s"},
		{Key: s.NodeKey("n1"), Session: "s1", Value: mustJSON(t, state.NodeReport{Hostname: "h1", Updated: now})},
		{Key: s.NodeKey("n2"), Session: "s2", Value: mustJSON(t, state.NodeReport{Hostname: "h2", Updated: now})},
		{Key: s.StatusKey("services", "api"), Value: mustJSON(t, state.Status{Details: mustJSON(t, det)})},
		{Key: s.StatusKey("vlans", "pool1"), Value: mustJSON(t, state.Status{Conditions: []state.Condition{{Type: "Ready", Status: "True"}},
			Details: mustJSON(t, cluster.VLANDetails{Mode: "cluster", Network: state.NetworkStatus{State: "ready"}})})},
		lease("10.9.0.62", "n1", "h1", state.LeaseShim),
		lease("10.9.0.10", "n1", "h1", state.LeaseTask),
		lease("10.9.0.11", "n1", "h1", state.LeaseTask),
		lease("10.9.0.61", "n2", "h2", state.LeaseShim),
		// Slot 3's task got a fresh address: its own was not free.
		{Key: s.LeaseKey("pool1", netip.MustParseAddr("10.9.0.20")), Value: mustJSON(t, state.Lease{Node: "n2", Hostname: "h2", Kind: state.LeaseTask,
			Created: now, Service: "api", Slot: 3, FreshFor: "10.9.0.5"})},
	}
	url := serveTree(t, s, pairs)
	ctx := newBrowser(t)
	do(t, ctx, time.Minute, "load", chromedp.Navigate(url+"/"))
	waitRendered(t, ctx)
	waitFor(t, ctx, 30*time.Second, "the lease cards", `document.querySelectorAll('[data-vlan="pool1"] [data-leases]').length == 2`)
	type card struct {
		Node  string   `json:"node"`
		Count string   `json:"count"`
		Shim  string   `json:"shim"`
		Addrs []string `json:"addrs"`
	}
	cards := eval[[]card](t, ctx, `[...document.querySelectorAll('[data-vlan="pool1"] [data-leases]')].map(e => ({node: e.dataset.node, count: e.dataset.count,
		shim: (e.querySelector('[data-shim]') || {dataset: {}}).dataset.shim || "", addrs: [...e.querySelectorAll('[data-task-addr]')].map(a => a.dataset.taskAddr)}))`)
	slices.SortFunc(cards, func(a, b card) int { return strings.Compare(a.Node, b.Node) })
	want := []card{{"h1", "2", "10.9.0.62", []string{"10.9.0.10", "10.9.0.11"}}, {"h2", "1", "10.9.0.61", []string{"10.9.0.20"}}}
	if len(cards) != len(want) {
		t.Fatalf("lease cards %+v", cards)
	}
	for i, w := range want {
		g := cards[i]
		if g.Node != w.Node || g.Count != w.Count || g.Shim != w.Shim || !slices.Equal(g.Addrs, w.Addrs) {
			t.Errorf("card %d = %+v, want %+v", i, g, w)
		}
	}
	if slots := eval[int](t, ctx, `document.querySelectorAll('[data-vlan="pool1"] .map .slot').length`); slots != 0 {
		t.Errorf("%d chunk slots drawn for a cluster-mode VLAN", slots)
	}
	// A /26 less the gateway: 61 addresses, 5 leased (3 tasks, 2 shims).
	if pool := eval[string](t, ctx, `document.querySelector('[data-vlan="pool1"] [data-pool]').textContent`); pool != "61 addresses: 5 leased, 0 quarantined, 56 free" {
		t.Errorf("pool line %q", pool)
	}
	if fresh := eval[[]string](t, ctx, `[...document.querySelectorAll('[data-leases] [data-fresh-for]')].map(e => e.closest('[data-task-addr]').dataset.taskAddr + " " + e.dataset.freshFor)`); !slices.Equal(fresh, []string{"10.9.0.20 10.9.0.5"}) {
		t.Errorf("fresh-address marks %q, want slot 3's 10.9.0.20 for 10.9.0.5", fresh)
	}
	viewShot(t, ctx, "cluster-mode-vlan")
}
