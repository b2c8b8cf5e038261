//go:build linux

package host

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/network"

	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// probePrefix begins the name of the short-lived network by which the host
// role reads a hand-made config network's addresses (see handMadePools).
const probePrefix = "swarmvlan-probe-"

// handMadePools completes the address pools of the hand-made config
// networks in report, on an Engine that reports none for a config-only
// network. Engine 29 lists a network's configured pools only once its IPAM
// has allocated them (moby's buildIPAMResources), and a config-only network
// allocates nothing, so its subnet, range and gateway are not shown. A
// network made from it is: each copies the config network's IPAM
// configuration and allocates it. So the pools are read from the node's
// own instance of the swarm network made --config-from it when a task
// runs here, else from a local network made --config-from it for the
// moment of one inspection and removed at once. A config-only network
// cannot change, so what was read is kept by network ID.
func (a *Agent) handMadePools(ctx context.Context, nets []network.Summary, report []state.NodeConfigNetwork) ([]state.NodeConfigNetwork, error) {
	var errs []error
	for _, n := range nets {
		// A probe left behind by a process that died between create and
		// remove: Docker takes no labels on a network made --config-from,
		// so it is known by its name and origin.
		if isProbe(n) {
			if err := a.cfg.Docker.NetworkRemove(ctx, n.ID); err != nil && !engine.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("remove probe network %s: %w", n.Name, err))
			}
		}
	}
	for i := range report {
		r := &report[i]
		if r.Pools > 0 {
			continue
		}
		pools, ok := a.pools[r.ID]
		if !ok {
			for _, n := range nets {
				if n.ConfigFrom.Network == r.Name && !n.ConfigOnly && len(n.IPAM.Config) > 0 {
					pools, ok = n.IPAM.Config, true
					break
				}
			}
		}
		if !ok {
			// A probe that failed is not made again on every pass: each
			// one is a network created and removed, with their events.
			if next, failed := a.probeNext[r.ID]; failed && time.Now().Before(next) {
				continue
			}
			var err error
			if pools, err = a.probePools(ctx, *r); err != nil {
				a.probeNext[r.ID] = time.Now().Add(probeRetry)
				errs = append(errs, err)
				continue
			}
			delete(a.probeNext, r.ID)
		}
		a.pools[r.ID] = pools
		fillPools(r, pools)
	}
	if len(errs) > 0 {
		return report, fmt.Errorf("hand-made config networks: %w", errors.Join(errs...))
	}
	return report, nil
}

// probeRetry is how long a failed probe waits before it is made again.
var probeRetry = time.Minute

// isProbe says whether n is a probe network (see probePools).
func isProbe(n network.Summary) bool {
	return strings.HasPrefix(n.Name, probePrefix) && n.ConfigFrom.Network != "" && !n.ConfigOnly && n.Scope == "local"
}

// probePools reads the pools of hand-made config network r through a
// local network made --config-from it, removed right after.
func (a *Agent) probePools(ctx context.Context, r state.NodeConfigNetwork) ([]network.IPAMConfig, error) {
	driver := spec.DriverMacvlan
	if _, ok := r.Options[networkModeKey(spec.DriverIPvlan)]; ok {
		driver = spec.DriverIPvlan
	}
	id := r.ID
	if len(id) > 12 {
		id = id[:12]
	}
	name := probePrefix + id
	pid, err := a.cfg.Docker.NetworkCreate(ctx, name, network.CreateOptions{Driver: driver,
		ConfigFrom: &network.ConfigReference{Network: r.Name}})
	if err != nil {
		return nil, fmt.Errorf("config network %s: read its addresses through a network made from it: %w", r.Name, err)
	}
	n, ierr := a.cfg.Docker.NetworkInspect(ctx, pid)
	if err := a.cfg.Docker.NetworkRemove(ctx, pid); err != nil && !engine.IsNotFound(err) {
		a.log.Warn("remove probe network", "network", name, "err", err)
	}
	if ierr != nil {
		return nil, fmt.Errorf("config network %s: inspect %s: %w", r.Name, name, ierr)
	}
	if len(n.IPAM.Config) == 0 {
		return nil, fmt.Errorf("config network %s: a network made from it reports no address pool either", r.Name)
	}
	return n.IPAM.Config, nil
}

// fillPools records pools in r as handMadeConfigNetworks does.
func fillPools(r *state.NodeConfigNetwork, pools []network.IPAMConfig) {
	r.Pools = len(pools)
	if len(pools) == 0 {
		return
	}
	c := pools[0]
	r.Subnet, r.IPRange, r.Gateway = c.Subnet, c.IPRange, c.Gateway
	if len(c.AuxAddress) > 0 {
		r.Aux = c.AuxAddress
	}
}
