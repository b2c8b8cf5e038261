package cluster

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// RangePreview is one VLAN's range plan as it stands (the allocations in KV)
// and as it would be once the leader has planned with the given documents
// and nodes. It is computed by the leader's own planner, planAllocations, so
// it shows exactly what the leader would do; nothing is written.
type RangePreview struct {
	VLAN        string   `json:"vlan"`
	Subnet      string   `json:"subnet"`
	Gateway     string   `json:"gateway,omitempty"`
	ChunkPrefix int      `json:"chunkPrefix"`
	Pool        []string `json:"pool"`
	Exclude     []string `json:"exclude,omitempty"`
	Quarantine  string   `json:"quarantine"`
	// Chunks is the chunk map as it would be, in address order. Runs of free
	// or excluded chunks are one entry each, so a /30 plan of a /16 stays
	// readable.
	Chunks []ChunkRange `json:"chunks"`
	// FreeChunks counts the chunks a joining node could be given.
	FreeChunks int `json:"freeChunks"`
	// Nodes is every swarm node and every holder of an allocation, by
	// hostname: the chunk each holds now and would hold.
	Nodes []NodePreview `json:"nodes"`
	// Unallocated are hostnames of swarm nodes that would get no chunk.
	Unallocated []string `json:"unallocated,omitempty"`
	// Problems are the planner's refusals (a chunk in use that the documents
	// would move, a pinned chunk another node holds) and bad Host pins, in
	// the words the VLAN's status would carry.
	Problems []string `json:"problems,omitempty"`
	// NextRelease is when the earliest quarantine would end.
	NextRelease *time.Time `json:"nextRelease,omitempty"`
	// Mode is the range plan's mode; Cluster, in mode cluster, the pool
	// and the leases per node (the chunk fields are then empty).
	Mode    string          `json:"mode"`
	Cluster *ClusterPreview `json:"cluster,omitempty"`
}

// ChunkState is what a chunk is used for.
type ChunkState string

// Chunk states, from the strongest claim to none.
const (
	ChunkAllocated   ChunkState = "allocated"   // held by a node in the swarm
	ChunkQuarantined ChunkState = "quarantined" // held by a node that left, until its quarantine ends
	ChunkPinned      ChunkState = "pinned"      // reserved for a hostname that holds no chunk yet
	ChunkExcluded    ChunkState = "excluded"    // in the pool, but overlapping rangePlan.exclude
	ChunkFree        ChunkState = "free"
)

// ChunkRange is one chunk, or a run of Count consecutive chunks of the same
// free or excluded state from First to Last.
type ChunkRange struct {
	First    string     `json:"first"`
	Last     string     `json:"last,omitempty"`
	Count    int        `json:"count"`
	State    ChunkState `json:"state"`
	Node     string     `json:"node,omitempty"`
	Hostname string     `json:"hostname,omitempty"`
	// PinnedTo is the hostname the documents pin this chunk to.
	PinnedTo string `json:"pinnedTo,omitempty"`
	// Until is the end of a quarantine.
	Until *time.Time `json:"until,omitempty"`
	// Shim is the holder's own address in the chunk (hostAccess).
	Shim string `json:"shim,omitempty"`
	// OutsidePlan marks a held chunk that the documents no longer contain;
	// it stays with its node until the node leaves the swarm.
	OutsidePlan bool `json:"outsidePlan,omitempty"`
}

// NodeChange is what the plan would do to one node's allocation.
type NodeChange string

// Node changes.
const (
	NodeKept        NodeChange = "kept"
	NodeReturned    NodeChange = "returned"    // back in the swarm before its quarantine ended: keeps its chunk
	NodeNew         NodeChange = "new"         // would be given a chunk
	NodeLeaving     NodeChange = "leaving"     // left the swarm: its quarantine would start now
	NodeQuarantined NodeChange = "quarantined" // left earlier; its chunk is held until Until
	NodeReleased    NodeChange = "released"    // quarantine over: its chunk would be free again
	NodeRefused     NodeChange = "refused"     // the documents would move its chunk; it stays
	NodeUnallocated NodeChange = "unallocated" // in the swarm, but would get no chunk
)

// NodePreview is one node's allocation now and as it would be.
type NodePreview struct {
	Node     string     `json:"node"`
	Hostname string     `json:"hostname"`
	InSwarm  bool       `json:"inSwarm"`
	Now      string     `json:"now,omitempty"`
	Next     string     `json:"next,omitempty"`
	Change   NodeChange `json:"change"`
	Until    *time.Time `json:"until,omitempty"`
	Shim     string     `json:"shim,omitempty"`
	Reason   string     `json:"reason,omitempty"`
}

// PreviewRangePlan runs the leader's range planner for vlan over the given
// Host documents, swarm nodes and current allocations (keyed by node ID, as
// state.Store.Allocations returns them) and describes the result. It is
// pure: the caller decides where the inputs come from.
func PreviewRangePlan(vlan *spec.VLAN, hosts []*spec.Host, nodes []SwarmNode, have map[string]state.Allocation, now time.Time) (RangePreview, error) {
	name := vlan.Metadata.Name
	plan, err := vlan.Plan()
	if err != nil {
		return RangePreview{}, fmt.Errorf("vlan %q: plan: %w", name, err)
	}
	quarantine := vlan.Spec.RangePlan.Quarantine
	if quarantine == "" {
		quarantine = spec.DefaultQuarantine
	}
	pinned, problems := pinnedChunks(plan, name, hosts)
	res := planAllocations(plan, pinned, nodes, have, now, quarantine.Duration())

	after := make(map[string]state.Allocation, len(have)+len(res.Put))
	for id, a := range have {
		after[id] = a
	}
	for id, a := range res.Put {
		after[id] = a
	}
	for _, id := range res.Delete {
		delete(after, id)
	}
	shim := func(chunk string) string {
		c, err := netip.ParsePrefix(chunk)
		if err != nil || !spec.BoolOr(vlan.Spec.HostAccess, true) {
			return ""
		}
		return spec.ShimAddress(plan.Subnet, c).String()
	}

	p := RangePreview{
		VLAN:        name,
		Subnet:      plan.Subnet.String(),
		ChunkPrefix: plan.ChunkBits,
		Pool:        vlan.Spec.RangePlan.Pool,
		Exclude:     vlan.Spec.RangePlan.Exclude,
		Quarantine:  string(quarantine),
		Unallocated: res.Unallocated,
		Problems:    append(problems, res.Problems...),
	}
	if len(p.Pool) == 0 {
		p.Pool = []string{p.Subnet}
	}
	if plan.Gateway.IsValid() {
		p.Gateway = plan.Gateway.String()
	}
	if !res.NextRelease.IsZero() {
		t := res.NextRelease
		p.NextRelease = &t
	}
	p.Problems = append(p.Problems, overlapProblems(have, res.Put)...)
	p.Nodes = previewNodes(nodes, have, after, res, p.Problems, pinned, quarantine.Duration(), shim)
	p.Chunks, p.FreeChunks = previewChunks(vlan, plan, pinned, after, quarantine.Duration(), shim)
	return p, nil
}

// previewNodes lists every node in the swarm or holding an allocation.
func previewNodes(nodes []SwarmNode, have, after map[string]state.Allocation, res rangePlanResult, problems []string, pinned map[string]netip.Prefix, quarantine time.Duration, shim func(string) string) []NodePreview {
	inSwarm := map[string]SwarmNode{}
	for _, n := range nodes {
		inSwarm[n.ID] = n
	}
	ids := map[string]bool{}
	for id := range have {
		ids[id] = true
	}
	for id := range inSwarm {
		ids[id] = true
	}
	var out []NodePreview
	for id := range ids {
		a, held := have[id]
		n, in := inSwarm[id]
		np := NodePreview{Node: id, Hostname: n.Hostname, InSwarm: in, Now: a.Chunk}
		if np.Hostname == "" {
			np.Hostname = a.Hostname
		}
		if b, ok := after[id]; ok {
			np.Next = b.Chunk
			if b.Left != nil {
				until := b.Left.Add(quarantine)
				np.Until = &until
			}
		}
		reasons := problemsOf(problems, id)
		_, put := res.Put[id]
		switch {
		case held && !in && np.Next == "":
			np.Change = NodeReleased
		case held && !in && put:
			np.Change = NodeLeaving
		case held && !in:
			np.Change = NodeQuarantined
		case held && len(reasons) > 0:
			np.Change = NodeRefused
		case held && a.Left != nil:
			np.Change = NodeReturned
		case held:
			np.Change = NodeKept
		case np.Next != "":
			np.Change = NodeNew
			if p, ok := pinned[np.Hostname]; ok && p.String() == np.Next {
				reasons = append(reasons, "pinned")
			}
		default:
			np.Change = NodeUnallocated
			if len(reasons) == 0 {
				reasons = []string{"pool exhausted"}
			}
		}
		if in && np.Next != "" {
			np.Shim = shim(np.Next)
		}
		np.Reason = strings.Join(reasons, "; ")
		out = append(out, np)
	}
	slices.SortFunc(out, func(x, y NodePreview) int {
		if c := strings.Compare(x.Hostname, y.Hostname); c != 0 {
			return c
		}
		return strings.Compare(x.Node, y.Node)
	})
	return out
}

// problemsOf picks the planner's problems about node id. The planner names a
// node as "hostname (id)", or "allocation of node id" for an unreadable one.
func problemsOf(problems []string, id string) []string {
	var out []string
	for _, p := range problems {
		if strings.Contains(p, "("+id+")") || strings.HasPrefix(p, "allocation of node "+id+" ") {
			out = append(out, p)
		}
	}
	return out
}

// overlapProblems reports new allocations that would share addresses with a
// chunk already held: a cross-check of the planner, which never hands out a
// chunk inside a held one of another size (after a change of chunkPrefix).
func overlapProblems(have, put map[string]state.Allocation) []string {
	var out []string
	for _, id := range sortedKeys(put) {
		if _, existing := have[id]; existing {
			continue
		}
		c, err := netip.ParsePrefix(put[id].Chunk)
		if err != nil {
			continue
		}
		for _, other := range sortedKeys(have) {
			o, err := netip.ParsePrefix(have[other].Chunk)
			if err == nil && o != c && o.Overlaps(c) {
				out = append(out, fmt.Sprintf("node %s (%s) would get %s, which overlaps %s held by %s (%s)", put[id].Hostname, id, c, o, have[other].Hostname, other))
			}
		}
	}
	return out
}

// coveredByHeld reports whether c overlaps a held chunk other than itself.
func coveredByHeld(c netip.Prefix, holder map[netip.Prefix]string) bool {
	for h := range holder {
		if h != c && h.Overlaps(c) {
			return true
		}
	}
	return false
}

// previewChunks builds the chunk map after the plan: every chunk of the pool
// (excluded ones included), every pinned chunk and every held one.
func previewChunks(vlan *spec.VLAN, plan *spec.Plan, pinned map[string]netip.Prefix, after map[string]state.Allocation, quarantine time.Duration, shim func(string) string) ([]ChunkRange, int) {
	pool := []netip.Prefix{plan.Subnet}
	if len(vlan.Spec.RangePlan.Pool) > 0 {
		pool = pool[:0]
		for _, s := range vlan.Spec.RangePlan.Pool {
			pool = append(pool, netip.MustParsePrefix(s)) // Plan has validated it
		}
	}
	inPlan := map[netip.Prefix]bool{}
	for _, c := range plan.Chunks {
		inPlan[c] = true
	}
	pinOf := map[netip.Prefix]string{}
	for host, c := range pinned {
		pinOf[c] = host
	}
	holder := map[netip.Prefix]string{}
	for id, a := range after {
		if c, err := netip.ParsePrefix(a.Chunk); err == nil {
			holder[c] = id
		}
	}
	all := map[netip.Prefix]bool{}
	for _, c := range spec.SplitChunks(pool, nil, plan.ChunkBits) {
		all[c] = true
	}
	for c := range pinOf {
		all[c] = true
	}
	for c := range holder {
		all[c] = true
	}
	order := make([]netip.Prefix, 0, len(all))
	for c := range all {
		order = append(order, c)
	}
	slices.SortFunc(order, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})

	var out []ChunkRange
	free := 0
	for _, c := range order {
		id, held := holder[c]
		if !held && coveredByHeld(c, holder) {
			// Inside a held chunk of another size: shown by that chunk.
			continue
		}
		r := ChunkRange{First: c.String(), Count: 1, PinnedTo: pinOf[c]}
		_, pinnedChunk := pinOf[c]
		switch {
		case held:
			a := after[id]
			r.Node, r.Hostname = id, a.Hostname
			r.OutsidePlan = !inPlan[c] && !pinnedChunk
			if a.Left != nil {
				until := a.Left.Add(quarantine)
				r.State, r.Until = ChunkQuarantined, &until
			} else {
				r.State, r.Shim = ChunkAllocated, shim(a.Chunk)
			}
		case pinnedChunk:
			r.State = ChunkPinned
		case !inPlan[c]:
			r.State = ChunkExcluded
		default:
			r.State = ChunkFree
			free++
		}
		if n := len(out); n > 0 && (r.State == ChunkFree || r.State == ChunkExcluded) && out[n-1].State == r.State {
			out[n-1].Last = r.First
			out[n-1].Count++
			continue
		}
		out = append(out, r)
	}
	return out, free
}
