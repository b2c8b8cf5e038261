package host

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"swarmvlan/reconcile/kernel"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// VLAN is the kernel state wanted on this host for one VLAN.
type VLAN struct {
	// Name is the VLAN document name, e.g. "vlan40".
	Name string
	// Trunk is the parent interface on this host, already resolved from the
	// Host and VLAN documents.
	Trunk string
	// ID is the 802.1Q tag; 0 uses the trunk itself, untagged.
	ID int
	// MTU of the sub-interface and the shim; 0 leaves it as the kernel made it.
	// The trunk's MTU is never changed: the trunk is not ours.
	MTU int
	// Promiscuous switches promiscuous mode on for the parent in use (and for
	// a tagged VLAN also on the trunk, where its frames arrive).
	Promiscuous bool
	// HostAccess asks for the shim and the route to the chunk through it, so
	// the host reaches its own containers.
	HostAccess bool
	// Driver is the containers' driver: macvlan ("" too) or ipvlan.
	Driver string
	// Mode is the containers' mode ("" is the driver's default). For
	// macvlan the shim is a bridge-mode macvlan whatever the mode, because
	// only bridge-mode siblings on one parent talk to each other without
	// leaving the host; passthru gives the parent to one container alone, so
	// it takes no shim. For ipvlan the shim is an ipvlan link in the same
	// mode: a lower device takes either macvlan or ipvlan links, not both,
	// and its ipvlan links share one mode.
	Mode string
	// Chunk is this node's chunk of the VLAN's subnet. The zero Prefix means
	// no chunk yet: the links are made but the shim gets no address or route.
	Chunk netip.Prefix
	// ShimAddr is the shim's address, the last address of the chunk
	// (computed by the caller, who also keeps it out of Docker's allocation).
	// In cluster mode it is the host's leased shim address.
	ShimAddr netip.Addr
	// Cluster is set for a VLAN in rangePlan.mode cluster: no chunk; the
	// shim holds ShimAddr and routes the addresses of this host's own
	// tasks (TaskRoutes), since any host's task may have any address.
	Cluster    bool
	TaskRoutes []netip.Prefix
	// Shim is the name of a hand-made shim taken over by `reconciler
	// adopt` (ShimAddr is then its address); "" is swarmvlan's own,
	// spec.ShimName(Name). A link of that name that swarmvlan did not make
	// is taken over when it is a bridge-mode macvlan on the parent: it
	// gets swarmvlan's alias and is managed from then on.
	Shim string
	// ShimHold keeps whatever shim swarmvlan manages for the VLAN as it
	// is, neither made nor removed, while it is not known which shim is
	// wanted (the adoption records could not be read).
	ShimHold bool
}

// shimName is the shim's link name.
func (v VLAN) shimName() string {
	if v.Shim != "" {
		return v.Shim
	}
	return spec.ShimName(v.Name)
}

// hasShimAddr says whether the shim gets its address (and routes) yet:
// with a chunk, or in cluster mode with a leased address.
func (v VLAN) hasShimAddr() bool {
	if v.Cluster {
		return v.ShimAddr.IsValid()
	}
	return v.Chunk.IsValid()
}

// shimRoutes are the destinations routed through the shim: the chunk, or
// in cluster mode each of this host's tasks.
func (v VLAN) shimRoutes() []netip.Prefix {
	if v.Cluster {
		return v.TaskRoutes
	}
	if v.Chunk.IsValid() {
		return []netip.Prefix{v.Chunk.Masked()}
	}
	return nil
}

// NetStatus is the observed per-VLAN result for status/nodes/<node>.
type NetStatus struct {
	// Parent is the interface containers ride on: the trunk, or <trunk>.<id>.
	Parent string `json:"parent"`
	// Link is "ok" or what is wrong with the parent.
	Link string `json:"link"`
	// Shim is "ok" or what is wrong with the shim; empty without host access.
	Shim string `json:"shim,omitempty"`
	// Route is "ok" or what is wrong with the route to the chunk; empty
	// without host access.
	Route string `json:"route,omitempty"`
	// Ready is true when everything wanted for the VLAN is in the kernel.
	Ready bool `json:"ready"`
	// Reason is the first problem found, when not Ready.
	Reason string `json:"reason,omitempty"`
}

const (
	// aliasPrefix marks the links this reconciler made; a link whose
	// alias lacks it is never changed or removed. The rest of the alias is
	// the name of the VLAN the link serves.
	aliasPrefix = "swarmvlan:"
	// ifNameMax is IFNAMSIZ less the terminating NUL.
	ifNameMax = 15
	// reasonNo8021Q is the status reason when the kernel cannot make
	// 802.1Q links; it is part of the status contract, so spelled once.
	reasonNo8021Q = kernel.ReasonNo8021Q
	// reasonNoChunk is the shim's status until the node holds a chunk.
	reasonNoChunk = "no chunk allocated yet"
	// reasonPassthruShim is the shim's status on a passthru macvlan VLAN.
	reasonPassthruShim = "no shim with macvlan mode passthru: the parent belongs to one container alone (set hostAccess: false, or use mode bridge)"
	// reasonShimHold is the shim's status while the adoption records
	// cannot be read.
	reasonShimHold = "waiting for the adoption records (state/adopted/shims): the shim is kept as it is"
)

func linkAlias(vlan string) string { return aliasPrefix + vlan }

// linkOp is what one planned step does to the kernel.
type linkOp int

const (
	// linkBlock writes nothing: it records a problem that only the operator,
	// or a later change of the host, can resolve.
	linkBlock linkOp = iota
	linkDelete
	linkCreateVLAN
	linkCreateShim
	linkSetAlias
	linkSetUp
	linkSetMTU
	linkSetPromisc
	linkAddAddr
	linkDelAddr
	linkAddRoute
	linkDelRoute
)

// linkPart is the part of a VLAN's host state an action serves, which is the
// status field its problem is reported in.
type linkPart int

const (
	linkPartLink linkPart = iota
	linkPartShim
	linkPartRoute
)

// linkAction is one step of a plan. Links that exist are named by Index;
// links made earlier in the same plan have Index 0 and are found by Link.
type linkAction struct {
	Op     linkOp
	VLAN   string // the VLAN served; for removals the VLAN named by the alias
	Part   linkPart
	Link   string // the link acted on
	Index  int
	Parent string // create: the parent's name
	VlanID int    // create 802.1Q
	Kind   string // create shim: "macvlan" or "ipvlan"
	Mode   string // create shim: the ipvlan mode
	MTU    int    // create, set MTU
	Alias  string // create, set alias
	On     bool   // set promiscuous
	// Foreign is set when the link is not ours (a trunk): the executor
	// remembers switching promiscuous mode on, so only that may be undone.
	Foreign bool
	Addr    netip.Prefix // address, or a route's destination
	Scope   int          // delete route: as observed
	Proto   int          // delete route: as observed
	Metric  int          // delete route: as observed
	Why     string       // the drift or problem this step answers
}

func (a linkAction) writes() bool { return a.Op != linkBlock }

// verb says what the action does, for errors and status reasons.
func (a linkAction) verb() string {
	switch a.Op {
	case linkBlock:
		return a.Why
	case linkDelete:
		return "delete " + a.Link
	case linkCreateVLAN:
		return fmt.Sprintf("create 802.1Q link %s id %d on %s", a.Link, a.VlanID, a.Parent)
	case linkCreateShim:
		if a.Kind == spec.DriverIPvlan {
			return fmt.Sprintf("create ipvlan %s shim %s on %s", a.Mode, a.Link, a.Parent)
		}
		return fmt.Sprintf("create shim %s on %s", a.Link, a.Parent)
	case linkSetAlias:
		return fmt.Sprintf("set alias %q on %s", a.Alias, a.Link)
	case linkSetUp:
		return "set " + a.Link + " up"
	case linkSetMTU:
		return fmt.Sprintf("set mtu %d on %s", a.MTU, a.Link)
	case linkSetPromisc:
		if a.On {
			return "set promiscuous mode on " + a.Link
		}
		return "set promiscuous mode off " + a.Link
	case linkAddAddr:
		return fmt.Sprintf("add address %s to %s", a.Addr, a.Link)
	case linkDelAddr:
		return fmt.Sprintf("delete address %s from %s", a.Addr, a.Link)
	case linkAddRoute:
		return fmt.Sprintf("add route %s dev %s", a.Addr, a.Link)
	case linkDelRoute:
		return fmt.Sprintf("delete route %s dev %s", a.Addr, a.Link)
	}
	return fmt.Sprintf("op %d on %s", a.Op, a.Link)
}

func linkHasWrites(plan []linkAction) bool {
	for _, a := range plan {
		if a.writes() {
			return true
		}
	}
	return false
}

// sortedVLANs returns want sorted by name without later duplicates, so plans
// and claims do not depend on the caller's order.
func sortedVLANs(want []VLAN) []VLAN {
	out := make([]VLAN, 0, len(want))
	seen := make(map[string]bool, len(want))
	for _, v := range want {
		if seen[v.Name] {
			continue
		}
		seen[v.Name] = true
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// linkPlanner holds the indexes one planning pass needs.
type linkPlanner struct {
	have    kernel.Observed
	byName  map[string]*kernel.Link
	byIndex map[int]*kernel.Link
	// claims maps every link name a wanted VLAN uses (trunks included) to
	// that VLAN; owned links not claimed are removed.
	claims map[string]string
	// linkProblem and shimProblem block a VLAN's parent or shim.
	linkProblem map[string]string
	shimProblem map[string]string
	// promiscNeeded names the trunks some wanted VLAN wants promiscuous.
	promiscNeeded map[string]bool
	trunkDone     map[string]bool
	deleted       map[int]bool
	out           []linkAction
}

// planLinks computes the steps that take the kernel from have to want, for
// the links this reconciler owns, the trunks' up and promiscuous flags, and
// the shims' addresses and routes. It never plans a change to a link whose
// alias lacks aliasPrefix other than bringing a trunk up and switching
// its promiscuous mode; a wanted name held by such a link is reported as a
// linkBlock step instead.
func planLinks(want []VLAN, have kernel.Observed) []linkAction {
	p := &linkPlanner{
		have:          have,
		byName:        make(map[string]*kernel.Link, len(have.Links)),
		byIndex:       make(map[int]*kernel.Link, len(have.Links)),
		claims:        map[string]string{},
		linkProblem:   map[string]string{},
		shimProblem:   map[string]string{},
		promiscNeeded: map[string]bool{},
		trunkDone:     map[string]bool{},
		deleted:       map[int]bool{},
	}
	for i := range have.Links {
		l := &have.Links[i]
		p.byName[l.Name] = l
		p.byIndex[l.Index] = l
	}
	vlans := sortedVLANs(want)
	for _, v := range vlans {
		p.claim(v)
	}
	p.removeUnclaimed()
	for _, v := range vlans {
		p.vlan(v)
	}
	p.releasePromisc()
	return p.out
}

// claim validates v and records the link names it uses.
func (p *linkPlanner) claim(v VLAN) {
	switch {
	case v.Trunk == "":
		p.linkProblem[v.Name] = "no trunk interface given"
	case len(v.Trunk) > ifNameMax:
		p.linkProblem[v.Name] = fmt.Sprintf("trunk name %q is longer than %d bytes", v.Trunk, ifNameMax)
	case v.ID < 0 || v.ID > 4094:
		p.linkProblem[v.Name] = fmt.Sprintf("802.1Q id %d is outside 0-4094", v.ID)
	case v.ID > 0 && len(spec.SubInterfaceName(v.Trunk, v.ID)) > ifNameMax:
		p.linkProblem[v.Name] = fmt.Sprintf("sub-interface name %q is longer than %d bytes", spec.SubInterfaceName(v.Trunk, v.ID), ifNameMax)
	case v.MTU < 0:
		p.linkProblem[v.Name] = fmt.Sprintf("mtu %d is negative", v.MTU)
	}
	if v.Trunk != "" {
		if _, ok := p.claims[v.Trunk]; !ok {
			p.claims[v.Trunk] = v.Name
		}
	}
	if p.linkProblem[v.Name] == "" && v.Promiscuous {
		p.promiscNeeded[v.Trunk] = true
		// A sub-interface someone else made is switched like a trunk.
		p.promiscNeeded[spec.SubInterfaceName(v.Trunk, v.ID)] = true
	}
	if v.ID > 0 && p.linkProblem[v.Name] == "" {
		sub := spec.SubInterfaceName(v.Trunk, v.ID)
		if other, ok := p.claims[sub]; ok {
			// Two VLANs with one tag on one trunk are one broadcast domain;
			// the first by name keeps the sub-interface.
			p.linkProblem[v.Name] = fmt.Sprintf("%s is already used by vlan %q", sub, other)
		} else {
			p.claims[sub] = v.Name
		}
	}
	if !v.HostAccess {
		return
	}
	if v.ShimHold {
		// Every shim-shaped link of the VLAN stays: none is unclaimed.
		for i := range p.have.Links {
			l := &p.have.Links[i]
			if l.Alias == linkAlias(v.Name) && (l.Kind == spec.DriverMacvlan || l.Kind == spec.DriverIPvlan) {
				if _, ok := p.claims[l.Name]; !ok {
					p.claims[l.Name] = v.Name
				}
			}
		}
		p.shimProblem[v.Name] = reasonShimHold
		return
	}
	if spec.VLANDriver(v.Driver) == spec.DriverMacvlan && v.Mode == "passthru" {
		p.shimProblem[v.Name] = reasonPassthruShim
		return
	}
	shim := v.shimName()
	if other, ok := p.claims[shim]; ok {
		p.shimProblem[v.Name] = fmt.Sprintf("shim name %s is already used by %q", shim, other)
	} else {
		p.claims[shim] = v.Name
	}
	if v.Chunk.IsValid() && !v.Cluster && p.shimProblem[v.Name] == "" {
		switch {
		case !v.ShimAddr.IsValid():
			p.shimProblem[v.Name] = fmt.Sprintf("no shim address for chunk %s", v.Chunk)
		case v.Shim != "":
			// An adopted shim keeps its hand-made address, often one
			// outside every node's range.
		case !v.Chunk.Contains(v.ShimAddr):
			p.shimProblem[v.Name] = fmt.Sprintf("shim address %s is not in chunk %s", v.ShimAddr, v.Chunk)
		}
	}
}

// removeUnclaimed deletes owned links no wanted VLAN uses: shims first, as
// deleting a sub-interface takes its macvlan children with it.
func (p *linkPlanner) removeUnclaimed() {
	var gone []*kernel.Link
	for i := range p.have.Links {
		l := &p.have.Links[i]
		if _, claimed := p.claims[l.Name]; linkOwned(l) && !claimed {
			gone = append(gone, l)
		}
	}
	sort.SliceStable(gone, func(i, j int) bool {
		return gone[i].Kind == "macvlan" && gone[j].Kind != "macvlan"
	})
	for _, l := range gone {
		vlan := strings.TrimPrefix(l.Alias, aliasPrefix)
		if child := p.foreignChild(l.Index); child != "" {
			// The kernel would delete the child with its parent, and the
			// child is not ours: keep the parent until the child is gone.
			p.out = append(p.out, linkAction{Op: linkBlock, VLAN: vlan, Link: l.Name, Index: l.Index,
				Why: fmt.Sprintf("keep %s: %s, which swarmvlan does not manage, rides on it", l.Name, child)})
			continue
		}
		p.markDeleted(l.Index)
		p.out = append(p.out, linkAction{Op: linkDelete, VLAN: vlan, Link: l.Name, Index: l.Index,
			Why: fmt.Sprintf("%s is no longer wanted", l.Name)})
	}
}

// markDeleted records that index goes, and with it, as the kernel does it,
// every link stacked on it.
func (p *linkPlanner) markDeleted(index int) {
	if p.deleted[index] {
		return
	}
	p.deleted[index] = true
	for i := range p.have.Links {
		if l := &p.have.Links[i]; l.ParentIndex == index && l.Index != index {
			p.markDeleted(l.Index)
		}
	}
}

func (p *linkPlanner) foreignChild(index int) string {
	for i := range p.have.Links {
		l := &p.have.Links[i]
		if l.ParentIndex == index && l.Index != index && !linkOwned(l) {
			return l.Name
		}
	}
	return ""
}

func (p *linkPlanner) add(v VLAN, part linkPart, a linkAction) {
	a.VLAN, a.Part = v.Name, part
	p.out = append(p.out, a)
}

func (p *linkPlanner) block(v VLAN, part linkPart, why string) {
	p.add(v, part, linkAction{Op: linkBlock, Why: why})
}

// waitShim reports the shim and route of v as waiting on its parent.
func (p *linkPlanner) waitShim(v VLAN, why string) {
	if v.HostAccess {
		p.block(v, linkPartShim, why)
		p.block(v, linkPartRoute, why)
	}
}

func collision(name, vlan string) string {
	return fmt.Sprintf("link %s exists and is not managed by swarmvlan (delete it, or set its alias to %q to hand it over)", name, linkAlias(vlan))
}

func (p *linkPlanner) vlan(v VLAN) {
	if why := p.linkProblem[v.Name]; why != "" {
		p.block(v, linkPartLink, why)
		p.waitShim(v, "waiting for parent "+spec.SubInterfaceName(v.Trunk, v.ID))
		return
	}
	trunk := p.byName[v.Trunk]
	if trunk == nil {
		p.block(v, linkPartLink, fmt.Sprintf("trunk %s not found", v.Trunk))
		p.waitShim(v, "waiting for parent "+spec.SubInterfaceName(v.Trunk, v.ID))
		return
	}
	if v.MTU > trunk.MTU {
		// The kernel refuses an 802.1Q or macvlan MTU above the lower
		// device's, and the trunk is not ours to change.
		p.block(v, linkPartLink, fmt.Sprintf("mtu %d exceeds trunk %s mtu %d", v.MTU, trunk.Name, trunk.MTU))
		p.waitShim(v, "waiting for parent "+spec.SubInterfaceName(v.Trunk, v.ID))
		return
	}
	p.trunk(v, trunk)

	parent, parentIndex, parentNew := trunk.Name, trunk.Index, false
	if v.ID > 0 {
		name := spec.SubInterfaceName(v.Trunk, v.ID)
		sub := p.byName[name]
		if sub != nil && !linkOwned(sub) {
			if !isSubInterface(sub, trunk, v.ID) {
				p.block(v, linkPartLink, collision(name, v.Name))
				p.waitShim(v, "waiting for parent "+name)
				return
			}
			// The very link wanted, made by someone else: Docker's macvlan
			// and ipvlan drivers make <trunk>.<id> when a network's parent
			// is missing, and delete it with the network. It is used like
			// a trunk: brought up and switched promiscuous, never
			// renamed, resized or deleted.
			if v.MTU > sub.MTU {
				p.block(v, linkPartLink, fmt.Sprintf("mtu %d exceeds %s mtu %d (%s is not managed by swarmvlan)", v.MTU, name, sub.MTU, name))
				p.waitShim(v, "waiting for parent "+name)
				return
			}
			p.trunk(v, sub)
			p.shim(v, name, sub.Index, false)
			return
		}
		if sub != nil && !isSubInterface(sub, trunk, v.ID) {
			p.add(v, linkPartLink, linkAction{Op: linkDelete, Link: name, Index: sub.Index,
				Why: fmt.Sprintf("%s is not an 802.1Q link on %s with id %d", name, trunk.Name, v.ID)})
			p.markDeleted(sub.Index)
			sub = nil
		}
		if sub == nil {
			p.add(v, linkPartLink, linkAction{Op: linkCreateVLAN, Link: name, Parent: trunk.Name,
				VlanID: v.ID, MTU: v.MTU, Alias: linkAlias(v.Name), Why: name + " missing"})
			if v.Promiscuous {
				p.add(v, linkPartLink, linkAction{Op: linkSetPromisc, Link: name, On: true,
					Why: "promiscuous mode off on " + name})
			}
			parentNew = true
		} else {
			p.repair(v, linkPartLink, sub)
			if sub.Promisc != v.Promiscuous {
				p.add(v, linkPartLink, linkAction{Op: linkSetPromisc, Link: name, Index: sub.Index, On: v.Promiscuous,
					Why: fmt.Sprintf("promiscuous mode on %s is %s", name, onOff(sub.Promisc))})
			}
			parentIndex = sub.Index
		}
		parent = name
	}
	p.shim(v, parent, parentIndex, parentNew)
}

// isSubInterface says whether l is the 802.1Q link with id on trunk.
func isSubInterface(l, trunk *kernel.Link, id int) bool {
	return l.Kind == "vlan" && l.ParentIndex == trunk.Index && l.VlanID == id
}

// trunk brings the trunk up and, when wanted, promiscuous; once per trunk.
func (p *linkPlanner) trunk(v VLAN, t *kernel.Link) {
	if p.trunkDone[t.Name] {
		return
	}
	p.trunkDone[t.Name] = true
	if !t.Up {
		p.add(v, linkPartLink, linkAction{Op: linkSetUp, Link: t.Name, Index: t.Index, Foreign: !linkOwned(t),
			Why: "trunk " + t.Name + " is down"})
	}
	if p.promiscNeeded[t.Name] && !t.Promisc {
		p.add(v, linkPartLink, linkAction{Op: linkSetPromisc, Link: t.Name, Index: t.Index, On: true, Foreign: !linkOwned(t),
			Why: "promiscuous mode off on trunk " + t.Name})
	}
}

// repair sets alias, MTU and up on an owned link that otherwise is right.
func (p *linkPlanner) repair(v VLAN, part linkPart, l *kernel.Link) {
	if l.Alias != linkAlias(v.Name) {
		p.add(v, part, linkAction{Op: linkSetAlias, Link: l.Name, Index: l.Index, Alias: linkAlias(v.Name),
			Why: fmt.Sprintf("%s has alias %q", l.Name, l.Alias)})
	}
	if v.MTU > 0 && l.MTU != v.MTU {
		p.add(v, part, linkAction{Op: linkSetMTU, Link: l.Name, Index: l.Index, MTU: v.MTU,
			Why: fmt.Sprintf("%s has mtu %d, not %d", l.Name, l.MTU, v.MTU)})
	}
	if !l.Up {
		p.add(v, part, linkAction{Op: linkSetUp, Link: l.Name, Index: l.Index, Why: l.Name + " is down"})
	}
}

func (p *linkPlanner) shim(v VLAN, parent string, parentIndex int, parentNew bool) {
	if !v.HostAccess {
		// An owned shim is not claimed, so removeUnclaimed deleted it.
		return
	}
	if why := p.shimProblem[v.Name]; why != "" {
		p.block(v, linkPartShim, why)
		p.block(v, linkPartRoute, why)
		return
	}
	name := v.shimName()
	s := p.byName[name]
	if s != nil && p.deleted[s.Index] {
		s = nil // goes with its parent
	}
	kind, mode, shape := spec.DriverMacvlan, "", "a bridge-mode macvlan"
	if spec.VLANDriver(v.Driver) == spec.DriverIPvlan {
		kind, mode = spec.DriverIPvlan, spec.VLANMode(v.Driver, v.Mode)
		shape = "an ipvlan in mode " + mode
	}
	if s != nil && !linkOwned(s) {
		switch {
		case v.Shim == "":
			p.block(v, linkPartShim, collision(name, v.Name))
			p.block(v, linkPartRoute, "waiting for shim "+name)
			return
		case kind != spec.DriverMacvlan || s.Kind != kind || s.MacvlanMode != "bridge" || parentNew || s.ParentIndex != parentIndex:
			// The adopted shim is not one any more: it is not ours to
			// delete.
			p.block(v, linkPartShim, fmt.Sprintf("adopted shim %s is not %s on %s; it is left as it is (delete it to have swarmvlan make it)", name, shape, parent))
			p.block(v, linkPartRoute, "waiting for shim "+name)
			return
		}
		// The hand-made shim adopt took over: repair gives it
		// swarmvlan's alias, and from then on it is owned.
	}
	if s != nil && (s.Kind != kind || (kind == spec.DriverMacvlan && s.MacvlanMode != "bridge") ||
		(kind == spec.DriverIPvlan && s.IpvlanMode != mode) || parentNew || s.ParentIndex != parentIndex) {
		p.add(v, linkPartShim, linkAction{Op: linkDelete, Link: name, Index: s.Index,
			Why: fmt.Sprintf("%s is not %s on %s", name, shape, parent)})
		p.markDeleted(s.Index)
		s = nil
	}
	if s == nil {
		p.add(v, linkPartShim, linkAction{Op: linkCreateShim, Link: name, Parent: parent, MTU: v.MTU,
			Kind: kind, Mode: mode, Alias: linkAlias(v.Name), Why: "shim " + name + " missing"})
	} else {
		p.repair(v, linkPartShim, s)
	}

	var addrs []netip.Prefix
	var routes []kernel.Route
	if s != nil {
		addrs = s.Addrs
		for _, r := range p.have.Routes {
			if r.LinkIndex == s.Index {
				routes = append(routes, r)
			}
		}
	}
	wantAddr := netip.Prefix{}
	if v.hasShimAddr() {
		wantAddr = netip.PrefixFrom(v.ShimAddr, v.ShimAddr.BitLen())
	}
	wantRoutes := map[netip.Prefix]bool{}
	for _, r := range v.shimRoutes() {
		wantRoutes[r.Masked()] = true
	}
	hasAddr := false
	for _, a := range addrs {
		switch {
		case a == wantAddr:
			hasAddr = true
		case a.Addr().IsLinkLocalUnicast():
			// The kernel's own IPv6 link-local address; not ours to judge.
		default:
			p.add(v, linkPartShim, linkAction{Op: linkDelAddr, Link: name, Index: s.Index, Addr: a,
				Why: fmt.Sprintf("stray address %s on %s", a, name)})
		}
	}
	hasRoute := map[netip.Prefix]bool{}
	for _, r := range routes {
		switch {
		case r.Protocol == kernel.ProtoKernel || r.Dst.Addr().IsLinkLocalUnicast():
			// Routes the kernel derives from addresses come and go with them.
		case wantRoutes[r.Dst] && r.Scope == kernel.ScopeLink && !hasRoute[r.Dst]:
			hasRoute[r.Dst] = true
		default:
			p.add(v, linkPartRoute, linkAction{Op: linkDelRoute, Link: name, Index: s.Index, Addr: r.Dst,
				Scope: r.Scope, Proto: r.Protocol, Metric: r.Priority,
				Why: fmt.Sprintf("stray route %s on %s", r.Dst, name)})
		}
	}
	if !v.hasShimAddr() {
		p.block(v, linkPartShim, reasonNoChunk)
		p.block(v, linkPartRoute, reasonNoChunk)
		return
	}
	index := 0
	if s != nil {
		index = s.Index
	}
	if !hasAddr {
		p.add(v, linkPartShim, linkAction{Op: linkAddAddr, Link: name, Index: index, Addr: wantAddr,
			Why: fmt.Sprintf("address %s missing on %s", wantAddr, name)})
	}
	for _, dst := range slices.SortedFunc(maps.Keys(wantRoutes), comparePrefix) {
		if hasRoute[dst] {
			continue
		}
		if via, taken := p.routedElsewhere(dst, s); taken {
			p.block(v, linkPartRoute, fmt.Sprintf("route to %s already exists via %s", dst, via))
			return
		}
		p.add(v, linkPartRoute, linkAction{Op: linkAddRoute, Link: name, Index: index, Addr: dst,
			Why: fmt.Sprintf("route to %s via %s missing", dst, name)})
	}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// routedElsewhere says whether dst is already routed through another
// link than the shim s (one not being deleted), and which.
func (p *linkPlanner) routedElsewhere(dst netip.Prefix, s *kernel.Link) (string, bool) {
	for _, r := range p.have.Routes {
		if r.Dst != dst || (s != nil && r.LinkIndex == s.Index) || p.deleted[r.LinkIndex] {
			continue
		}
		via := fmt.Sprintf("link %d", r.LinkIndex)
		if l := p.byIndex[r.LinkIndex]; l != nil {
			via = l.Name
		}
		return via, true
	}
	return "", false
}

// releasePromisc switches promiscuous mode off on trunks this reconciler
// switched on and no wanted VLAN needs any more.
func (p *linkPlanner) releasePromisc() {
	names := make([]string, 0, len(p.have.PromiscSet))
	for n := range p.have.PromiscSet {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		l := p.byName[n]
		if l == nil || !l.Promisc || p.promiscNeeded[n] || p.deleted[l.Index] {
			continue
		}
		p.out = append(p.out, linkAction{Op: linkSetPromisc, Link: n, Index: l.Index, On: false, Foreign: !linkOwned(l),
			Why: "no VLAN needs promiscuous mode on " + n})
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// linkFailure is an action that failed for a VLAN in this pass.
type linkFailure struct {
	Part   linkPart
	Reason string
}

// linkStatuses derives each wanted VLAN's status from the plan that still
// remains after executing (residual) and the failures met on the way.
func linkStatuses(want []VLAN, residual []linkAction, failed map[string]linkFailure) map[string]NetStatus {
	out := make(map[string]NetStatus, len(want))
	for _, v := range sortedVLANs(want) {
		var parts [3]string
		for _, a := range residual {
			if a.VLAN == v.Name && parts[a.Part] == "" {
				parts[a.Part] = a.Why
			}
		}
		f, hasFailure := failed[v.Name]
		if hasFailure {
			parts[f.Part] = f.Reason
		}
		st := NetStatus{Parent: spec.SubInterfaceName(v.Trunk, v.ID), Link: "ok"}
		if parts[linkPartLink] != "" {
			st.Link = parts[linkPartLink]
		}
		switch {
		case !v.HostAccess:
		case parts[linkPartLink] != "":
			// Whatever the shim lacks follows from its parent's problem.
			st.Shim, st.Route = "waiting for parent "+st.Parent, "waiting for parent "+st.Parent
		default:
			st.Shim, st.Route = "ok", "ok"
			if parts[linkPartShim] != "" {
				st.Shim = parts[linkPartShim]
			}
			if parts[linkPartRoute] != "" {
				st.Route = parts[linkPartRoute]
			}
		}
		switch {
		case hasFailure:
			st.Reason = f.Reason
		case st.Link != "ok":
			st.Reason = st.Link
		case st.Shim != "ok" && st.Shim != "":
			st.Reason = st.Shim
		case st.Route != "ok" && st.Route != "":
			st.Reason = st.Route
		}
		st.Ready = st.Reason == ""
		out[v.Name] = st
	}
	return out
}

// linkInterest is what a netlink notification must touch to concern the
// state Ensure last converged.
type linkInterest struct {
	names   map[string]bool
	indexes map[int]bool
	chunks  map[netip.Prefix]bool
}

// interestOf collects the names and indexes of trunks, parents, shims and
// owned links, and the chunks routed through shims.
func interestOf(want []VLAN, have kernel.Observed) *linkInterest {
	in := &linkInterest{names: map[string]bool{}, indexes: map[int]bool{}, chunks: map[netip.Prefix]bool{}}
	for _, v := range want {
		in.names[v.Trunk] = true
		in.names[spec.SubInterfaceName(v.Trunk, v.ID)] = true
		if v.HostAccess {
			in.names[v.shimName()] = true
			for _, r := range v.shimRoutes() {
				in.chunks[r.Masked()] = true
			}
		}
	}
	for n := range have.PromiscSet {
		in.names[n] = true
	}
	for _, l := range have.Links {
		if in.names[l.Name] || linkOwned(&l) {
			in.names[l.Name] = true
			in.indexes[l.Index] = true
		}
	}
	return in
}

// concerns says whether e may change state Ensure converges. Before the
// first Ensure (in == nil) everything does.
func (in *linkInterest) concerns(e kernel.Event) bool {
	if in == nil {
		return true
	}
	switch e.Kind {
	case kernel.EventLink:
		return in.names[e.LinkName] || in.indexes[e.LinkIndex] || strings.HasPrefix(e.Alias, aliasPrefix)
	case kernel.EventAddr:
		return in.indexes[e.LinkIndex]
	case kernel.EventRoute:
		return e.Table == kernel.TableMain && (in.indexes[e.LinkIndex] || in.chunks[e.Dst])
	}
	return true
}

// linkOwned says whether this reconciler made l (its alias is marked).
func linkOwned(l *kernel.Link) bool { return strings.HasPrefix(l.Alias, aliasPrefix) }

// handMadeShims lists the macvlan links in have that swarmvlan did not
// make and whose parent is one of parents (the parents of the node's
// hand-made config networks), with their addresses and the routes through
// them, for the node report that `reconciler adopt` reads. Sorted by name.
func handMadeShims(have kernel.Observed, parents map[string]bool) []state.NodeShim {
	byIndex := make(map[int]*kernel.Link, len(have.Links))
	for i := range have.Links {
		byIndex[have.Links[i].Index] = &have.Links[i]
	}
	var out []state.NodeShim
	for i := range have.Links {
		l := &have.Links[i]
		parent := byIndex[l.ParentIndex]
		if l.Kind != spec.DriverMacvlan || linkOwned(l) || parent == nil || parent.Index == l.Index || !parents[parent.Name] {
			continue
		}
		s := state.NodeShim{Name: l.Name, Parent: parent.Name, Mode: l.MacvlanMode}
		for _, a := range l.Addrs {
			if !a.Addr().IsLinkLocalUnicast() {
				s.Addrs = append(s.Addrs, a.String())
			}
		}
		for _, r := range have.Routes {
			if r.LinkIndex == l.Index && r.Protocol != kernel.ProtoKernel && r.Dst.IsValid() && !r.Dst.Addr().IsLinkLocalUnicast() {
				s.Routes = append(s.Routes, r.Dst.Masked().String())
			}
		}
		slices.Sort(s.Routes)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
