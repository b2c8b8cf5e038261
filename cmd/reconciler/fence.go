package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile/engine"
	"swarmvlan/state"
)

// fencedDocker is the leader's Docker Engine: every write runs under the
// current leadership's Fence, so a leader that cannot prove it still holds
// the lock writes nothing, and a write in flight is cut off before a
// successor can lead. Reads pass through. Without a leadership (between
// terms) every write is refused.
//
// Every write sent to the Engine is logged ("docker write", with when it
// was sent and how long it took; the line's time is when it returned), so
// the writes of two leaders can be laid side by side.
type fencedDocker struct {
	engine.Docker
	lead atomic.Pointer[state.Leadership]
	// log, if set, gets a line for every write sent.
	log *slog.Logger
}

func (f *fencedDocker) fence(ctx context.Context, verb, object string, write func(ctx context.Context) error) error {
	l := f.lead.Load()
	if l == nil {
		return fmt.Errorf("docker %s: %w", verb, state.ErrNotLeader)
	}
	var sent time.Time
	err := l.Fence(ctx, func(ctx context.Context) error {
		sent = time.Now()
		return write(ctx)
	})
	if f.log != nil && !sent.IsZero() {
		f.log.Info("docker write", "verb", verb, "object", object, "sent", sent.Format(time.RFC3339Nano),
			"took", time.Since(sent).Round(time.Microsecond), "err", err)
	}
	return err
}

// ServiceInspect is the read before a service update: the proof the
// update's fence needs is read meanwhile.
func (f *fencedDocker) ServiceInspect(ctx context.Context, name string) (swarm.Service, error) {
	if l := f.lead.Load(); l != nil {
		l.Prefetch()
	}
	return f.Docker.ServiceInspect(ctx, name)
}

func (f *fencedDocker) NetworkCreate(ctx context.Context, name string, opts network.CreateOptions) (id string, err error) {
	err = f.fence(ctx, "network create", name, func(ctx context.Context) (err error) {
		id, err = f.Docker.NetworkCreate(ctx, name, opts)
		return err
	})
	return id, err
}

func (f *fencedDocker) NetworkRemove(ctx context.Context, id string) error {
	return f.fence(ctx, "network remove", id, func(ctx context.Context) error { return f.Docker.NetworkRemove(ctx, id) })
}

func (f *fencedDocker) ServiceCreate(ctx context.Context, spec swarm.ServiceSpec) (id string, err error) {
	err = f.fence(ctx, "service create", spec.Name, func(ctx context.Context) (err error) {
		id, err = f.Docker.ServiceCreate(ctx, spec)
		return err
	})
	return id, err
}

func (f *fencedDocker) ServiceUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.ServiceSpec) error {
	return f.fence(ctx, "service update", spec.Name, func(ctx context.Context) error { return f.Docker.ServiceUpdate(ctx, id, version, spec) })
}

func (f *fencedDocker) ServiceRemove(ctx context.Context, id string) error {
	return f.fence(ctx, "service remove", id, func(ctx context.Context) error { return f.Docker.ServiceRemove(ctx, id) })
}

func (f *fencedDocker) NodeUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.NodeSpec) error {
	return f.fence(ctx, "node update", id, func(ctx context.Context) error { return f.Docker.NodeUpdate(ctx, id, version, spec) })
}
