package reconcile

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/spec"
)

// Network states reported in NetworkStatus.State.
const (
	NetworkReady   = "ready"
	NetworkWaiting = "waiting"
	NetworkInUse   = "in-use"
	NetworkAbsent  = "absent"
	NetworkError   = "error"
)

// Driver option keys Docker's macvlan and ipvlan drivers read.
const (
	networkOptParent = "parent"
	networkOptMTU    = "com.docker.network.driver.mtu"
	// networkAuxShim names the aux address that keeps the host's shim
	// address out of Docker's allocation.
	networkAuxShim = "shim"
)

// NetworkStatus is the observed state of one Docker network.
type NetworkStatus struct {
	Name    string `json:"name"`
	ID      string `json:"id,omitempty"`
	State   string `json:"state"` // ready | waiting | in-use | absent | error
	Message string `json:"message,omitempty"`
	// Requeue asks the caller to look again later: the network is waiting
	// for something outside this call (a config network on this node, tasks
	// to drain).
	Requeue bool `json:"-"`
}

// ConfigNetwork is the per-node --config-only network wanted for one VLAN on
// this node. Swarm builds the VLAN's swarm-scoped network on each node from
// the local config network of the same name, which is how each node hands
// out addresses from its own chunk only.
type ConfigNetwork struct {
	VLAN   string
	Driver string // macvlan (default) | ipvlan
	Parent string // the VLAN sub-interface (or trunk when untagged)
	Mode   string // macvlan: bridge (default) | private | vepa | passthru; ipvlan: l2 (default) | l3
	Subnet netip.Prefix
	// Gateway is left to Docker when invalid.
	Gateway netip.Addr
	// IPRange is this node's chunk; invalid means the whole subnet.
	IPRange netip.Prefix
	// ShimAddr is the host's shim address, kept out of Docker's allocation
	// as the aux address "shim"; invalid means no shim.
	ShimAddr netip.Addr
	MTU      int // 0 = the driver's default
}

// SwarmNetwork is the swarm-scoped network for one VLAN, built on every node
// from that node's config network.
type SwarmNetwork struct {
	VLAN   string
	Driver string // macvlan (default) | ipvlan
}

// NetworkConfigName is the name of a VLAN's per-node config-only network.
func NetworkConfigName(vlan string) string { return vlan + "-config" }

// networkDriver returns the driver, defaulted.
func networkDriver(d string) string {
	if d == "" {
		return "macvlan"
	}
	return d
}

// networkModeKey is the driver option that carries the mode.
func networkModeKey(driver string) string {
	return networkDriver(driver) + "_mode"
}

// networkMode returns the mode, defaulted for the driver.
func networkMode(driver, mode string) string {
	if mode != "" {
		return mode
	}
	if networkDriver(driver) == "ipvlan" {
		return "l2"
	}
	return "bridge"
}

// networkActionKind is what a network plan does.
type networkActionKind int

const (
	networkNone     networkActionKind = iota
	networkCreate                     // absent: create it
	networkRecreate                   // wrong and unused: remove, then create
	networkBlocked                    // wrong but in use: leave it, report, requeue
	networkConflict                   // same name, not ours: leave it, report
)

func (k networkActionKind) String() string {
	return [...]string{"none", "create", "recreate", "blocked", "conflict"}[k]
}

// networkPlan is a planner's decision with the reason for it.
type networkPlan struct {
	Action networkActionKind
	Reason string
}

// networkConfigWant renders the options and IPAM a config network is created
// with; the planner compares against the same rendering so the two can
// never disagree.
func networkConfigWant(want ConfigNetwork) network.CreateOptions {
	opts := map[string]string{
		networkOptParent:            want.Parent,
		networkModeKey(want.Driver): networkMode(want.Driver, want.Mode),
	}
	if want.MTU > 0 {
		opts[networkOptMTU] = strconv.Itoa(want.MTU)
	}
	ipam := network.IPAMConfig{Subnet: want.Subnet.String()}
	if want.IPRange.IsValid() {
		ipam.IPRange = want.IPRange.String()
	}
	if want.Gateway.IsValid() {
		ipam.Gateway = want.Gateway.String()
	}
	if want.ShimAddr.IsValid() {
		ipam.AuxAddress = map[string]string{networkAuxShim: want.ShimAddr.String()}
	}
	labels := dockerOwnerLabels(spec.KindVLAN, want.VLAN)
	labels[DockerLabelDriver] = networkDriver(want.Driver)
	// No Scope: the engine refuses operator fields on a config-only
	// network, which is always local.
	return network.CreateOptions{
		ConfigOnly: true,
		Options:    opts,
		IPAM:       &network.IPAM{Driver: "default", Config: []network.IPAMConfig{ipam}},
		Labels:     labels,
	}
}

// networkConfigDiff lists what differs between the wanted config network and
// the one Docker has, one "what: have -> want" entry per difference.
func networkConfigDiff(want ConfigNetwork, have *network.Inspect) []string {
	w := networkConfigWant(want)
	var diff []string
	add := func(what, h, w string) {
		if h != w {
			diff = append(diff, fmt.Sprintf("%s %s -> %s", what, networkOrNone(h), networkOrNone(w)))
		}
	}
	if !have.ConfigOnly {
		diff = append(diff, "not a config-only network")
	}
	add("driver", have.Labels[DockerLabelDriver], w.Labels[DockerLabelDriver])
	add("parent", have.Options[networkOptParent], w.Options[networkOptParent])
	modeKey := networkModeKey(want.Driver)
	add("mode", have.Options[modeKey], w.Options[modeKey])
	add("mtu", have.Options[networkOptMTU], w.Options[networkOptMTU])
	var h network.IPAMConfig
	if len(have.IPAM.Config) > 0 {
		h = have.IPAM.Config[0]
	}
	wi := w.IPAM.Config[0]
	if len(have.IPAM.Config) > 1 {
		diff = append(diff, fmt.Sprintf("%d address pools -> 1", len(have.IPAM.Config)))
	}
	add("subnet", h.Subnet, wi.Subnet)
	add("ip-range", h.IPRange, wi.IPRange)
	add("gateway", h.Gateway, wi.Gateway)
	add("aux shim", h.AuxAddress[networkAuxShim], wi.AuxAddress[networkAuxShim])
	for k := range h.AuxAddress {
		if k != networkAuxShim {
			diff = append(diff, fmt.Sprintf("aux %s %s -> none", k, h.AuxAddress[k]))
		}
	}
	return diff
}

// networkConfigOwned reports whether a config network is swarmvlan's.
func networkConfigOwned(n *network.Inspect) bool { return dockerManaged(n.Labels) }

func networkOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// networkPlanConfig decides what to do with a VLAN's config network. have is
// nil when absent; users counts the running containers on networks made from
// it (only consulted when something must change).
func networkPlanConfig(want ConfigNetwork, have *network.Inspect, users int) networkPlan {
	name := NetworkConfigName(want.VLAN)
	switch {
	case have == nil:
		return networkPlan{Action: networkCreate, Reason: "absent"}
	case !dockerManaged(have.Labels):
		return networkPlan{Action: networkConflict, Reason: (&DockerConflictError{Kind: "network", Name: name}).Error()}
	}
	diff := networkConfigDiff(want, have)
	switch {
	case len(diff) == 0:
		return networkPlan{Action: networkNone}
	case users > 0:
		return networkPlan{Action: networkBlocked, Reason: fmt.Sprintf("in use by %d containers; drain first (wanted: %s)", users, strings.Join(diff, ", "))}
	}
	return networkPlan{Action: networkRecreate, Reason: strings.Join(diff, ", ")}
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
	return n.ConfigFrom.Network == NetworkConfigName(vlan) || dockerManaged(n.Labels)
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
	if d := networkDriver(want.Driver); have.Driver != "" && have.Driver != d {
		wrong = append(wrong, fmt.Sprintf("driver %s, want %s", networkOrNone(have.Driver), d))
	}
	if have.Scope != "swarm" {
		wrong = append(wrong, fmt.Sprintf("scope %s, want swarm", networkOrNone(have.Scope)))
	}
	if cf := NetworkConfigName(want.VLAN); have.ConfigFrom.Network != cf {
		wrong = append(wrong, fmt.Sprintf("config-from %s, want %s", networkOrNone(have.ConfigFrom.Network), cf))
	}
	if have.ConfigOnly {
		wrong = append(wrong, "config-only")
	}
	return wrong
}

// networkInspectAllocated inspects a freshly created swarm network, giving
// the swarm allocator a moment to fill in the driver (see networkSwarmWrong).
func networkInspectAllocated(ctx context.Context, d Docker, id string) (network.Inspect, error) {
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

// madeMessage is the status message after the plan made its network.
func (p networkPlan) madeMessage() string {
	if p.Action == networkRecreate {
		return "recreated: " + p.Reason
	}
	return "created"
}

// networkPlanSwarm decides what to do with a VLAN's swarm network. have is
// nil when absent; users names what uses it (only consulted when something
// must change).
func networkPlanSwarm(want SwarmNetwork, have *network.Inspect, users []string) networkPlan {
	switch {
	case have == nil:
		return networkPlan{Action: networkCreate, Reason: "absent"}
	case !networkSwarmOwned(want.VLAN, have):
		return networkPlan{Action: networkConflict, Reason: (&DockerConflictError{Kind: "network", Name: want.VLAN}).Error()}
	}
	wrong := networkSwarmWrong(want, have)
	switch {
	case len(wrong) == 0:
		return networkPlan{Action: networkNone}
	case len(users) > 0:
		return networkPlan{Action: networkBlocked, Reason: fmt.Sprintf("in use by %s; drain first (wrong: %s)", networkUsersText(users), strings.Join(wrong, ", "))}
	}
	return networkPlan{Action: networkRecreate, Reason: strings.Join(wrong, ", ")}
}

// networkFind returns the network named exactly name, or nil. Docker's name
// filter matches substrings, so the list is filtered again here; when a
// local and a swarm network share the name, one that owned rejects wins so
// that the caller reports the conflict rather than touching it.
func networkFind(ctx context.Context, d Docker, name string, owned func(*network.Inspect) bool) (*network.Inspect, error) {
	list, err := d.NetworkList(ctx, dockerFilter("name", name))
	if err != nil {
		return nil, err
	}
	var found *network.Inspect
	for i := range list {
		n := &list[i]
		if n.Name != name {
			continue
		}
		if found == nil || !owned(n) {
			found = n
		}
	}
	return found, nil
}

// networkConfigUsers counts this engine's running containers attached to a
// network made from the config network name. Only running containers hold
// endpoints; Docker itself refuses the removal while any endpoint exists.
func networkConfigUsers(ctx context.Context, d Docker, name string) (int, error) {
	nets, err := d.NetworkList(ctx, dockerFilter())
	if err != nil {
		return 0, fmt.Errorf("list networks: %w", err)
	}
	derived := map[string]bool{}
	for _, n := range nets {
		if n.ConfigFrom.Network == name {
			derived[n.ID] = true
			derived[n.Name] = true
		}
	}
	if len(derived) == 0 {
		return 0, nil
	}
	ctrs, err := d.ContainerList(ctx, dockerFilter())
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	users := 0
	for _, c := range ctrs {
		if c.NetworkSettings == nil {
			continue
		}
		for netName, ep := range c.NetworkSettings.Networks {
			if derived[netName] || (ep != nil && derived[ep.NetworkID]) {
				users++
				break
			}
		}
	}
	return users, nil
}

// EnsureConfigNetwork creates this node's config-only network for a VLAN, or
// recreates it when its parent, mode, driver, MTU, subnet, chunk, gateway or
// shim address changed and no container uses it. While containers use it,
// the old one stays and the status says "in use by N containers; drain
// first" with no error: draining is the operator's decision.
func EnsureConfigNetwork(ctx context.Context, d Docker, want ConfigNetwork) (NetworkStatus, error) {
	name := NetworkConfigName(want.VLAN)
	st := NetworkStatus{Name: name}
	if !want.Subnet.IsValid() || want.Parent == "" {
		st.State = NetworkError
		st.Message = "subnet and parent are required"
		return st, fmt.Errorf("vlan %q: config network: %s", want.VLAN, st.Message)
	}
	have, err := networkFind(ctx, d, name, networkConfigOwned)
	if err != nil {
		return networkErrStatus(st, err), fmt.Errorf("vlan %q: find config network: %w", want.VLAN, err)
	}
	users := 0
	if have != nil && dockerManaged(have.Labels) && len(networkConfigDiff(want, have)) > 0 {
		if users, err = networkConfigUsers(ctx, d, name); err != nil {
			return networkErrStatus(st, err), fmt.Errorf("vlan %q: config network users: %w", want.VLAN, err)
		}
	}
	plan := networkPlanConfig(want, have, users)
	if have != nil {
		st.ID = have.ID
	}
	switch plan.Action {
	case networkNone:
		st.State = NetworkReady
		return st, nil
	case networkConflict:
		st.State, st.Message = NetworkError, plan.Reason
		return st, fmt.Errorf("vlan %q: %w", want.VLAN, &DockerConflictError{Kind: "network", Name: name})
	case networkBlocked:
		st.State, st.Message, st.Requeue = NetworkInUse, plan.Reason, true
		return st, nil
	case networkRecreate:
		if err := d.NetworkRemove(ctx, have.ID); err != nil {
			if dockerInUse(err) {
				st.State, st.Message, st.Requeue = NetworkInUse, "in use; drain first: "+err.Error(), true
				return st, nil
			}
			return networkErrStatus(st, err), fmt.Errorf("vlan %q: remove config network %s to recreate it: %w", want.VLAN, name, err)
		}
	}
	id, err := d.NetworkCreate(ctx, name, networkConfigWant(want))
	if err != nil {
		return networkErrStatus(NetworkStatus{Name: name}, err), fmt.Errorf("vlan %q: create config network %s: %w", want.VLAN, name, err)
	}
	st.ID, st.State = id, NetworkReady
	st.Message = plan.madeMessage()
	return st, nil
}

// RemoveConfigNetwork removes this node's config network for a VLAN when it
// is swarmvlan's and no container uses it; otherwise it stays and the status
// says why.
func RemoveConfigNetwork(ctx context.Context, d Docker, vlan string) (NetworkStatus, error) {
	name := NetworkConfigName(vlan)
	st := NetworkStatus{Name: name}
	have, err := networkFind(ctx, d, name, networkConfigOwned)
	if err != nil {
		return networkErrStatus(st, err), fmt.Errorf("vlan %q: find config network: %w", vlan, err)
	}
	if have == nil {
		st.State = NetworkAbsent
		return st, nil
	}
	st.ID = have.ID
	if !dockerManaged(have.Labels) {
		cerr := &DockerConflictError{Kind: "network", Name: name}
		st.State, st.Message = NetworkError, cerr.Error()
		return st, fmt.Errorf("vlan %q: %w", vlan, cerr)
	}
	users, err := networkConfigUsers(ctx, d, name)
	if err != nil {
		return networkErrStatus(st, err), fmt.Errorf("vlan %q: config network users: %w", vlan, err)
	}
	if users > 0 {
		st.State, st.Message, st.Requeue = NetworkInUse, fmt.Sprintf("in use by %d containers; drain first", users), true
		return st, nil
	}
	return networkRemove(ctx, d, st, have.ID, vlan)
}

// networkRemove removes a network and reports the outcome; Docker's own
// in-use refusal (endpoints left, a swarm network still built from the
// config, tasks not yet gone) is a state to wait out, not an error.
func networkRemove(ctx context.Context, d Docker, st NetworkStatus, id, vlan string) (NetworkStatus, error) {
	if err := d.NetworkRemove(ctx, id); err != nil {
		switch {
		case dockerNotFound(err):
			st.State, st.ID = NetworkAbsent, ""
			return st, nil
		case dockerInUse(err):
			st.State, st.Message, st.Requeue = NetworkInUse, err.Error(), true
			return st, nil
		}
		return networkErrStatus(st, err), fmt.Errorf("vlan %q: remove network %s: %w", vlan, st.Name, err)
	}
	st.State, st.ID = NetworkAbsent, ""
	return st, nil
}

func networkErrStatus(st NetworkStatus, err error) NetworkStatus {
	st.State, st.Message = NetworkError, err.Error()
	return st
}

// networkSwarmUsers names the services whose spec attaches to the network
// and, when no service does, counts live tasks still attached to it (a
// removed service's tasks linger until their containers are gone).
func networkSwarmUsers(ctx context.Context, d Docker, n *network.Inspect) ([]string, error) {
	svcs, err := d.ServiceList(ctx, dockerFilter())
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
	tasks, err := d.TaskList(ctx, dockerFilter("desired-state", "running"))
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
func EnsureSwarmNetwork(ctx context.Context, d Docker, want SwarmNetwork) (NetworkStatus, error) {
	st := NetworkStatus{Name: want.VLAN}
	cfgName := NetworkConfigName(want.VLAN)
	cfg, err := networkFind(ctx, d, cfgName, networkConfigOwned)
	if err != nil {
		return networkErrStatus(st, err), fmt.Errorf("vlan %q: find config network: %w", want.VLAN, err)
	}
	switch {
	case cfg != nil && !dockerManaged(cfg.Labels):
		cerr := &DockerConflictError{Kind: "network", Name: cfgName}
		st.State, st.Message = NetworkError, cerr.Error()
		return st, fmt.Errorf("vlan %q: %w", want.VLAN, cerr)
	case cfg == nil || !cfg.ConfigOnly:
		// Not config-only: the host role recreates it (networkConfigDiff).
		st.State, st.Message, st.Requeue = NetworkWaiting, fmt.Sprintf("waiting for config network %s on this node", cfgName), true
		return st, nil
	}

	have, err := networkFind(ctx, d, want.VLAN, func(n *network.Inspect) bool { return networkSwarmOwned(want.VLAN, n) })
	if err != nil {
		return networkErrStatus(st, err), fmt.Errorf("vlan %q: find swarm network: %w", want.VLAN, err)
	}
	if have != nil {
		st.ID = have.ID
		// The list is a summary; the inspection is what Docker holds.
		if networkSwarmOwned(want.VLAN, have) {
			full, err := d.NetworkInspect(ctx, have.ID)
			if err != nil && !dockerNotFound(err) {
				return networkErrStatus(st, err), fmt.Errorf("vlan %q: inspect swarm network: %w", want.VLAN, err)
			}
			if err == nil {
				have = &full
			}
		}
	}
	var users []string
	if have != nil && networkSwarmOwned(want.VLAN, have) && len(networkSwarmWrong(want, have)) > 0 {
		if users, err = networkSwarmUsers(ctx, d, have); err != nil {
			return networkErrStatus(st, err), fmt.Errorf("vlan %q: swarm network users: %w", want.VLAN, err)
		}
	}
	plan := networkPlanSwarm(want, have, users)
	switch plan.Action {
	case networkNone:
		st.State = NetworkReady
		return st, nil
	case networkConflict:
		st.State, st.Message = NetworkError, plan.Reason
		return st, fmt.Errorf("vlan %q: %w", want.VLAN, &DockerConflictError{Kind: "network", Name: want.VLAN})
	case networkBlocked:
		st.State, st.Message, st.Requeue = NetworkInUse, plan.Reason, true
		return st, nil
	case networkRecreate:
		if err := d.NetworkRemove(ctx, have.ID); err != nil {
			if dockerInUse(err) {
				st.State, st.Message, st.Requeue = NetworkInUse, "in use; drain first: "+err.Error(), true
				return st, nil
			}
			return networkErrStatus(st, err), fmt.Errorf("vlan %q: remove wrong swarm network: %w", want.VLAN, err)
		}
	}

	// No labels or options: the engine refuses both next to ConfigFrom
	// (see networkSwarmOwned).
	id, err := d.NetworkCreate(ctx, want.VLAN, network.CreateOptions{
		Driver:     networkDriver(want.Driver),
		Scope:      "swarm",
		ConfigFrom: &network.ConfigReference{Network: cfgName},
	})
	if err != nil {
		return networkErrStatus(NetworkStatus{Name: want.VLAN}, err), fmt.Errorf("vlan %q: create swarm network: %w", want.VLAN, err)
	}
	st.ID = id
	made, err := networkInspectAllocated(ctx, d, id)
	if err != nil {
		return networkErrStatus(st, err), fmt.Errorf("vlan %q: inspect created swarm network: %w", want.VLAN, err)
	}
	if made.Driver == "" {
		st.State, st.Message, st.Requeue = NetworkWaiting, "created; waiting for swarm to allocate it", true
		return st, nil
	}
	if wrong := networkSwarmWrong(want, &made); len(wrong) > 0 {
		// Docker accepted the request but made something else; remove it so
		// no task ever lands on a network with a default address range.
		rmErr := d.NetworkRemove(ctx, id)
		st.State, st.Message, st.ID = NetworkError, "docker made a wrong network: "+strings.Join(wrong, ", "), ""
		if rmErr != nil {
			return st, fmt.Errorf("vlan %q: created swarm network is wrong (%s); remove it: %w", want.VLAN, strings.Join(wrong, ", "), rmErr)
		}
		return st, fmt.Errorf("vlan %q: created swarm network is wrong: %s", want.VLAN, strings.Join(wrong, ", "))
	}
	st.State = NetworkReady
	st.Message = plan.madeMessage()
	return st, nil
}

// RemoveSwarmNetwork removes the VLAN's swarm network when it is
// swarmvlan's (built from the VLAN's config network, see
// networkSwarmOwned) and nothing uses it. While a service (or a lingering task)
// uses it, it stays and the status says "in use by services a, b".
func RemoveSwarmNetwork(ctx context.Context, d Docker, vlan string) (NetworkStatus, error) {
	st := NetworkStatus{Name: vlan}
	have, err := networkFind(ctx, d, vlan, func(n *network.Inspect) bool { return networkSwarmOwned(vlan, n) })
	if err != nil {
		return networkErrStatus(st, err), fmt.Errorf("vlan %q: find swarm network: %w", vlan, err)
	}
	if have == nil {
		st.State = NetworkAbsent
		return st, nil
	}
	st.ID = have.ID
	if !networkSwarmOwned(vlan, have) {
		cerr := &DockerConflictError{Kind: "network", Name: vlan}
		st.State, st.Message = NetworkError, cerr.Error()
		return st, fmt.Errorf("vlan %q: %w", vlan, cerr)
	}
	users, err := networkSwarmUsers(ctx, d, have)
	if err != nil {
		return networkErrStatus(st, err), fmt.Errorf("vlan %q: swarm network users: %w", vlan, err)
	}
	if len(users) > 0 {
		st.State, st.Message, st.Requeue = NetworkInUse, "in use by "+networkUsersText(users), true
		return st, nil
	}
	return networkRemove(ctx, d, st, have.ID, vlan)
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
		parts = append(parts, "services "+dockerJoinSorted(svcs))
	}
	parts = append(parts, other...)
	return strings.Join(parts, ", ")
}
