//go:build linux

package main

import (
	"context"
	"time"

	"golang.org/x/sync/errgroup"

	"swarmvlan/reconcile/host"
	"swarmvlan/reconcile/ipam"
	"swarmvlan/reconcile/kernel"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// startHost starts the host role in g: this node's kernel state for its
// VLANs, its config-only networks, its liveness and readiness in Consul, and
// the registration of its running tasks with the local Consul agent. It
// talks to the kernel through netlink in this process's network namespace;
// without netlink it runs with the kernel left alone and says so. The spec
// watch feeds it through d.hostEnqueue, so it must be called before that
// watch starts.
func (d *daemon) startHost(ctx context.Context, g *errgroup.Group, resync time.Duration) error {
	docker := d.docker
	log := d.log.With("role", "host")
	registrar := &host.Registrar{Agent: d.store.LocalAgent(), Docker: docker}
	var hn *host.Net
	k, err := kernel.Open()
	if err != nil {
		log.Warn("netlink unavailable: host links, shims and routes are not managed", "err", err)
	} else {
		hn = host.NewNet(k)
	}
	var agent *host.Agent
	plugin := ipam.New(ipam.Config{
		Leases: d.store,
		VLAN:   d.view.VLAN,
		VLANs: func() []*spec.VLAN {
			var out []*spec.VLAN
			for _, doc := range d.view.List(spec.KindVLAN) {
				out = append(out, doc.Object.(*spec.VLAN))
			}
			return out
		},
		Sticky: func(name string) bool {
			for _, doc := range d.view.List(spec.KindService) {
				if svc := doc.Object.(*spec.Service); svc.DockerServiceName() == name {
					return svc.Spec.Addresses == spec.AddressesSticky
				}
			}
			return false
		},
		Identity: func() (string, string) { return agent.Identity() },
		Log:      log.With("ipam", "plugin"),
	})
	ipamServer := ipam.NewServer(plugin, d.ipamSocket)
	agent = host.NewAgent(host.Config{
		IPAM:   ipamServer,
		Store:  d.store,
		Docker: docker,
		View:   d.view,
		Net:    hn,
		Log:    log,
		// The leader lock's TTL: one session then serves both.
		NodeTTL: d.leaderOpts.SessionTTL,
		Resync:  resync,
		SyncRegistrations: func(ctx context.Context, services []*spec.Service) error {
			var adopted map[string]state.AdoptedService
			for _, s := range services {
				if s.Spec.DockerName == "" {
					continue
				}
				// Only a service with a Docker name of its own can be
				// adopted: the records are read for those alone.
				var err error
				if adopted, err = d.store.AdoptedServicesList(ctx); err != nil {
					return err
				}
				break
			}
			st, err := registrar.Sync(ctx, host.RegistrationTargetsFor(services, d.view.VLAN, adopted))
			if len(st.Registered)+len(st.Deregistered) > 0 {
				log.Info("consul registrations", "registered", len(st.Registered), "deregistered", len(st.Deregistered), "tasks", len(st.Tasks))
			}
			for _, p := range st.Problems {
				log.Warn("consul registration", "problem", p)
			}
			return err
		},
		RunningTasks: registrar.Running,
	})
	d.hostEnqueue = agent.Enqueue
	g.Go(func() error {
		if hn != nil {
			defer hn.Close()
		}
		defer ipamServer.Close()
		return agent.Run(ctx)
	})
	return nil
}
