package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// coldLeader runs one leadership term of a Cluster on d and reports each
// finished pass over the services on passes; stop ends the term.
func coldLeader(t *testing.T, store *state.Store, d *enginetest.Fake) (passes <-chan error, stop func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	view := reconcile.NewView(store.SpecPrefix())
	c := cluster.New(cluster.Config{Store: store, Docker: d, View: view, Log: log, Resync: time.Hour, Sweep: time.Hour})
	ch := make(chan error, 16)
	c.Controller().OnReconcile = func(kind string, _ time.Duration, err error) {
		if kind == "ServiceResync" {
			ch <- err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		go reconcile.WatchSpec(ctx, store, view, state.WatchOptions{}, c.Enqueue, log)
		lead, err := store.Campaign(ctx, state.LeaderOptions{})
		if err != nil {
			return
		}
		c.Run(lead)
		lead.Resign()
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return ch, stop
}

// statusIndexes are the ModifyIndex of every service status.
func statusIndexes(t *testing.T, kv *api.KV, store *state.Store) map[string]uint64 {
	t.Helper()
	pairs, _, err := kv.List(store.StatusPrefix()+"services/", nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, p := range pairs {
		out[p.Key] = p.ModifyIndex
	}
	return out
}

// TestLeaderStartSettlesServicesInOnePass: a new leader over services
// that already match converges and records them in one pass (one
// ServiceList, no inspect or task list per service, one status read),
// rewrites no status, and a pass that fails as a whole at the start of a
// term hands every service to its own reconcile, whose status says why.
func TestLeaderStartSettlesServicesInOnePass(t *testing.T) {
	const n = 20
	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr, Prefix: "swarmvlan/"})
	if err != nil {
		t.Fatal(err)
	}
	kv := agent.Client(t).KV()
	d := enginetest.NewFake()
	vlan := "vcold"
	if _, err := d.NetworkCreate(context.Background(), vlan, network.CreateOptions{Scope: "swarm", Driver: "macvlan",
		Labels: map[string]string{spec.LabelManaged: "true"}}); err != nil {
		t.Fatal(err)
	}
	var docs []state.SpecDoc
	docs = append(docs, state.SpecDoc{Key: store.SpecKey(spec.KindVLAN, vlan), Value: []byte(leaderTestVLAN(vlan, "eth9", 97))})
	for i := range n {
		name := fmt.Sprintf("cold%02d", i)
		docs = append(docs, state.SpecDoc{Key: store.SpecKey(spec.KindService, name), Value: []byte(leaderTestService(name, vlan, 0, "x"))})
	}
	// One service under a Docker name of its own, whose task never runs
	// (the fake runs none): the pass hands it to its own reconcile, by
	// its document's name.
	named := strings.Replace(leaderTestService("coldnamed", vlan, 1, "x"), "  image:", "  dockerName: cold-docker-name\n  image:", 1)
	docs = append(docs, state.SpecDoc{Key: store.SpecKey(spec.KindService, "coldnamed"), Value: []byte(named)})
	if _, err := store.Apply(context.Background(), docs, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := func() (bool, string) {
		st := statusIndexes(t, kv, store)
		return len(st) == n+1, fmt.Sprintf("%d statuses", len(st))
	}

	// The first leader creates the services (the pass, then each one's
	// own reconcile records it).
	passes, stop := coldLeader(t, store, d)
	enginetest.Poll(t, 20*time.Second, "every service created and its status written", func() (bool, string) {
		if ok, why := ready(); !ok {
			return false, why
		}
		return len(d.Services) == n+1, fmt.Sprintf("%d services", len(d.Services))
	})
	<-passes
	time.Sleep(500 * time.Millisecond) // the services' own reconciles settle
	stop()
	before := statusIndexes(t, kv, store)

	// A new leader: one pass, no per-service Docker call, no status written.
	calls := d.Calls()
	reqs := store.Requests()
	passes, stop = coldLeader(t, store, d)
	select {
	case err := <-passes:
		if err != nil {
			t.Fatalf("first pass: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no pass over the services in 20 s")
	}
	time.Sleep(300 * time.Millisecond)
	after := d.Calls()
	for _, m := range []string{"ServiceList", "ServiceInspect", "TaskList", "ContainerList", "ServiceUpdate", "ServiceCreate", "ServiceRemove"} {
		// ServiceList: the pass, the node labels' and the sweep's; the
		// rest: coldnamed's own reconciles (one every 2 s while its task
		// does not run).
		if got, max := after[m]-calls[m], map[string]uint64{"ServiceList": 3, "ServiceInspect": 1, "TaskList": 2, "ContainerList": 2}[m]; got > max {
			t.Errorf("%s: %d calls, want at most %d", m, got, max)
		}
	}
	if got := statusIndexes(t, kv, store); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("statuses rewritten by the new leader:\n before %v\n after  %v", before, got)
	}
	t.Logf("the new leader's start: %d Consul requests for %d services", store.Requests()-reqs, n)
	stop()

	// A pass that fails as a whole at the start of a term: each service's
	// own reconcile records the error.
	away := make([]error, 1000)
	for i := range away {
		away[i] = errors.New("engine away")
	}
	d.FailNext("ServiceList", away...)
	d.FailNext("ServiceInspect", away...)
	_, stop = coldLeader(t, store, d)
	defer stop()
	enginetest.Poll(t, 20*time.Second, "each service's status to name the error", func() (bool, string) {
		for i := range n {
			var st state.Status
			found, err := store.ReadStatus(context.Background(), "services", fmt.Sprintf("cold%02d", i), &st)
			if err != nil || !found || !strings.Contains(st.LastError, "engine away") {
				return false, fmt.Sprintf("cold%02d: %+v %v", i, st, err)
			}
		}
		return true, ""
	})
}
