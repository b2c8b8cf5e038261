package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/lab"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
)

func TestSurplusDue(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	two := ServiceStatus{Running: 2, Desired: 1}
	for _, tc := range []struct {
		name   string
		st     ServiceStatus
		global bool
		upd    *swarm.UpdateStatus
		since  time.Time
		now    time.Time
		want   bool
	}{
		{"surplus past the grace, no update ever", two, false, nil, t0, t0.Add(SurplusGrace), true},
		{"surplus past the grace, update completed", two, false, &swarm.UpdateStatus{State: swarm.UpdateStateCompleted}, t0, t0.Add(time.Minute), true},
		{"surplus past the grace, rollback completed", two, false, &swarm.UpdateStatus{State: swarm.UpdateStateRollbackCompleted}, t0, t0.Add(time.Minute), true},
		{"inside the grace", two, false, nil, t0, t0.Add(SurplusGrace - time.Millisecond), false},
		{"not seen before", two, false, nil, time.Time{}, t0, false},
		{"update under way", two, false, &swarm.UpdateStatus{State: swarm.UpdateStateUpdating}, t0, t0.Add(time.Hour), false},
		{"rollback under way", two, false, &swarm.UpdateStatus{State: swarm.UpdateStateRollbackStarted}, t0, t0.Add(time.Hour), false},
		{"update paused", two, false, &swarm.UpdateStatus{State: swarm.UpdateStatePaused}, t0, t0.Add(time.Hour), false},
		{"as many as wanted", ServiceStatus{Running: 1, Desired: 1}, false, nil, t0, t0.Add(time.Hour), false},
		{"fewer than wanted", ServiceStatus{Running: 0, Desired: 1}, false, nil, t0, t0.Add(time.Hour), false},
		{"global", two, true, nil, t0, t0.Add(time.Hour), false},
	} {
		if got := surplusDue(tc.st, tc.global, tc.upd, tc.since, tc.now); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestWatchSurplus: a service that runs more tasks than wanted is updated
// with its own spec once that has lasted SurplusGrace, not while an
// update is under way, at most once per grace, and its record goes when
// the count is right again.
func TestWatchSurplus(t *testing.T) {
	ctx := context.Background()
	f := serviceFakeWorld(t)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	c := New(Config{Docker: f, Now: func() time.Time { return now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	one := uint64(1)
	id, err := f.ServiceCreate(ctx, swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "api"},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: "img:1"}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}}})
	if err != nil {
		t.Fatal(err)
	}
	before := f.ServiceLookup("api").Spec
	st := ServiceStatus{Name: "api", ID: id, Running: 2, Desired: 1}
	step := func(d time.Duration, want bool, why string) {
		t.Helper()
		now = now.Add(d)
		got, err := c.watchSurplus(ctx, "api", st, false)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s: updated %v, want %v", why, got, want)
		}
	}
	step(0, false, "first seen")
	step(SurplusGrace-time.Second, false, "inside the grace")
	f.ServiceLookup("api").UpdateStatus = &swarm.UpdateStatus{State: swarm.UpdateStateUpdating}
	step(2*time.Second, false, "an update under way")
	f.ServiceLookup("api").UpdateStatus = &swarm.UpdateStatus{State: swarm.UpdateStateCompleted}
	calls := f.Calls()["ServiceUpdate"]
	step(time.Second, true, "past the grace, the update completed")
	if n := f.Calls()["ServiceUpdate"] - calls; n != 1 {
		t.Fatalf("%d updates, want 1", n)
	}
	s := f.ServiceLookup("api")
	if s.Version.Index != 2 || !reflect.DeepEqual(s.Spec, before) {
		t.Fatalf("after the update: version %d, spec changed %v; want version 2 and the same spec", s.Version.Index, !reflect.DeepEqual(s.Spec, before))
	}
	step(SurplusGrace/2, false, "again inside the grace after the update")
	step(SurplusGrace, true, "still too many a grace after the update")

	st.Running = 1
	step(time.Second, false, "the count right again")
	c.mu.Lock()
	_, kept := c.surplus["api"]
	c.mu.Unlock()
	if kept {
		t.Fatal("the service's surplus record kept after its count was right")
	}
	st.Running = 2
	step(SurplusGrace+time.Second, false, "too many again: first seen anew")
}

// TestSurplusUpdateRestartsNothing: on the real Engine, the update that
// hands a service back to the orchestrator (its own spec, its version)
// moves the version and leaves its running tasks alone: none replaced,
// none restarted, no update started.
func TestSurplusUpdateRestartsNothing(t *testing.T) {
	d, cli := enginetest.Engine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	two := uint64(2)
	name := "svsurplus" + enginetest.Suffix(t)
	id, err := d.ServiceCreate(ctx, swarm.ServiceSpec{Annotations: swarm.Annotations{Name: name},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: lab.ImageTestApp, Args: []string{"-listen", ":8080"}}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &two}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ServiceRemove(context.Background(), id) })
	running := func() []string {
		tasks, err := d.TaskList(ctx, engine.Filter("service", id, "desired-state", "running"))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, tk := range tasks {
			if tk.Status.State == swarm.TaskStateRunning {
				ids = append(ids, tk.ID)
			}
		}
		sort.Strings(ids)
		return ids
	}
	enginetest.Poll(t, time.Minute, "two tasks running", func() (bool, string) {
		ids := running()
		return len(ids) == 2, fmt.Sprint(ids)
	})
	before := running()
	have, err := d.ServiceInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	c := New(Config{Docker: d, Now: func() time.Time { return now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	st := ServiceStatus{Name: name, ID: id, Running: 3, Desired: 2}
	if done, err := c.watchSurplus(ctx, name, st, false); err != nil || done {
		t.Fatalf("first seen: updated %v, %v", done, err)
	}
	now = now.Add(SurplusGrace)
	if done, err := c.watchSurplus(ctx, name, st, false); err != nil || !done {
		t.Fatalf("past the grace: updated %v, %v; want updated", done, err)
	}
	after, err := d.ServiceInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if after.Version.Index <= have.Version.Index {
		t.Fatalf("version %d after the update, was %d", after.Version.Index, have.Version.Index)
	}
	time.Sleep(5 * time.Second) // what the orchestrator would do, it has done
	if got := running(); !slices.Equal(got, before) {
		t.Fatalf("running tasks %v after the update, were %v", got, before)
	}
	if s, err := d.ServiceInspect(ctx, id); err != nil {
		t.Fatal(err)
	} else if s.UpdateStatus != nil && s.UpdateStatus.State == swarm.UpdateStateUpdating {
		t.Fatalf("an update under way after the service's own spec was sent: %+v", s.UpdateStatus)
	}
}
