// Package adopt infers, from a swarm set up by hand with the manual recipe
// (a --config-only macvlan or ipvlan network with its own --ip-range on
// every node, a swarm network made --config-from it, services on that),
// the VLAN and Service documents that describe it, and the records by which
// swarmvlan takes those Docker objects over as they are. It is pure: the
// caller reads Docker and Consul and writes the result.
package adopt

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// Where a VLAN document's name comes from.
const (
	NameFromConfig = "config"
	NameFromSwarm  = "swarm"
)

// Node is one swarm node and what its host role reported of its
// hand-made config-only networks.
type Node struct {
	ID       string
	Hostname string
	// Reported is false when the node has no live report: its networks
	// are not known.
	Reported       bool
	ConfigNetworks []state.NodeConfigNetwork
	// Shims are the macvlan links the host role reported on the parents
	// of those networks (hand-made shims).
	Shims []state.NodeShim
}

// Input is the swarm as it is.
type Input struct {
	Nodes []Node
	// SwarmNetworks are the swarm-scoped networks (the leader's Engine
	// lists them all).
	SwarmNetworks []network.Inspect
	Services      []swarm.Service
	// NameFrom is NameFromConfig (default) or NameFromSwarm.
	NameFrom string
	// Adopted are the networks adopted earlier, by Docker ID, and
	// Existing the VLAN documents in KV: a network adopted for one of
	// those is swarmvlan's already, and a new document must not collide
	// with them.
	Adopted  map[string]state.AdoptedNetwork
	Existing []*spec.VLAN
}

// Problem is something wrong with the hand-made setup, with what to do
// about it. Refuse marks one adopt will not take over.
type Problem struct {
	Object string `json:"object"`
	What   string `json:"what"`
	Fix    string `json:"fix,omitempty"`
	Refuse bool   `json:"refuse,omitempty"`
}

func (p Problem) String() string {
	s := p.Object + ": " + p.What
	if p.Fix != "" {
		s += "; fix: " + p.Fix
	}
	return s
}

// Result is what Infer found.
type Result struct {
	VLANs    []*spec.VLAN
	Hosts    []*spec.Host
	Services []*spec.Service
	// Networks and AdoptedServices are the records to write under
	// state/adopted/.
	Networks        []state.AdoptedNetwork
	AdoptedServices []state.AdoptedService
	Shims           []state.AdoptedShim
	// Unexpressed names, per Service document, the fields of the Swarm
	// service its document cannot express (they stay on the service as
	// they are until the document changes).
	Unexpressed map[string][]string
	Problems    []Problem
	// Skipped says, per swarm network left out, why.
	Skipped []string
}

// Refused are the problems that stop adoption.
func (r Result) Refused() []Problem {
	var out []Problem
	for _, p := range r.Problems {
		if p.Refuse {
			out = append(out, p)
		}
	}
	return out
}

// Infer reads in and returns the documents and records that describe it.
// A swarm network is taken over when it is made --config-from a network
// that nodes reported as hand-made; one of swarmvlan's own is left out.
func Infer(in Input) Result {
	res := Result{Unexpressed: map[string][]string{}}
	nodes := slices.Clone(in.Nodes)
	sort.Slice(nodes, func(i, j int) bool {
		return cmp.Or(cmp.Compare(nodes[i].Hostname, nodes[j].Hostname), cmp.Compare(nodes[i].ID, nodes[j].ID)) < 0
	})
	swarmNets := slices.Clone(in.SwarmNetworks)
	sort.Slice(swarmNets, func(i, j int) bool { return swarmNets[i].Name < swarmNets[j].Name })

	used := map[string]bool{}
	vlanOf := map[string]string{}  // swarm network ID and name -> VLAN document name
	netName := map[string]string{} // swarm network ID -> name
	existing := map[string]bool{}
	for _, e := range in.Existing {
		existing[e.Metadata.Name] = true
	}
	skip := func(sn network.Inspect, why string) {
		res.Skipped = append(res.Skipped, fmt.Sprintf("swarm network %s (%s): %s", sn.Name, sn.ID, why))
	}
	for _, sn := range swarmNets {
		netName[sn.ID] = sn.Name
		if d := sn.Driver; sn.ConfigFrom.Network == "" || (d != "" && d != spec.DriverMacvlan && d != spec.DriverIPvlan) {
			continue
		}
		rec, adopted := in.Adopted[sn.ID]
		switch {
		case spec.Managed(sn.Labels):
			skip(sn, fmt.Sprintf("swarmvlan's own, of VLAN %s", cmp.Or(sn.Labels[spec.LabelName], "?")))
			continue
		case sn.IPAM.Driver == spec.IPAMDriver:
			skip(sn, "its addresses come from swarmvlan's IPAM plugin: swarmvlan's own (rangePlan.mode cluster)")
			continue
		case adopted && existing[rec.VLAN]:
			skip(sn, "adopted already, as VLAN "+rec.VLAN)
			continue
		}
		v, ok := inferVLAN(&res, nodes, sn, in.NameFrom, used)
		if !ok {
			continue
		}
		vlanOf[sn.ID], vlanOf[sn.Name] = v.Metadata.Name, v.Metadata.Name
	}
	res.Problems = append(res.Problems, collisions(res.VLANs, in.Existing)...)
	svcs := slices.Clone(in.Services)
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Spec.Name < svcs[j].Spec.Name })
	usedSvc := map[string]bool{}
	for i := range svcs {
		inferService(&res, &svcs[i], vlanOf, netName, usedSvc)
	}
	return res
}

// DNSName turns a Docker name into a document name (a DNS label):
// lowercase, every other byte a '-', no leading, trailing or doubled '-',
// at most 63 bytes; taken names get "-2", "-3", ....
func DNSName(s string, taken map[string]bool) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		switch {
		case 'a' <= r && r <= 'z' || '0' <= r && r <= '9':
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	name := strings.TrimRight(b.String(), "-")
	if len(name) > 58 {
		name = strings.TrimRight(name[:58], "-")
	}
	if name == "" {
		name = "adopted"
	}
	out := name
	for i := 2; taken[out]; i++ {
		out = name + "-" + strconv.Itoa(i)
	}
	taken[out] = true
	return out
}

// nodeRange is one node's hand-made config network.
type nodeRange struct {
	node  Node
	net   state.NodeConfigNetwork
	rng   netip.Prefix
	trunk string
	tag   int
}

// splitParent reads a parent "<trunk>.<id>" as a tagged VLAN.
func splitParent(parent string) (trunk string, tag int) {
	if i := strings.LastIndexByte(parent, '.'); i > 0 {
		if id, err := strconv.Atoi(parent[i+1:]); err == nil && id >= 1 && id <= 4094 {
			return parent[:i], id
		}
	}
	return parent, 0
}

// inferVLAN builds the VLAN document of one hand-made swarm network.
func inferVLAN(res *Result, nodes []Node, sn network.Inspect, nameFrom string, used map[string]bool) (*spec.VLAN, bool) {
	cfgName := sn.ConfigFrom.Network
	obj := fmt.Sprintf("swarm network %s (--config-from %s)", sn.Name, cfgName)
	problem := func(refuse bool, what, fix string) {
		res.Problems = append(res.Problems, Problem{Object: obj, What: what, Fix: fix, Refuse: refuse})
	}
	var ranges []nodeRange
	var unreported, lacking []string
	for _, n := range nodes {
		if !n.Reported {
			unreported = append(unreported, n.Hostname)
			continue
		}
		i := slices.IndexFunc(n.ConfigNetworks, func(c state.NodeConfigNetwork) bool { return c.Name == cfgName })
		if i < 0 {
			lacking = append(lacking, n.Hostname)
			continue
		}
		c := n.ConfigNetworks[i]
		trunk, tag := splitParent(c.Parent)
		ranges = append(ranges, nodeRange{node: n, net: c, trunk: trunk, tag: tag})
	}
	if len(ranges) == 0 {
		// Not hand-made (swarmvlan's own, or no node reports it).
		res.Skipped = append(res.Skipped, fmt.Sprintf("swarm network %s (%s): no node reports %s as a hand-made config-only network", sn.Name, sn.ID, cfgName))
		return nil, false
	}
	if len(unreported) > 0 {
		problem(true, fmt.Sprintf("no report from the host role of node %s, so its range is not known", strings.Join(unreported, ", ")),
			"start swarmvlan's host role on every node (it reports the node's config-only networks), then run adopt again")
	}
	if len(lacking) > 0 {
		problem(false, fmt.Sprintf("node %s has no config network %s: no task on %s can run there", strings.Join(lacking, ", "), cfgName, sn.Name),
			fmt.Sprintf("nothing to do by hand: after adoption swarmvlan gives the node a chunk of its own and creates %s there", cfgName))
	}

	first := ranges[0]
	subnet, err := netip.ParsePrefix(first.net.Subnet)
	if err != nil {
		problem(true, fmt.Sprintf("node %s: config network %s has no readable subnet (%q)", first.node.Hostname, cfgName, first.net.Subnet), "re-make it with --subnet")
		return nil, false
	}
	subnet = subnet.Masked()
	refused := false
	for i := range ranges {
		r := &ranges[i]
		h := r.node.Hostname
		if r.net.Pools != 1 {
			problem(true, fmt.Sprintf("node %s: config network %s has %d address pools", h, cfgName, r.net.Pools), "re-make it with one --subnet")
			refused = true
			continue
		}
		if s, err := netip.ParsePrefix(r.net.Subnet); err != nil || s.Masked() != subnet {
			problem(true, fmt.Sprintf("node %s: subnet %s differs from node %s's %s", h, r.net.Subnet, first.node.Hostname, subnet), "re-make the config networks with one subnet")
			refused = true
			continue
		}
		if r.net.IPRange == "" {
			r.rng = subnet
			problem(false, fmt.Sprintf("node %s: config network %s has no --ip-range: it hands out the whole subnet", h, cfgName), "every node needs a range of its own: re-make it with --ip-range")
		} else if p, err := netip.ParsePrefix(r.net.IPRange); err != nil || !subnet.Contains(p.Addr()) || p.Bits() < subnet.Bits() {
			problem(true, fmt.Sprintf("node %s: ip-range %q is not inside subnet %s", h, r.net.IPRange, subnet), "re-make the config network with an --ip-range inside the subnet")
			refused = true
			continue
		} else {
			r.rng = p.Masked()
		}
		if r.tag != first.tag {
			problem(true, fmt.Sprintf("node %s: parent %s carries tag %d, node %s's %s tag %d", h, r.net.Parent, r.tag, first.node.Hostname, first.net.Parent, first.tag), "one VLAN has one tag: re-make the config networks on one tag")
			refused = true
		}
	}
	// Two nodes handing out the same addresses is what the plan exists to
	// prevent: such a plan is not taken over.
	for i := range ranges {
		for j := i + 1; j < len(ranges); j++ {
			a, b := ranges[i], ranges[j]
			if !a.rng.IsValid() || !b.rng.IsValid() || !a.rng.Overlaps(b.rng) {
				continue
			}
			overlap := a.rng
			if b.rng.Bits() > a.rng.Bits() {
				overlap = b.rng
			}
			problem(true, fmt.Sprintf("nodes %s and %s: ranges %s and %s overlap in %s, so both can hand out the same addresses", a.node.Hostname, b.node.Hostname, a.rng, b.rng, overlap),
				fmt.Sprintf("re-make %s on one of them with an --ip-range of its own (moving its tasks), then run adopt again", cfgName))
			refused = true
		}
	}
	if refused {
		return nil, false
	}

	var gw netip.Addr
	for _, r := range ranges {
		if r.net.Gateway == "" {
			continue
		}
		g, err := netip.ParseAddr(r.net.Gateway)
		switch {
		case err != nil:
			problem(false, fmt.Sprintf("node %s: gateway %q is not an address", r.node.Hostname, r.net.Gateway), "re-make the config network with a --gateway inside the subnet")
		case !subnet.Contains(g):
			problem(false, fmt.Sprintf("node %s: gateway %s is outside the subnet %s; the document names no gateway", r.node.Hostname, g, subnet),
				"re-make the config network with a --gateway inside the subnet, then set spec.gateway")
		case gw.IsValid() && gw != g:
			problem(false, fmt.Sprintf("node %s: gateway %s differs from %s", r.node.Hostname, g, gw), "use one gateway on every node")
		case !gw.IsValid():
			gw = g
		}
	}

	driver := sn.Driver
	if driver == "" {
		driver = spec.DriverMacvlan
	}
	modeKey := driver + "_mode"
	mode := first.net.Options[modeKey]
	mtu := 0
	if m, err := strconv.Atoi(first.net.Options["com.docker.network.driver.mtu"]); err == nil {
		mtu = m
	}
	for _, r := range ranges[1:] {
		if r.net.Options[modeKey] != mode {
			problem(false, fmt.Sprintf("node %s: mode %q differs from node %s's %q; the document says %q", r.node.Hostname, r.net.Options[modeKey], first.node.Hostname, mode, mode), "use one mode on every node")
		}
	}

	from := cfgName
	if nameFrom == NameFromSwarm {
		from = sn.Name
	}
	name := DNSName(from, used)
	bits := map[int]int{}
	for _, r := range ranges {
		bits[r.rng.Bits()]++
	}
	chunk := 0
	for b, n := range bits {
		if n > bits[chunk] || (n == bits[chunk] && b > chunk) {
			chunk = b
		}
	}
	chunk = min(max(chunk, subnet.Bits()), 30)
	shims := findShims(res, obj, ranges, subnet)
	v := &spec.VLAN{
		APIVersion: spec.APIVersion, Kind: spec.KindVLAN,
		Metadata: spec.ObjectMeta{Name: name},
		Spec: spec.VLANSpec{
			ID: first.tag, Trunk: first.trunk, Driver: driver, Mode: mode, Subnet: subnet.String(), MTU: mtu,
			// Host access when every node has a hand-made shim, taken
			// over as it is. Otherwise none: the config networks were
			// made without an aux address for a shim of swarmvlan's, so
			// one at a chunk's last address could clash with a task.
			HostAccess: new(len(shims) == len(ranges)),
			Docker:     &spec.VLANDockerNames{ConfigNetwork: cfgName, Network: sn.Name},
			// Each node's hand-made range is its own: mode chunks,
			// written out so the document says so.
			RangePlan: spec.RangePlan{Mode: spec.RangeModeChunks, ChunkPrefix: chunk, Pinned: map[string]string{}},
		},
	}
	if gw.IsValid() {
		v.Spec.Gateway = gw.String()
	}
	// Addresses in use outside every node's range stay out of the chunks
	// handed to nodes that join later: the gateway and aux addresses.
	inRange := func(a netip.Addr) bool {
		for _, r := range ranges {
			if r.rng.Contains(a) {
				return true
			}
		}
		return false
	}
	excl := map[netip.Addr]bool{}
	if gw.IsValid() && !inRange(gw) {
		excl[gw] = true
	}
	for _, sh := range shims {
		if !inRange(sh.addr) {
			excl[sh.addr] = true
		}
	}
	for _, r := range ranges {
		for _, a := range r.net.Aux {
			if ad, err := netip.ParseAddr(a); err == nil && subnet.Contains(ad) && !inRange(ad) {
				excl[ad] = true
			}
		}
	}
	for _, a := range slices.SortedFunc(func(yield func(netip.Addr) bool) {
		for a := range excl {
			if !yield(a) {
				return
			}
		}
	}, netip.Addr.Compare) {
		v.Spec.RangePlan.Exclude = append(v.Spec.RangePlan.Exclude, netip.PrefixFrom(a, 32).String())
	}
	for _, r := range ranges {
		v.Spec.RangePlan.Pinned[r.node.Hostname] = r.rng.String()
		if r.trunk != first.trunk {
			res.Hosts = append(res.Hosts, hostTrunk(r.node.Hostname, name, r.trunk))
		}
		res.Networks = append(res.Networks, state.AdoptedNetwork{ID: r.net.ID, Name: cfgName, VLAN: name, Role: state.AdoptedConfigNetwork, Node: r.node.ID, Hostname: r.node.Hostname})
	}
	res.Networks = append(res.Networks, state.AdoptedNetwork{ID: sn.ID, Name: sn.Name, VLAN: name, Role: state.AdoptedSwarmNetwork})
	if err := spec.Validate(v); err != nil {
		problem(true, "the inferred document is invalid: "+strings.ReplaceAll(err.Error(), "\n", "; "), "report this; the documents can be written by hand from the dry run")
		return nil, false
	}
	for _, r := range ranges {
		if sh, ok := shims[r.node.ID]; ok {
			res.Shims = append(res.Shims, state.AdoptedShim{VLAN: name, Node: r.node.ID, Hostname: r.node.Hostname, Name: sh.name, Addr: sh.addr.String()})
		}
	}
	res.VLANs = append(res.VLANs, v)
	return v, true
}

func hostTrunk(host, vlan, trunk string) *spec.Host {
	return &spec.Host{APIVersion: spec.APIVersion, Kind: spec.KindHost, Metadata: spec.ObjectMeta{Name: host},
		Spec: spec.HostSpec{VLANs: map[string]spec.HostVLAN{vlan: {Trunk: trunk}}}}
}

// roundTrip is the document as the leader's view will hold it: encoded,
// decoded and defaulted. Its hash is what the adoption record carries.
func roundTrip(o spec.Object) (spec.Object, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	d, err := spec.Decode(b)
	if err != nil {
		return nil, err
	}
	spec.SetDefaults(d)
	return d, nil
}

// handShim is a node's hand-made shim found for a VLAN.
type handShim struct {
	name string
	addr netip.Addr
}

// findShims finds, for each node of ranges, its hand-made shim as the
// manual recipe makes it: a bridge-mode macvlan on the config network's
// parent with an address in the subnet (ip link add … type macvlan mode
// bridge; ip addr add <addr>/32; ip route add <range> dev …). A link that
// routes the node's range is preferred to one that only has an address in
// the subnet. By node ID; what stands in the way is reported.
func findShims(res *Result, obj string, ranges []nodeRange, subnet netip.Prefix) map[string]handShim {
	problem := func(what, fix string) {
		res.Problems = append(res.Problems, Problem{Object: obj, What: what, Fix: fix})
	}
	out := map[string]handShim{}
	var lacking []string
	for _, r := range ranges {
		var cands, routing []handShim
		for _, l := range r.node.Shims {
			if l.Parent != r.net.Parent || l.Mode != "bridge" {
				continue
			}
			var addr netip.Addr
			for _, a := range l.Addrs {
				if p, err := netip.ParsePrefix(a); err == nil && subnet.Contains(p.Addr()) {
					addr = p.Addr()
					break
				}
			}
			routes := slices.ContainsFunc(l.Routes, func(d string) bool {
				p, err := netip.ParsePrefix(d)
				return err == nil && r.rng.IsValid() && p.Overlaps(r.rng)
			})
			switch {
			case !addr.IsValid() && routes:
				problem(fmt.Sprintf("node %s: shim %s routes %s but has no address in %s, so it is not taken over", r.node.Hostname, l.Name, r.rng, subnet),
					fmt.Sprintf("give it one (ip addr add <address>/32 dev %s) and run adopt again", l.Name))
			case !addr.IsValid():
			case routes:
				routing = append(routing, handShim{l.Name, addr})
			default:
				cands = append(cands, handShim{l.Name, addr})
			}
		}
		if len(routing) > 0 {
			cands = routing
		}
		switch len(cands) {
		case 0:
			lacking = append(lacking, r.node.Hostname)
			continue
		case 1:
		default:
			names := make([]string, len(cands))
			for i, c := range cands {
				names[i] = c.name
			}
			problem(fmt.Sprintf("node %s: %d hand-made shims on %s (%s); none is taken over", r.node.Hostname, len(cands), r.net.Parent, strings.Join(names, ", ")),
				"delete all but one, then run adopt again")
			lacking = append(lacking, r.node.Hostname)
			continue
		}
		sh := cands[0]
		out[r.node.ID] = sh
		if r.rng.Contains(sh.addr) && !slices.Contains(slices.Collect(maps.Values(r.net.Aux)), sh.addr.String()) {
			problem(fmt.Sprintf("node %s: shim %s's address %s is inside the node's range %s and not kept out of Docker's allocation, so a task can get it too", r.node.Hostname, sh.name, sh.addr, r.rng),
				fmt.Sprintf("re-make %s with --aux-address shim=%s, or give the shim an address outside every range", r.net.Name, sh.addr))
		}
	}
	if len(out) > 0 && len(lacking) > 0 {
		problem(fmt.Sprintf("node %s has no hand-made shim on the parent (a bridge-mode macvlan with an address in %s): hostAccess stays false; the shims found on the other nodes are recorded and left as they are", strings.Join(lacking, ", "), subnet),
			"make one there by hand as on the others, then set spec.hostAccess: true: the recorded shims are taken over, not duplicated")
	}
	return out
}

// collisions are the refusals for new documents that would collide with
// VLAN documents in KV: the same Docker network names, or overlapping
// subnets. A document of the same name is compared by the caller (one of
// the same content is adopt run again).
func collisions(vlans, existing []*spec.VLAN) []Problem {
	var out []Problem
	for _, v := range vlans {
		sub, err := netip.ParsePrefix(v.Spec.Subnet)
		if err != nil {
			continue
		}
		for _, e := range existing {
			if e.Metadata.Name == v.Metadata.Name {
				continue
			}
			var why []string
			if n := e.ConfigNetworkDockerName(); n == v.ConfigNetworkDockerName() {
				why = append(why, "both name config network "+n)
			}
			if n := e.NetworkDockerName(); n == v.NetworkDockerName() {
				why = append(why, "both name swarm network "+n)
			}
			if es, err := netip.ParsePrefix(e.Spec.Subnet); err == nil && es.Masked().Overlaps(sub) {
				why = append(why, fmt.Sprintf("subnet %s overlaps its %s", sub, es.Masked()))
			}
			if len(why) == 0 {
				continue
			}
			out = append(out, Problem{Object: "VLAN " + v.Metadata.Name, Refuse: true,
				What: fmt.Sprintf("collides with VLAN %s in KV: %s", e.Metadata.Name, strings.Join(why, "; ")),
				Fix:  fmt.Sprintf("delete VLAN %s first if it describes the same network, or adopt after changing it", e.Metadata.Name)})
		}
	}
	return out
}
