package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/lab"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/state"
)

// TestFencedDockerWritesOnlyWhileLeading: the leader's Docker refuses every
// write without a leadership, before, between and after terms, without
// calling the Engine; while leading, writes reach it and reads always do.
func TestFencedDockerWritesOnlyWhileLeading(t *testing.T) {
	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	probe := httptest.NewServer(http.HandlerFunc(healthz))
	t.Cleanup(probe.Close)
	fake := enginetest.NewFake()
	f := &fencedDocker{Docker: fake}
	ctx := context.Background()

	writes := map[string]func() error{
		"NetworkCreate": func() error { _, err := f.NetworkCreate(ctx, "n", network.CreateOptions{}); return err },
		"NetworkRemove": func() error { return f.NetworkRemove(ctx, "n") },
		"ServiceCreate": func() error {
			_, err := f.ServiceCreate(ctx, swarm.ServiceSpec{Annotations: swarm.Annotations{Name: fmt.Sprint("s", time.Now().UnixNano())}})
			return err
		},
		"ServiceUpdate": func() error { return f.ServiceUpdate(ctx, "s", swarm.Version{}, swarm.ServiceSpec{}) },
		"ServiceRemove": func() error { return f.ServiceRemove(ctx, "s") },
		"NodeUpdate":    func() error { return f.NodeUpdate(ctx, "node1", swarm.Version{}, swarm.NodeSpec{}) },
	}
	refused := func(when string) {
		t.Helper()
		before := fake.Calls()
		for name, w := range writes {
			if err := w(); !errors.Is(err, state.ErrNotLeader) {
				t.Errorf("%s %s: %v, want ErrNotLeader", when, name, err)
			}
		}
		for name := range writes {
			if got := fake.Calls()[name]; got != before[name] {
				t.Errorf("%s %s reached the Engine", when, name)
			}
		}
	}
	refused("before leading:")
	if _, err := f.ServiceList(ctx, filters.NewArgs()); err != nil {
		t.Errorf("a read without leadership: %v", err)
	}

	lead, err := store.Campaign(ctx, state.LeaderOptions{Value: []byte("a"), Check: &state.LeaderCheck{URL: probe.URL + "/healthz", Owner: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	f.lead.Store(lead)
	if _, err := f.ServiceCreate(ctx, swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "web"}}); err != nil {
		t.Fatalf("ServiceCreate while leading: %v", err)
	}
	if len(fake.Services) != 1 {
		t.Fatalf("the Engine has %d services after a fenced create, want 1", len(fake.Services))
	}
	lead.Resign()
	refused("after resigning, still set:")
	f.lead.Store(nil)
	refused("between terms:")
}
