package host

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/network"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// Driver option keys Docker's macvlan and ipvlan drivers read.
const (
	networkOptParent = "parent"
	networkOptMTU    = "com.docker.network.driver.mtu"
	// networkAuxShim names the aux address that keeps the host's shim
	// address out of Docker's allocation.
	networkAuxShim = "shim"
)

// networkModeKey is the driver option that carries the mode.
func networkModeKey(driver string) string {
	return spec.VLANDriver(driver) + "_mode"
}

// ConfigNetwork is the per-node --config-only network wanted for one VLAN on
// this node. Swarm builds the VLAN's swarm-scoped network on each node from
// the local config network of the same name, which is how each node hands
// out addresses from its own chunk only.
type ConfigNetwork struct {
	VLAN string
	// Name is the network's Docker name; empty is swarmvlan's own,
	// spec.ConfigNetworkName(VLAN).
	Name   string
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
	// Cluster makes the network's IPAM driver swarmvlan's plugin
	// (spec.IPAMDriver), with the VLAN named in an IPAM option so the
	// plugin maps the pool back to it; IPRange and ShimAddr are then unset:
	// the plugin leases every address from the one pool.
	Cluster bool
}

// ipamDriverOf is the IPAM driver a config network is made with.
func ipamDriverOf(want ConfigNetwork) string {
	if want.Cluster {
		return spec.IPAMDriver
	}
	return "default"
}

// networkConfigWant renders the options and IPAM a config network is created
// with; the planner compares against the same rendering so the two can
// never disagree. The gateway is always sent: Engine 29 gives a macvlan
// network none unless asked, so without one in the document the subnet's
// first address is sent, which is what older Engines chose for a network
// without an ip-range. The IPAM configuration is also recorded in a label
// (spec.LabelIPAM), the one place every Engine reports it back.
func networkConfigWant(want ConfigNetwork) network.CreateOptions {
	opts := map[string]string{
		networkOptParent:            want.Parent,
		networkModeKey(want.Driver): spec.VLANMode(want.Driver, want.Mode),
	}
	if want.MTU > 0 {
		opts[networkOptMTU] = strconv.Itoa(want.MTU)
	}
	ipam := network.IPAMConfig{Subnet: want.Subnet.Masked().String(), Gateway: configGateway(want).String()}
	if want.IPRange.IsValid() {
		ipam.IPRange = want.IPRange.Masked().String()
	}
	if want.ShimAddr.IsValid() {
		ipam.AuxAddress = map[string]string{networkAuxShim: want.ShimAddr.String()}
	}
	labels := spec.OwnerLabels(spec.KindVLAN, want.VLAN)
	labels[spec.LabelDriver] = spec.VLANDriver(want.Driver)
	labels[spec.LabelIPAM] = formatIPAMLabel(ipam)
	var ipamOpts map[string]string
	if want.Cluster {
		labels[spec.LabelIPAMDriver] = spec.IPAMDriver
		ipamOpts = map[string]string{spec.IPAMOptVLAN: want.VLAN}
	}
	// No Scope: the engine refuses operator fields on a config-only
	// network, which is always local.
	return network.CreateOptions{
		ConfigOnly: true,
		Options:    opts,
		IPAM:       &network.IPAM{Driver: ipamDriverOf(want), Options: ipamOpts, Config: []network.IPAMConfig{ipam}},
		Labels:     labels,
	}
}

// name is the config network's Docker name.
func (c ConfigNetwork) name() string {
	if c.Name != "" {
		return c.Name
	}
	return spec.ConfigNetworkName(c.VLAN)
}

// configGateway is the gateway a config network is made with: the
// document's, else the subnet's first address.
func configGateway(want ConfigNetwork) netip.Addr {
	if want.Gateway.IsValid() {
		return want.Gateway
	}
	return want.Subnet.Masked().Addr().Next()
}

// formatIPAMLabel renders an IPAM configuration as the LabelIPAM value:
// "subnet=…,ip-range=…,gateway=…,aux.<name>=…", aux names sorted.
func formatIPAMLabel(c network.IPAMConfig) string {
	parts := []string{"subnet=" + c.Subnet}
	if c.IPRange != "" {
		parts = append(parts, "ip-range="+c.IPRange)
	}
	if c.Gateway != "" {
		parts = append(parts, "gateway="+c.Gateway)
	}
	names := make([]string, 0, len(c.AuxAddress))
	for k := range c.AuxAddress {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		parts = append(parts, "aux."+k+"="+c.AuxAddress[k])
	}
	return strings.Join(parts, ",")
}

// parseIPAMLabel reads a LabelIPAM value back; ok is false for a value
// this version cannot read.
func parseIPAMLabel(v string) (c network.IPAMConfig, ok bool) {
	if v == "" {
		return c, false
	}
	for _, part := range strings.Split(v, ",") {
		k, val, found := strings.Cut(part, "=")
		if !found || val == "" {
			return network.IPAMConfig{}, false
		}
		switch {
		case k == "subnet":
			c.Subnet = val
		case k == "ip-range":
			c.IPRange = val
		case k == "gateway":
			c.Gateway = val
		case strings.HasPrefix(k, "aux.") && len(k) > len("aux."):
			if c.AuxAddress == nil {
				c.AuxAddress = map[string]string{}
			}
			c.AuxAddress[strings.TrimPrefix(k, "aux.")] = val
		default:
			return network.IPAMConfig{}, false
		}
	}
	return c, c.Subnet != ""
}

// configIPAM is the address configuration a config network holds, as far
// as it can be known: what the Engine reports, else (Engine 29 reports
// none for a config-only network) the label it was made with. ok is false
// for a network that carries neither, made by an earlier version on such
// an Engine: its addresses cannot be compared, and it is never re-created
// only for that. n says how many pools the Engine reports.
func configIPAM(ipam network.IPAM, labels map[string]string) (c network.IPAMConfig, n int, ok bool) {
	if len(ipam.Config) > 0 {
		return ipam.Config[0], len(ipam.Config), true
	}
	c, ok = parseIPAMLabel(labels[spec.LabelIPAM])
	return c, 0, ok
}

// networkConfigDiff lists what differs between the wanted config network and
// the one Docker has, one "what: have -> want" entry per difference. The
// gateway is compared only when the document names one, so a network made
// before the gateway was always sent is not re-created for it.
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
	add("driver", have.Labels[spec.LabelDriver], w.Labels[spec.LabelDriver])
	add("parent", have.Options[networkOptParent], w.Options[networkOptParent])
	modeKey := networkModeKey(want.Driver)
	add("mode", have.Options[modeKey], w.Options[modeKey])
	add("mtu", have.Options[networkOptMTU], w.Options[networkOptMTU])
	add("ipam driver", ipamDriverHave(have), ipamDriverOf(want))
	h, pools, ok := configIPAM(have.IPAM, have.Labels)
	if !ok {
		return diff
	}
	wi := w.IPAM.Config[0]
	if pools > 1 {
		diff = append(diff, fmt.Sprintf("%d address pools -> 1", pools))
	}
	add("subnet", h.Subnet, wi.Subnet)
	add("ip-range", h.IPRange, wi.IPRange)
	if want.Gateway.IsValid() {
		add("gateway", h.Gateway, wi.Gateway)
	}
	add("aux shim", h.AuxAddress[networkAuxShim], wi.AuxAddress[networkAuxShim])
	for k := range h.AuxAddress {
		if k != networkAuxShim {
			diff = append(diff, fmt.Sprintf("aux %s %s -> none", k, h.AuxAddress[k]))
		}
	}
	return diff
}

// networkConfigOwned reports whether a config network is swarmvlan's.
func networkConfigOwned(n *network.Inspect) bool { return spec.Managed(n.Labels) }

func networkOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// networkPlanConfig decides what to do with a VLAN's config network. have is
// nil when absent; users counts the running containers on networks made from
// it (only consulted when something must change).
func networkPlanConfig(want ConfigNetwork, have *network.Inspect, users int) reconcile.Plan {
	name := want.name()
	switch {
	case have == nil:
		return reconcile.Plan{Action: reconcile.ActionCreate, Reason: "absent"}
	case !spec.Managed(have.Labels):
		return reconcile.Plan{Action: reconcile.ActionConflict, Reason: (&engine.ConflictError{Kind: "network", Name: name}).Error()}
	}
	diff := networkConfigDiff(want, have)
	switch {
	case len(diff) == 0:
		return reconcile.Plan{Action: reconcile.ActionNone}
	case users > 0:
		return reconcile.Plan{Action: reconcile.ActionBlocked, Reason: fmt.Sprintf("in use by %d containers; drain first (wanted: %s)", users, strings.Join(diff, ", "))}
	}
	return reconcile.Plan{Action: reconcile.ActionRecreate, Reason: strings.Join(diff, ", ")}
}

// networkConfigUsers counts this engine's running containers attached to a
// network made from the config network name. Only running containers hold
// endpoints; Docker itself refuses the removal while any endpoint exists.
func networkConfigUsers(ctx context.Context, d engine.Docker, name string) (int, error) {
	nets, err := d.NetworkList(ctx, engine.Filter())
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
	ctrs, err := d.ContainerList(ctx, engine.Filter())
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
func EnsureConfigNetwork(ctx context.Context, d engine.Docker, want ConfigNetwork) (state.NetworkStatus, error) {
	name := want.name()
	st := state.NetworkStatus{Name: name}
	if !want.Subnet.IsValid() || want.Parent == "" {
		st.State = state.NetworkError
		st.Message = "subnet and parent are required"
		return st, fmt.Errorf("vlan %q: config network: %s", want.VLAN, st.Message)
	}
	have, err := engine.FindNetwork(ctx, d, name, networkConfigOwned)
	if err != nil {
		return st.Failed(err), fmt.Errorf("vlan %q: find config network: %w", want.VLAN, err)
	}
	users := 0
	if have != nil && spec.Managed(have.Labels) && len(networkConfigDiff(want, have)) > 0 {
		if users, err = networkConfigUsers(ctx, d, name); err != nil {
			return st.Failed(err), fmt.Errorf("vlan %q: config network users: %w", want.VLAN, err)
		}
	}
	plan := networkPlanConfig(want, have, users)
	if have != nil {
		st.ID = have.ID
	}
	switch plan.Action {
	case reconcile.ActionNone:
		st.State = state.NetworkReady
		return st, nil
	case reconcile.ActionConflict:
		st.State, st.Message = state.NetworkError, plan.Reason
		return st, fmt.Errorf("vlan %q: %w", want.VLAN, &engine.ConflictError{Kind: "network", Name: name})
	case reconcile.ActionBlocked:
		st.State, st.Message, st.Requeue = state.NetworkInUse, plan.Reason, true
		return st, nil
	case reconcile.ActionRecreate:
		if err := d.NetworkRemove(ctx, have.ID); err != nil {
			if engine.IsInUse(err) {
				st.State, st.Message, st.Requeue = state.NetworkInUse, "in use; drain first: "+err.Error(), true
				return st, nil
			}
			return st.Failed(err), fmt.Errorf("vlan %q: remove config network %s to recreate it: %w", want.VLAN, name, err)
		}
	}
	id, err := d.NetworkCreate(ctx, name, networkConfigWant(want))
	if err != nil {
		return state.NetworkStatus{Name: name}.Failed(err), fmt.Errorf("vlan %q: create config network %s: %w", want.VLAN, name, err)
	}
	st.ID, st.State = id, state.NetworkReady
	st.Message = plan.MadeMessage()
	return st, nil
}

// RemoveConfigNetwork removes this node's config network for a VLAN when it
// is swarmvlan's and no container uses it; otherwise it stays and the status
// says why.
func RemoveConfigNetwork(ctx context.Context, d engine.Docker, vlan string) (state.NetworkStatus, error) {
	return removeConfigNetwork(ctx, d, staleConfig{VLAN: vlan, Name: spec.ConfigNetworkName(vlan)})
}

// removeConfigNetwork removes the config network c of a VLAN gone from
// the spec: swarmvlan's own by its name, or one taken over from a
// hand-made setup by its recorded ID (it carries no labels), when no
// container uses it.
func removeConfigNetwork(ctx context.Context, d engine.Docker, c staleConfig) (state.NetworkStatus, error) {
	vlan, name := c.VLAN, c.Name
	st := state.NetworkStatus{Name: name}
	owned := networkConfigOwned
	if c.AdoptedID != "" {
		owned = func(n *network.Inspect) bool { return n.ID == c.AdoptedID }
	}
	have, err := engine.FindNetwork(ctx, d, name, owned)
	if err != nil {
		return st.Failed(err), fmt.Errorf("vlan %q: find config network: %w", vlan, err)
	}
	if have == nil {
		st.State = state.NetworkAbsent
		return st, nil
	}
	st.ID = have.ID
	if !owned(have) {
		cerr := &engine.ConflictError{Kind: "network", Name: name}
		st.State, st.Message = state.NetworkError, cerr.Error()
		return st, fmt.Errorf("vlan %q: %w", vlan, cerr)
	}
	users, err := networkConfigUsers(ctx, d, name)
	if err != nil {
		return st.Failed(err), fmt.Errorf("vlan %q: config network users: %w", vlan, err)
	}
	if users > 0 {
		st.State, st.Message, st.Requeue = state.NetworkInUse, fmt.Sprintf("in use by %d containers; drain first", users), true
		return st, nil
	}
	return engine.RemoveNetwork(ctx, d, st, have.ID, vlan)
}

// ipamDriverHave is the IPAM driver a config network holds: what the
// Engine reports, else the label it was made with, else Docker's default.
func ipamDriverHave(have *network.Inspect) string {
	if d := have.IPAM.Driver; d != "" && d != "default" {
		return d
	}
	if d := have.Labels[spec.LabelIPAMDriver]; d != "" {
		return d
	}
	return "default"
}

// configNetwork is the config-only network the VLAN needs on this node.
func (w vlanWant) configNetwork() ConfigNetwork {
	if w.Cluster {
		return ConfigNetwork{
			VLAN:    w.Net.Name,
			Driver:  w.Driver,
			Parent:  spec.SubInterfaceName(w.Net.Trunk, w.Net.ID),
			Mode:    w.Net.Mode,
			Subnet:  w.Subnet,
			Gateway: w.Gateway,
			MTU:     w.Net.MTU,
			Cluster: true,
		}
	}
	return ConfigNetwork{
		VLAN:     w.Net.Name,
		Name:     w.ConfigName,
		Driver:   w.Driver,
		Parent:   spec.SubInterfaceName(w.Net.Trunk, w.Net.ID),
		Mode:     w.Net.Mode,
		Subnet:   w.Subnet,
		Gateway:  w.Gateway,
		IPRange:  w.Net.Chunk,
		ShimAddr: w.Net.ShimAddr,
		MTU:      w.Net.MTU,
	}
}

// configState finds want's config network in nets (one list of the
// Engine's networks) and what differs from want. found is false when there
// is none, more than one, or one that is not swarmvlan's: EnsureConfigNetwork
// then decides with a full inspection.
func configState(nets []network.Summary, want ConfigNetwork) (n network.Summary, diff []string, found bool) {
	name := want.name()
	var all []network.Summary
	for _, n := range nets {
		if n.Name == name {
			all = append(all, n)
		}
	}
	if len(all) != 1 || !spec.Managed(all[0].Labels) {
		return network.Summary{}, nil, false
	}
	return all[0], networkConfigDiff(want, &all[0]), true
}

// staleConfig is a config network of a VLAN gone from the spec.
type staleConfig struct {
	VLAN, Name string
	// AdoptedID is the Docker ID of a network taken over from a
	// hand-made setup ("" for swarmvlan's own).
	AdoptedID string
}

// staleConfigNetworks lists the config networks on this Engine whose VLAN
// is no longer in the view: swarmvlan's own (whatever their name, which
// spec.docker.configNetwork may set) of VLANs in known, and those adopted
// (recorded by ID in adopted) for a VLAN. One per VLAN, sorted by VLAN.
func staleConfigNetworks(nets []network.Summary, inView, known map[string]bool, adopted map[string]state.AdoptedNetwork) []staleConfig {
	seen := map[string]bool{}
	var out []staleConfig
	for _, n := range nets {
		if !n.ConfigOnly {
			continue
		}
		c := staleConfig{VLAN: n.Labels[spec.LabelName], Name: n.Name}
		switch rec, ok := adopted[n.ID]; {
		case spec.Managed(n.Labels):
			if n.Labels[spec.LabelKind] != spec.KindVLAN || !known[c.VLAN] {
				continue
			}
		case ok && rec.Role == state.AdoptedConfigNetwork && rec.VLAN != "":
			c.VLAN, c.AdoptedID = rec.VLAN, n.ID
		default:
			continue
		}
		if inView[c.VLAN] || seen[c.VLAN] {
			continue
		}
		seen[c.VLAN] = true
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VLAN < out[j].VLAN })
	return out
}

// configNetworkOf finds the swarmvlan config network of vlan in nets.
func configNetworkOf(nets []network.Summary, vlan string) (network.Summary, bool) {
	for _, n := range nets {
		if n.Name == spec.ConfigNetworkName(vlan) && n.ConfigOnly && spec.Managed(n.Labels) {
			return n, true
		}
	}
	return network.Summary{}, false
}

// vlanFromConfig rebuilds, from a VLAN's config network, the kernel
// state its containers ride on, so that the links of a VLAN removed from
// the spec stay while its config network does, even when this process never
// saw the VLAN's document. A parent "<trunk>.<id>" is read as a tagged VLAN.
// Promiscuous mode is not recorded; it is left on, the default.
func vlanFromConfig(vlan string, n network.Summary) (VLAN, bool) {
	parent := n.Options[networkOptParent]
	if parent == "" {
		return VLAN{}, false
	}
	hv := VLAN{Name: vlan, Trunk: parent, Promiscuous: true, Driver: n.Labels[spec.LabelDriver],
		Mode: n.Options[networkModeKey(n.Labels[spec.LabelDriver])]}
	if i := strings.LastIndexByte(parent, '.'); i > 0 {
		if id, err := strconv.Atoi(parent[i+1:]); err == nil && id >= 1 && id <= 4094 {
			hv.Trunk, hv.ID = parent[:i], id
		}
	}
	if mtu, err := strconv.Atoi(n.Options[networkOptMTU]); err == nil {
		hv.MTU = mtu
	}
	if c, pools, ok := configIPAM(n.IPAM, n.Labels); ok && pools <= 1 {
		if chunk, err := netip.ParsePrefix(c.IPRange); err == nil {
			hv.Chunk = chunk.Masked()
			if shim, err := netip.ParseAddr(c.AuxAddress[networkAuxShim]); err == nil {
				hv.HostAccess, hv.ShimAddr = true, shim
			}
		}
	}
	return hv, true
}

// handMadeConfigNetworks lists the config-only networks with a parent
// interface (macvlan or ipvlan) in nets that swarmvlan did not make, for
// the node report that `reconciler adopt` reads. Sorted by name.
func handMadeConfigNetworks(nets []network.Summary) []state.NodeConfigNetwork {
	var out []state.NodeConfigNetwork
	for _, n := range nets {
		if !n.ConfigOnly || spec.Managed(n.Labels) || n.Options[networkOptParent] == "" {
			continue
		}
		r := state.NodeConfigNetwork{ID: n.ID, Name: n.Name, Parent: n.Options[networkOptParent], Options: n.Options, Pools: len(n.IPAM.Config)}
		if len(n.IPAM.Config) > 0 {
			c := n.IPAM.Config[0]
			r.Subnet, r.IPRange, r.Gateway = c.Subnet, c.IPRange, c.Gateway
			if len(c.AuxAddress) > 0 {
				r.Aux = c.AuxAddress
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// adoptedConfigDiff lists what differs between the wanted config network
// and an adopted one, which is taken over as it was made: its name, its
// labels and its missing aux address are accepted, and only what decides
// the node's addresses is compared (parent, subnet, ip-range). An adopted
// network is never re-created: a difference is reported for the operator
// to fix.
func adoptedConfigDiff(want ConfigNetwork, have network.Summary) []string {
	var diff []string
	add := func(what, h, w string) {
		if h != w {
			diff = append(diff, fmt.Sprintf("%s %s, want %s", what, networkOrNone(h), networkOrNone(w)))
		}
	}
	add("parent", have.Options[networkOptParent], want.Parent)
	if len(have.IPAM.Config) == 0 {
		return append(diff, "no address pool reported")
	}
	c := have.IPAM.Config[0]
	add("subnet", c.Subnet, want.Subnet.Masked().String())
	wr := ""
	if want.IPRange.IsValid() {
		wr = want.IPRange.Masked().String()
	}
	add("ip-range", c.IPRange, wr)
	return diff
}
