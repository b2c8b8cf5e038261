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
	res := rangePlanResult{Put: map[string]state.Allocation{}}
	inSwarm := map[string]SwarmNode{}
	for _, n := range nodes {
		inSwarm[n.ID] = n
	}
	used := map[netip.Prefix]string{} // chunk -> node holding it
	// odd are held chunks of another size than the plan's (the plan's
	// chunkPrefix changed while they were held): a new chunk must not
	// overlap one of them either, or two nodes would hand out the same
	// addresses.
	var odd []netip.Prefix
	holder := func(c netip.Prefix) string {
		if id := used[c]; id != "" {
			return id
		}
		for _, o := range odd {
			if o.Overlaps(c) {
				return used[o]
			}
		}
		return ""
	}
	valid := map[netip.Prefix]bool{}
	for _, c := range plan.Chunks {
		valid[c] = true
	}
	for _, p := range pinned {
		valid[p] = true
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
			res.Problems = append(res.Problems, fmt.Sprintf("allocation of node %s holds an unreadable chunk %q", id, a.Chunk))
			continue
		}
		used[chunk] = id
		if chunk.Bits() != plan.ChunkBits {
			odd = append(odd, chunk)
		}
		if _, ok := inSwarm[id]; ok {
			if a.Left != nil {
				a.Left = nil // back before the quarantine ended: keeps its chunk
				res.Put[id] = a
			}
			if !valid[chunk] || !plan.Subnet.Contains(chunk.Addr()) || chunk.Bits() != plan.ChunkBits {
				res.Problems = append(res.Problems, fmt.Sprintf("node %s (%s) holds %s, which the new plan no longer contains; the chunk stays until the node leaves the swarm", a.Hostname, id, chunk))
			}
			if want, ok := pinned[a.Hostname]; ok && want != chunk {
				res.Problems = append(res.Problems, fmt.Sprintf("node %s (%s) holds %s but is pinned to %s; the chunk stays until the node leaves the swarm", a.Hostname, id, chunk, want))
			}
			continue
		}
		// The node is gone from the swarm.
		if a.Left == nil {
			left := now
			a.Left = &left
			res.Put[id] = a
		}
		release := a.Left.Add(quarantine)
		if !now.Before(release) {
			res.Delete = append(res.Delete, id)
			continue
		}
		if res.NextRelease.IsZero() || release.Before(res.NextRelease) {
			res.NextRelease = release
		}
	}

	var want []SwarmNode
	for _, n := range nodes {
		if _, ok := have[n.ID]; !ok {
			want = append(want, n)
		}
	}
	sort.Slice(want, func(i, j int) bool { return want[i].ID < want[j].ID })
	// Pinned nodes first, so a pinned chunk is never taken by another node.
	reservedPins := map[netip.Prefix]bool{}
	for host, p := range pinned {
		_ = host
		reservedPins[p] = true
	}
	var rest []SwarmNode
	for _, n := range want {
		p, ok := pinned[n.Hostname]
		if !ok {
			rest = append(rest, n)
			continue
		}
		if h := holder(p); h != "" {
			res.Problems = append(res.Problems, fmt.Sprintf("node %s (%s) is pinned to %s, which node %s still holds", n.Hostname, n.ID, p, h))
			res.Unallocated = append(res.Unallocated, n.Hostname)
			continue
		}
		used[p] = n.ID
		res.Put[n.ID] = state.Allocation{Chunk: p.String(), Node: n.ID, Hostname: n.Hostname, Created: now}
	}
	next := 0
	for _, n := range rest {
		for next < len(plan.Chunks) && (holder(plan.Chunks[next]) != "" || reservedPins[plan.Chunks[next]]) {
			next++
		}
		if next == len(plan.Chunks) {
			res.Unallocated = append(res.Unallocated, n.Hostname)
			continue
		}
		c := plan.Chunks[next]
		used[c] = n.ID
		res.Put[n.ID] = state.Allocation{Chunk: c.String(), Node: n.ID, Hostname: n.Hostname, Created: now}
	}
	sort.Strings(res.Delete)
	sort.Strings(res.Unallocated)
	return res
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
