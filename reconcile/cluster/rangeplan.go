package cluster

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// SwarmNode is what the range planner needs to know about a swarm node.
type SwarmNode struct {
	ID       string
	Hostname string
}

// rangePlanResult is what planAllocations decided for one VLAN.
type rangePlanResult struct {
	// Put are allocations to create or update (a new chunk, or the start or
	// end of a departed node's quarantine).
	Put map[string]state.Allocation
	// Delete are allocations whose quarantine has passed.
	Delete []string
	// Unallocated are nodes without a chunk because the pool is exhausted.
	Unallocated []string
	// Problems are plan changes refused because they would move a chunk in
	// use; the allocations stay as they are.
	Problems []string
	// NextRelease is when the earliest quarantine ends (zero if none).
	NextRelease time.Time
}

// planAllocations assigns every node of the swarm a chunk of the VLAN: its
// pinned chunk when its hostname has one, else the lowest free chunk of the
// plan. An allocation never moves while its node is in the swarm. A node that
// left keeps its chunk through the quarantine (a node that comes back in time
// finds it still there); only then is the chunk free again.
func planAllocations(plan *spec.Plan, pinned map[string]netip.Prefix, nodes []SwarmNode, have map[string]state.Allocation, now time.Time, quarantine time.Duration) rangePlanResult {
	p := &rangePlanner{plan: plan, pinned: pinned, now: now, quarantine: quarantine,
		res: rangePlanResult{Put: map[string]state.Allocation{}}, used: map[netip.Prefix]string{}}
	inSwarm := map[string]bool{}
	for _, n := range nodes {
		inSwarm[n.ID] = true
	}
	p.keepHeld(have, inSwarm)
	var want []SwarmNode
	for _, n := range nodes {
		if _, ok := have[n.ID]; !ok {
			want = append(want, n)
		}
	}
	sort.Slice(want, func(i, j int) bool { return want[i].ID < want[j].ID })
	p.allocate(want)
	sort.Strings(p.res.Delete)
	sort.Strings(p.res.Unallocated)
	return p.res
}

// rangePlanner is one planAllocations run.
type rangePlanner struct {
	plan       *spec.Plan
	pinned     map[string]netip.Prefix
	now        time.Time
	quarantine time.Duration
	res        rangePlanResult
	used       map[netip.Prefix]string // chunk -> node holding it
	// odd are held chunks of another size than the plan's (the plan's
	// chunkPrefix changed while they were held): a new chunk must not
	// overlap one of them either, or two nodes would hand out the same
	// addresses.
	odd []netip.Prefix
}

// holder is the node holding c or a chunk overlapping it, or "".
func (p *rangePlanner) holder(c netip.Prefix) string {
	if id := p.used[c]; id != "" {
		return id
	}
	for _, o := range p.odd {
		if o.Overlaps(c) {
			return p.used[o]
		}
	}
	return ""
}

// keepHeld records every held chunk as used and decides the fate of each
// allocation: a node in the swarm keeps its chunk (and any quarantine it was
// in ends), with a problem reported when the plan no longer contains or pins
// that chunk; a departed node's chunk is quarantined, then released.
func (p *rangePlanner) keepHeld(have map[string]state.Allocation, inSwarm map[string]bool) {
	valid := map[netip.Prefix]bool{}
	for _, c := range p.plan.Chunks {
		valid[c] = true
	}
	for _, c := range p.pinned {
		valid[c] = true
	}
	ids := make([]string, 0, len(have))
	for id := range have {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		a := have[id]
		chunk, err := netip.ParsePrefix(a.Chunk)
		if err != nil {
			p.res.Problems = append(p.res.Problems, fmt.Sprintf("allocation of node %s holds an unreadable chunk %q", id, a.Chunk))
			continue
		}
		p.used[chunk] = id
		if chunk.Bits() != p.plan.ChunkBits {
			p.odd = append(p.odd, chunk)
		}
		if inSwarm[id] {
			if a.Left != nil {
				a.Left = nil // back before the quarantine ended: keeps its chunk
				p.res.Put[id] = a
			}
			// A pinned chunk may have a size of its own (a range made by
			// hand and adopted as it was cut).
			pinnedHere := p.pinned[a.Hostname] == chunk
			if !valid[chunk] || !p.plan.Subnet.Contains(chunk.Addr()) || (chunk.Bits() != p.plan.ChunkBits && !pinnedHere) {
				p.res.Problems = append(p.res.Problems, fmt.Sprintf("node %s (%s) holds %s, which the new plan no longer contains; the chunk stays until the node leaves the swarm", a.Hostname, id, chunk))
			}
			if want, ok := p.pinned[a.Hostname]; ok && want != chunk {
				p.res.Problems = append(p.res.Problems, fmt.Sprintf("node %s (%s) holds %s but is pinned to %s; the chunk stays until the node leaves the swarm", a.Hostname, id, chunk, want))
			}
			continue
		}
		// The node is gone from the swarm.
		if a.Left == nil {
			left := p.now
			a.Left = &left
			p.res.Put[id] = a
		}
		release := a.Left.Add(p.quarantine)
		if !p.now.Before(release) {
			p.res.Delete = append(p.res.Delete, id)
			continue
		}
		if p.res.NextRelease.IsZero() || release.Before(p.res.NextRelease) {
			p.res.NextRelease = release
		}
	}
}

// allocate gives each node without a chunk its pinned chunk, else the
// lowest free one. Pinned nodes go first, and pinned chunks are never
// handed to another node.
func (p *rangePlanner) allocate(want []SwarmNode) {
	var pins []netip.Prefix
	for _, c := range p.pinned {
		pins = append(pins, c)
	}
	// A pinned chunk of another size than the plan's overlaps chunks of
	// the plan without being one of them.
	reserved := func(c netip.Prefix) bool {
		for _, pin := range pins {
			if pin.Overlaps(c) {
				return true
			}
		}
		return false
	}
	var rest []SwarmNode
	for _, n := range want {
		c, ok := p.pinned[n.Hostname]
		if !ok {
			rest = append(rest, n)
			continue
		}
		if h := p.holder(c); h != "" {
			p.res.Problems = append(p.res.Problems, fmt.Sprintf("node %s (%s) is pinned to %s, which node %s still holds", n.Hostname, n.ID, c, h))
			p.res.Unallocated = append(p.res.Unallocated, n.Hostname)
			continue
		}
		p.used[c] = n.ID
		p.res.Put[n.ID] = state.Allocation{Chunk: c.String(), Node: n.ID, Hostname: n.Hostname, Created: p.now}
	}
	next := 0
	chunks := p.plan.Chunks
	for _, n := range rest {
		for next < len(chunks) && (p.holder(chunks[next]) != "" || reserved(chunks[next])) {
			next++
		}
		if next == len(chunks) {
			p.res.Unallocated = append(p.res.Unallocated, n.Hostname)
			continue
		}
		c := chunks[next]
		p.used[c] = n.ID
		p.res.Put[n.ID] = state.Allocation{Chunk: c.String(), Node: n.ID, Hostname: n.Hostname, Created: p.now}
	}
}

// pinnedChunks merges rangePlan.pinned with the chunks pinned by Host
// documents (a Host document wins).
func pinnedChunks(plan *spec.Plan, vlan string, hosts []*spec.Host) (map[string]netip.Prefix, []string) {
	out := map[string]netip.Prefix{}
	for h, p := range plan.Pinned {
		out[h] = p
	}
	var problems []string
	for _, h := range hosts {
		hv, ok := h.Spec.VLANs[vlan]
		if !ok || hv.Chunk == "" {
			continue
		}
		p, err := netip.ParsePrefix(hv.Chunk)
		if err != nil || p.Bits() != plan.ChunkBits || !plan.Subnet.Contains(p.Addr()) || p.Masked() != p {
			problems = append(problems, fmt.Sprintf("host %s pins %s, which is not a /%d chunk of %s", h.Metadata.Name, hv.Chunk, plan.ChunkBits, plan.Subnet))
			continue
		}
		out[h.Metadata.Name] = p
	}
	return out, problems
}

func joinProblems(ps []string) string { return strings.Join(ps, "; ") }
