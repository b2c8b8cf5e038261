package state

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func taskMeta(node, task string) map[string]string {
	return map[string]string{MetaTask: task, MetaNode: node, MetaService: "web"}
}

func TestLocalAgent(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	s := storeFor(t, a.Addr)
	agent := s.LocalAgent()
	reg := &api.AgentServiceRegistration{
		ID: "swarmvlan-web-t1", Name: "web", Address: "10.40.1.5", Port: 80,
		Meta:  taskMeta("n1", "t1"),
		Check: &api.AgentServiceCheck{TCP: "10.40.1.5:80", Interval: "10s", Timeout: "1s"},
	}
	if err := agent.Register(ctx, reg); err != nil {
		t.Fatal(err)
	}
	if err := agent.Register(ctx, &api.AgentServiceRegistration{ID: "theirs", Name: "theirs"}); err != nil {
		t.Fatal(err)
	}
	checksOf := func(id string) int {
		t.Helper()
		checks, err := a.Client(t).Agent().ChecksWithFilter("ServiceID == " + `"` + id + `"`)
		if err != nil {
			t.Fatal(err)
		}
		return len(checks)
	}

	svcs, err := agent.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := svcs["swarmvlan-web-t1"]
	if got == nil || got.Address != "10.40.1.5" || got.Meta[MetaTask] != "t1" || svcs["theirs"] == nil {
		t.Fatalf("Services = %v; want both registrations, ours with its meta", svcs)
	}
	if n := checksOf(reg.ID); n != 1 {
		t.Fatalf("%d checks on %s, want 1", n, reg.ID)
	}

	t.Run("a registration again replaces its checks", func(t *testing.T) {
		again := *reg
		again.Check = nil
		if err := agent.Register(ctx, &again); err != nil {
			t.Fatal(err)
		}
		if n := checksOf(reg.ID); n != 0 {
			t.Fatalf("%d checks on %s after registering it without one, want 0", n, reg.ID)
		}
	})
	t.Run("deregister, and again", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			if err := agent.Deregister(ctx, reg.ID); err != nil {
				t.Fatalf("Deregister #%d: %v", i+1, err)
			}
		}
		svcs, err := agent.Services(ctx)
		if err != nil || svcs[reg.ID] != nil || svcs["theirs"] == nil {
			t.Fatalf("Services after Deregister = %v, %v; want only theirs", svcs, err)
		}
	})
	t.Run("no agent is an error", func(t *testing.T) {
		down := storeFor(t, "127.0.0.1:1").LocalAgent()
		if _, err := down.Services(ctx); err == nil {
			t.Fatal("Services: nil error")
		}
		if err := down.Deregister(ctx, reg.ID); err == nil {
			t.Fatal("Deregister: nil error")
		}
	})
}

func TestCatalogTasksAndFencedDeregister(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s1, s2 := storeFor(t, a.Addr), storeFor(t, a.Addr)
	// Entries of nodes whose agents are gone, as the catalog keeps them:
	// registered straight into the catalog, so no agent puts them back.
	for _, e := range []struct {
		consulNode, service, id string
		meta                    map[string]string
	}{
		{"lost1", "web", "swarmvlan-web-t1", taskMeta("n1", "t1")},
		{"lost1", "api", "swarmvlan-api-t2", taskMeta("n1", "t2")},
		{"lost2", "web", "swarmvlan-web-t3", taskMeta("n2", "t3")},
		{"lost2", "web", "manual", map[string]string{MetaNode: "n2"}}, // no task: not ours
		{"lost2", "db", "db", nil},
	} {
		_, err := c.Catalog().Register(&api.CatalogRegistration{
			Node: e.consulNode, Address: "10.0.0.1",
			Service: &api.AgentService{ID: e.id, Service: e.service, Meta: e.meta},
			Check:   &api.AgentCheck{CheckID: "check-" + e.id, Name: "task", Status: api.HealthCritical, ServiceID: e.id},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	ids := func(entries []*api.CatalogService) []string {
		var out []string
		for _, e := range entries {
			out = append(out, e.ServiceID)
		}
		slices.Sort(out)
		return out
	}
	tasks, err := s1.CatalogTasks(ctx)
	if want := []string{"swarmvlan-api-t2", "swarmvlan-web-t1", "swarmvlan-web-t3"}; err != nil || !slices.Equal(ids(tasks), want) {
		t.Fatalf("CatalogTasks = %q, %v; want %q", ids(tasks), err, want)
	}
	var t1, t3 *api.CatalogService
	for _, e := range tasks {
		switch e.ServiceID {
		case "swarmvlan-web-t1":
			t1 = e
		case "swarmvlan-web-t3":
			t3 = e
		}
	}
	if t1.Node != "lost1" || t1.ServiceMeta[MetaNode] != "n1" {
		t.Fatalf("t1 entry = %+v", t1)
	}

	l1 := mustLead(t, campaignAsync(ctx, s1, LeaderOptions{Value: []byte("m1")}), 10*time.Second, "m1")
	t.Run("the leader deregisters an entry and its check", func(t *testing.T) {
		if err := l1.DeregisterCatalogEntry(ctx, t1); err != nil {
			t.Fatal(err)
		}
		tasks, err := s1.CatalogTasks(ctx)
		if want := []string{"swarmvlan-api-t2", "swarmvlan-web-t3"}; err != nil || !slices.Equal(ids(tasks), want) {
			t.Fatalf("CatalogTasks = %q, %v; want %q", ids(tasks), err, want)
		}
		checks, _, err := c.Health().Node("lost1", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range checks {
			if ch.ServiceID == t1.ServiceID {
				t.Fatalf("check %s of the deregistered entry is left", ch.CheckID)
			}
		}
		if err := l1.DeregisterCatalogEntry(ctx, t1); err != nil {
			t.Fatalf("deregister an entry already gone: %v", err)
		}
	})

	if _, err := c.Session().Destroy(l1.Session(), nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the deposed leader's context to be cancelled", func() bool { return l1.Context().Err() != nil })
	l2 := mustLead(t, campaignAsync(ctx, s2, LeaderOptions{Value: []byte("m2")}), 10*time.Second, "m2")
	t.Run("a deposed leader deregisters nothing", func(t *testing.T) {
		for _, l := range []*Leadership{l1, lossNotYetSeen(l1)} {
			if err := l.DeregisterCatalogEntry(ctx, t3); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("err = %v, want ErrNotLeader", err)
			}
		}
		tasks, err := s1.CatalogTasks(ctx)
		if want := []string{"swarmvlan-api-t2", "swarmvlan-web-t3"}; err != nil || !slices.Equal(ids(tasks), want) {
			t.Fatalf("CatalogTasks = %q, %v; want %q", ids(tasks), err, want)
		}
	})
	t.Run("its successor does", func(t *testing.T) {
		if err := l2.DeregisterCatalogEntry(ctx, t3); err != nil {
			t.Fatal(err)
		}
		tasks, err := s2.CatalogTasks(ctx)
		if want := []string{"swarmvlan-api-t2"}; err != nil || !slices.Equal(ids(tasks), want) {
			t.Fatalf("CatalogTasks = %q, %v; want %q", ids(tasks), err, want)
		}
	})
}
