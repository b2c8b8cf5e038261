//go:build linux

package main

import (
	"context"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"

	"swarmvlan/reconcile"
)

// startHost starts the host role in g: this node's kernel state for its
// VLANs, its config-only networks, its liveness and readiness in Consul. It
// talks to the Engine at dockerHost ("" = DOCKER_HOST or the local socket)
// and to the kernel through netlink in this process's network namespace;
// without netlink it runs with the kernel left alone and says so. The spec
// watch feeds it through d.hostEnqueue, so it must be called before that
// watch starts.
func (d *daemon) startHost(ctx context.Context, g *errgroup.Group, dockerHost string, resync time.Duration) error {
	docker, err := reconcile.NewDocker(dockerHost)
	if err != nil {
		return err
	}
	log := d.log.With("role", "host")
	var hn *reconcile.HostNet
	nh, err := netlink.NewHandle()
	if err != nil {
		log.Warn("netlink unavailable: host links, shims and routes are not managed", "err", err)
	} else {
		hn = reconcile.NewHostNet(nh)
	}
	agent := reconcile.NewHostAgent(reconcile.HostAgentConfig{
		Store:  d.store,
		Docker: docker,
		View:   d.view,
		Net:    hn,
		Log:    log,
		// The leader lock's TTL: one session then serves both.
		NodeTTL: d.leaderOpts.SessionTTL,
		Resync:  resync,
	})
	d.hostEnqueue = agent.Enqueue
	g.Go(func() error {
		defer docker.Close()
		if nh != nil {
			defer nh.Close()
		}
		return agent.Run(ctx)
	})
	return nil
}
