package cluster

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// SwarmNetwork is the swarm-scoped network for one VLAN, built on every node
// from that node's config network.
type SwarmNetwork struct {
	VLAN   string
	Driver string // macvlan (default) | ipvlan
	// Name and ConfigName are the Docker names of the swarm network and
	// of the config networks it is made from; empty are swarmvlan's own
	// (spec.NetworkName, spec.ConfigNetworkName).
	Name, ConfigName string
	// Adopted are the networks taken over from a hand-made setup, by
	// Docker ID: such a network carries no labels and is swarmvlan's by
	// its record.
	Adopted map[string]state.AdoptedNetwork
}

func (w SwarmNetwork) name() string {
	if w.Name != "" {
		return w.Name
	}
	return spec.NetworkName(w.VLAN)
}

func (w SwarmNetwork) configName() string {
	if w.ConfigName != "" {
		return w.ConfigName
	}
	return spec.ConfigNetworkName(w.VLAN)
}

// owned reports whether n is this VLAN's swarm network (see
// networkSwarmOwned), or its adopted one.
func (w SwarmNetwork) owned(n *network.Inspect) bool {
	return n.ConfigFrom.Network == w.configName() || spec.Managed(n.Labels) ||
		adoptedNetworkOK(w.Adopted, w.VLAN, state.AdoptedSwarmNetwork, n.ID)
}

func networkOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// networkSwarmOwned reports whether a network named after a VLAN is
// swarmvlan's swarm network for it. The engine refuses labels and driver
// options on a network built from a config network ("user specified
// configurations are not supported if the network depends on a
// configuration network"), so the swarm network cannot carry the ownership
// labels: it is swarmvlan's when it is built from the VLAN's config network,
// whose name is swarmvlan's convention and which carries the labels. (Where
// Docker instantiates the swarm network on a node it copies the config
// network's labels onto it, so labels are accepted too.)
func networkSwarmOwned(vlan string, n *network.Inspect) bool {
	return n.ConfigFrom.Network == spec.ConfigNetworkName(vlan) || spec.Managed(n.Labels)
}

// networkSwarmWrong lists what is wrong with a VLAN's swarm network as
// Docker made it. A swarm macvlan network without ConfigFrom silently gets
// a default 172.x range (moby #34203), so ConfigFrom is checked, not
// trusted.
func networkSwarmWrong(want SwarmNetwork, have *network.Inspect) []string {
	var wrong []string
	// The engine reports a swarm network's driver from the allocator's
	// DriverState, which is filled in asynchronously after the create: an
	// empty driver means "not allocated yet", not a wrong one.
	if d := spec.VLANDriver(want.Driver); have.Driver != "" && have.Driver != d {
		wrong = append(wrong, fmt.Sprintf("driver %s, want %s", networkOrNone(have.Driver), d))
	}
	if have.Scope != "swarm" {
		wrong = append(wrong, fmt.Sprintf("scope %s, want swarm", networkOrNone(have.Scope)))
	}
	if cf := want.configName(); have.ConfigFrom.Network != cf {
		wrong = append(wrong, fmt.Sprintf("config-from %s, want %s", networkOrNone(have.ConfigFrom.Network), cf))
	}
	if have.ConfigOnly {
		wrong = append(wrong, "config-only")
	}
	return wrong
}

// networkInspectAllocated inspects a freshly created swarm network, giving
// the swarm allocator a moment to fill in the driver (see networkSwarmWrong).
func networkInspectAllocated(ctx context.Context, d engine.Docker, id string) (network.Inspect, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		made, err := d.NetworkInspect(ctx, id)
		if err != nil || made.Driver != "" || time.Now().After(deadline) {
			return made, err
		}
		select {
		case <-ctx.Done():
			return made, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// networkPlanSwarm decides what to do with a VLAN's swarm network. have is
// nil when absent; users names what uses it (only consulted when something
// must change).
func networkPlanSwarm(want SwarmNetwork, have *network.Inspect, users []string) reconcile.Plan {
	switch {
	case have == nil:
		return reconcile.Plan{Action: reconcile.ActionCreate, Reason: "absent"}
	case !want.owned(have):
		return reconcile.Plan{Action: reconcile.ActionConflict, Reason: (&engine.ConflictError{Kind: "network", Name: want.name()}).Error()}
	}
	wrong := networkSwarmWrong(want, have)
	switch {
	case len(wrong) == 0:
		return reconcile.Plan{Action: reconcile.ActionNone}
	case adoptedNetworkOK(want.Adopted, want.VLAN, state.AdoptedSwarmNetwork, have.ID):
		return reconcile.Plan{Action: reconcile.ActionBlocked, Reason: "adopted network differs: " + strings.Join(wrong, ", ") + "; it is never re-created"}
	case len(users) > 0:
		return reconcile.Plan{Action: reconcile.ActionBlocked, Reason: fmt.Sprintf("in use by %s; drain first (wrong: %s)", networkUsersText(users), strings.Join(wrong, ", "))}
	}
	return reconcile.Plan{Action: reconcile.ActionRecreate, Reason: strings.Join(wrong, ", ")}
}

// networkSwarmUsers names the services whose spec attaches to the network
// and, when no service does, counts live tasks still attached to it (a
// removed service's tasks linger until their containers are gone).
func networkSwarmUsers(ctx context.Context, d engine.Docker, n *network.Inspect) ([]string, error) {
	svcs, err := d.ServiceList(ctx, engine.Filter())
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	var users []string
	for _, s := range svcs {
		// Spec.Networks is deprecated but old clients still set it.
		atts := append(append([]swarm.NetworkAttachmentConfig(nil), s.Spec.TaskTemplate.Networks...), s.Spec.Networks...) //nolint:staticcheck
		for _, a := range atts {
			if a.Target == n.ID || a.Target == n.Name {
				users = append(users, "service "+s.Spec.Name)
				break
			}
		}
	}
	if len(users) > 0 {
		return users, nil
	}
	tasks, err := d.TaskList(ctx, engine.Filter("desired-state", "running"))
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	count := 0
	for _, t := range tasks {
		for _, a := range t.NetworksAttachments {
			if a.Network.ID == n.ID {
				count++
				break
			}
		}
	}
	if count > 0 {
		users = append(users, fmt.Sprintf("%d tasks", count))
	}
	return users, nil
}

// EnsureSwarmNetwork creates the VLAN's swarm-scoped network from the
// config network of the same VLAN. Docker needs that config network on the
// node where the swarm network is created, so without it the status says
// waiting and asks for a requeue. What Docker made is inspected and checked
// (driver, scope, config-from); a wrong network is recreated when unused.
func EnsureSwarmNetwork(ctx context.Context, d engine.Docker, want SwarmNetwork) (state.NetworkStatus, error) {
	st := state.NetworkStatus{Name: want.name()}
	cfgName := want.configName()
	cfgOwned := func(n *network.Inspect) bool {
		return configOwned(n) || adoptedNetworkOK(want.Adopted, want.VLAN, state.AdoptedConfigNetwork, n.ID)
	}
	cfg, err := engine.FindNetwork(ctx, d, cfgName, cfgOwned)
	if err != nil {
		return st.Failed(err), fmt.Errorf("vlan %q: find config network: %w", want.VLAN, err)
	}
	switch {
	case cfg != nil && !cfgOwned(cfg):
		cerr := &engine.ConflictError{Kind: "network", Name: cfgName}
		st.State, st.Message = state.NetworkError, cerr.Error()
		return st, fmt.Errorf("vlan %q: %w", want.VLAN, cerr)
	case cfg == nil || !cfg.ConfigOnly:
		// Not config-only: the host role recreates it (networkConfigDiff).
		st.State, st.Message, st.Requeue = state.NetworkWaiting, fmt.Sprintf("waiting for config network %s on this node", cfgName), true
		return st, nil
	}

	have, err := engine.FindNetwork(ctx, d, want.name(), want.owned)
	if err != nil {
		return st.Failed(err), fmt.Errorf("vlan %q: find swarm network: %w", want.VLAN, err)
	}
	if have != nil {
		st.ID = have.ID
		// The list is a summary; the inspection is what Docker holds.
		if want.owned(have) {
			full, err := d.NetworkInspect(ctx, have.ID)
			if err != nil && !engine.IsNotFound(err) {
				return st.Failed(err), fmt.Errorf("vlan %q: inspect swarm network: %w", want.VLAN, err)
			}
			if err == nil {
				have = &full
			}
		}
	}
	var users []string
	if have != nil && want.owned(have) && len(networkSwarmWrong(want, have)) > 0 {
		if users, err = networkSwarmUsers(ctx, d, have); err != nil {
			return st.Failed(err), fmt.Errorf("vlan %q: swarm network users: %w", want.VLAN, err)
		}
	}
	plan := networkPlanSwarm(want, have, users)
	switch plan.Action {
	case reconcile.ActionNone:
		st.State = state.NetworkReady
		return st, nil
	case reconcile.ActionConflict:
		st.State, st.Message = state.NetworkError, plan.Reason
		return st, fmt.Errorf("vlan %q: %w", want.VLAN, &engine.ConflictError{Kind: "network", Name: want.VLAN})
	case reconcile.ActionBlocked:
		st.State, st.Message, st.Requeue = state.NetworkInUse, plan.Reason, true
		return st, nil
	case reconcile.ActionRecreate:
		if err := d.NetworkRemove(ctx, have.ID); err != nil {
			if engine.IsInUse(err) {
				st.State, st.Message, st.Requeue = state.NetworkInUse, "in use; drain first: "+err.Error(), true
				return st, nil
			}
			return st.Failed(err), fmt.Errorf("vlan %q: remove wrong swarm network: %w", want.VLAN, err)
		}
	}

	// No labels or options: the engine refuses both next to ConfigFrom
	// (see networkSwarmOwned).
	id, err := d.NetworkCreate(ctx, want.name(), network.CreateOptions{
		Driver:     spec.VLANDriver(want.Driver),
		Scope:      "swarm",
		ConfigFrom: &network.ConfigReference{Network: cfgName},
	})
	if err != nil {
		return state.NetworkStatus{Name: want.name()}.Failed(err), fmt.Errorf("vlan %q: create swarm network: %w", want.VLAN, err)
	}
	st.ID = id
	made, err := networkInspectAllocated(ctx, d, id)
	if err != nil {
		return st.Failed(err), fmt.Errorf("vlan %q: inspect created swarm network: %w", want.VLAN, err)
	}
	if made.Driver == "" {
		st.State, st.Message, st.Requeue = state.NetworkWaiting, "created; waiting for swarm to allocate it", true
		return st, nil
	}
	if wrong := networkSwarmWrong(want, &made); len(wrong) > 0 {
		// Docker accepted the request but made something else; remove it so
		// no task ever lands on a network with a default address range.
		rmErr := d.NetworkRemove(ctx, id)
		st.State, st.Message, st.ID = state.NetworkError, "docker made a wrong network: "+strings.Join(wrong, ", "), ""
		if rmErr != nil {
			return st, fmt.Errorf("vlan %q: created swarm network is wrong (%s); remove it: %w", want.VLAN, strings.Join(wrong, ", "), rmErr)
		}
		return st, fmt.Errorf("vlan %q: created swarm network is wrong: %s", want.VLAN, strings.Join(wrong, ", "))
	}
	st.State = state.NetworkReady
	st.Message = plan.MadeMessage()
	return st, nil
}

// RemoveSwarmNetwork removes the VLAN's swarm network when it is
// swarmvlan's (built from the VLAN's config network, see
// networkSwarmOwned) and nothing uses it. While a service (or a lingering task)
// uses it, it stays and the status says "in use by services a, b".
func RemoveSwarmNetwork(ctx context.Context, d engine.Docker, vlan string) (state.NetworkStatus, error) {
	st := state.NetworkStatus{Name: vlan}
	have, err := engine.FindNetwork(ctx, d, vlan, func(n *network.Inspect) bool { return networkSwarmOwned(vlan, n) })
	if err != nil {
		return st.Failed(err), fmt.Errorf("vlan %q: find swarm network: %w", vlan, err)
	}
	if have == nil {
		st.State = state.NetworkAbsent
		return st, nil
	}
	st.ID = have.ID
	if !networkSwarmOwned(vlan, have) {
		cerr := &engine.ConflictError{Kind: "network", Name: vlan}
		st.State, st.Message = state.NetworkError, cerr.Error()
		return st, fmt.Errorf("vlan %q: %w", vlan, cerr)
	}
	users, err := networkSwarmUsers(ctx, d, have)
	if err != nil {
		return st.Failed(err), fmt.Errorf("vlan %q: swarm network users: %w", vlan, err)
	}
	if len(users) > 0 {
		st.State, st.Message, st.Requeue = state.NetworkInUse, "in use by "+networkUsersText(users), true
		return st, nil
	}
	return engine.RemoveNetwork(ctx, d, st, have.ID, vlan)
}

// networkUsersText renders "services a, b" from "service a", "service b".
func networkUsersText(users []string) string {
	var svcs, other []string
	for _, u := range users {
		if name, ok := strings.CutPrefix(u, "service "); ok {
			svcs = append(svcs, name)
		} else {
			other = append(other, u)
		}
	}
	var parts []string
	if len(svcs) > 0 {
		parts = append(parts, "services "+joinSorted(svcs))
	}
	parts = append(parts, other...)
	return strings.Join(parts, ", ")
}

// joinSorted renders names for a status message in a stable order.
func joinSorted(names []string) string {
	s := append([]string(nil), names...)
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// configOwned reports whether a VLAN's config network is swarmvlan's.
func configOwned(n *network.Inspect) bool { return spec.Managed(n.Labels) }
