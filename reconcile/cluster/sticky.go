package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// kindSticky is the leader's pass that reserves sticky addresses for the
// pending tasks of services with addresses: sticky.
const kindSticky = "StickyAddresses"

// stickyPoll is how often the pass looks at pending tasks: the
// reservation must be in Consul between Swarm assigning the replacement
// task to a node and the task's container asking that node's plugin for
// an address (the service's restart delay, Swarm's default 5 s). The
// period is fixed (RequeueAfter, not Poll, whose period doubles while
// nothing changes): Docker has no task events to wake the pass.
var stickyPoll = 250 * time.Millisecond

// pendingSlot is a task of a sticky service that is not running yet, and
// the node Swarm assigned it to.
type pendingSlot struct {
	Slot int
	Node string
}

// planReservations decides, for one sticky service on one VLAN, which
// released leases of its slots to reserve for the node each slot's
// pending task is assigned to, and which reservations to drop (the slot
// has no pending task there any more). Only released leases are reserved:
// a lease still held (its node down but in the swarm) stays its node's.
// Pure.
func planReservations(service string, have map[netip.Addr]state.LeaseEntry, pending []pendingSlot) (reserve map[netip.Addr]string, drop []netip.Addr) {
	want := map[int]string{}
	for _, p := range pending {
		want[p.Slot] = p.Node
	}
	reserve = map[netip.Addr]string{}
	for a, e := range have {
		if e.Service != service || e.Held() {
			continue
		}
		node, ok := want[e.Slot]
		switch {
		case ok && e.ReservedFor != node:
			reserve[a] = node
		case !ok && e.ReservedFor != "":
			drop = append(drop, a)
		}
	}
	return reserve, drop
}

// pendingTask reports whether a task Swarm wants running is not running
// yet (its container has not asked for an address, or is asking).
func pendingTask(t swarm.Task) bool {
	if t.NodeID == "" || (t.DesiredState != swarm.TaskStateRunning && t.DesiredState != swarm.TaskStateReady) {
		return false
	}
	switch t.Status.State {
	case swarm.TaskStateNew, swarm.TaskStatePending, swarm.TaskStateAssigned, swarm.TaskStateAccepted,
		swarm.TaskStatePreparing, swarm.TaskStateReady, swarm.TaskStateStarting:
		return true
	}
	return false
}

// reconcileSticky reserves, for every pending task of a sticky service,
// its slot's released address on each cluster-mode VLAN it uses, for the
// node the task is assigned to.
func (c *Cluster) reconcileSticky(ctx context.Context, _ reconcile.Key, _ *reconcile.Doc) reconcile.Outcome {
	lead, err := c.leadership()
	if err != nil {
		return reconcile.Retry(err)
	}
	some := false
	for _, d := range c.cfg.View.List(spec.KindService) {
		svc := d.Object.(*spec.Service)
		if svc.Spec.Addresses != spec.AddressesSticky {
			continue
		}
		var vlans []string
		for _, n := range svc.Spec.Networks {
			if v, ok := c.cfg.View.VLAN(n); ok && v.RangeMode() == spec.RangeModeCluster {
				vlans = append(vlans, n)
			}
		}
		if len(vlans) == 0 {
			continue
		}
		some = true
		// Swarm's name for the service, which the host role records on the
		// leases (from the task containers' labels).
		dockerName := svc.DockerServiceName()
		tasks, err := c.cfg.Docker.TaskList(ctx, engine.Filter("service", dockerName))
		if err != nil {
			return reconcile.Retry(fmt.Errorf("sticky addresses of %q: list tasks: %w", svc.Metadata.Name, err))
		}
		var pending []pendingSlot
		for _, t := range tasks {
			if pendingTask(t) && t.Slot > 0 {
				pending = append(pending, pendingSlot{Slot: t.Slot, Node: t.NodeID})
				c.cfg.Log.Debug("sticky slot pending", "service", dockerName, "slot", t.Slot, "node", t.NodeID,
					"state", t.Status.State, "desired", t.DesiredState)
			}
		}
		for _, vlan := range vlans {
			have, err := c.cfg.Store.Leases(ctx, vlan)
			if err != nil {
				return reconcile.Retry(fmt.Errorf("sticky addresses of %q: %w", svc.Metadata.Name, err))
			}
			reserve, drop := planReservations(dockerName, have, pending)
			for a, node := range reserve {
				if err := c.setReservation(ctx, lead, vlan, a, have[a], node); err != nil {
					return reconcile.Retry(err)
				}
				c.cfg.Log.Info("sticky address reserved", "vlan", vlan, "service", dockerName, "slot", have[a].Slot, "address", a, "node", node)
			}
			for _, a := range drop {
				if err := c.setReservation(ctx, lead, vlan, a, have[a], ""); err != nil {
					return reconcile.Retry(err)
				}
			}
		}
	}
	if !some {
		return reconcile.RequeueAfter(10 * stickyPoll)
	}
	return reconcile.RequeueAfter(stickyPoll)
}

func (c *Cluster) setReservation(ctx context.Context, lead *state.Leadership, vlan string, a netip.Addr, e state.LeaseEntry, node string) error {
	l := e.Lease
	l.ReservedFor = node
	b, err := state.LeaseValue(l)
	if err != nil {
		return err
	}
	if _, err := lead.CAS(ctx, c.cfg.Store.LeaseKey(vlan, a), b, e.ModifyIndex); err != nil {
		return fmt.Errorf("vlan %q: reserve %s for %q: %w", vlan, a, node, err)
	}
	return nil
}
