package cluster

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"swarmvlan/spec"
	"swarmvlan/state"
)

func testPlan(chunks ...string) *spec.Plan {
	p := &spec.Plan{Subnet: netip.MustParsePrefix("172.80.0.0/16"), ChunkBits: 24}
	for _, c := range chunks {
		p.Chunks = append(p.Chunks, netip.MustParsePrefix(c))
	}
	return p
}

func TestPlanAllocations(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	earlier := now.Add(-5 * time.Minute)
	longAgo := now.Add(-11 * time.Minute)
	alloc := func(node, host, chunk string, left *time.Time) state.Allocation {
		return state.Allocation{Chunk: chunk, Node: node, Hostname: host, Created: earlier, Left: left}
	}
	n1, n2, n3 := SwarmNode{"n1", "h1"}, SwarmNode{"n2", "h2"}, SwarmNode{"n3", "h3"}
	for _, tc := range []struct {
		name        string
		plan        *spec.Plan
		pinned      map[string]string
		nodes       []SwarmNode
		have        map[string]state.Allocation
		wantPut     map[string]string // node -> chunk
		wantDelete  []string
		wantUnalloc []string
		wantProblem bool
	}{
		{
			name:    "lowest free chunks in node order",
			plan:    testPlan("172.80.1.0/24", "172.80.2.0/24", "172.80.3.0/24"),
			nodes:   []SwarmNode{n2, n1},
			wantPut: map[string]string{"n1": "172.80.1.0/24", "n2": "172.80.2.0/24"},
		},
		{
			name:        "a chunk of an older, larger chunk size keeps its addresses to itself",
			plan:        testPlan("172.80.0.0/24", "172.80.1.0/24", "172.80.2.0/24"),
			nodes:       []SwarmNode{n1, n2},
			have:        map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.0.0/23", nil)},
			wantPut:     map[string]string{"n2": "172.80.2.0/24"},
			wantProblem: true,
		},
		{
			name:    "existing allocations never move; a new node takes the gap",
			plan:    testPlan("172.80.1.0/24", "172.80.2.0/24", "172.80.3.0/24"),
			nodes:   []SwarmNode{n1, n2, n3},
			have:    map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.2.0/24", nil), "n2": alloc("n2", "h2", "172.80.3.0/24", nil)},
			wantPut: map[string]string{"n3": "172.80.1.0/24"},
		},
		{
			name:    "pinned chunk goes to its host and is never handed to another",
			plan:    testPlan("172.80.1.0/24", "172.80.2.0/24"),
			pinned:  map[string]string{"h3": "172.80.1.0/24"},
			nodes:   []SwarmNode{n1},
			wantPut: map[string]string{"n1": "172.80.2.0/24"},
		},
		{
			name:    "pinned host joins",
			plan:    testPlan("172.80.1.0/24", "172.80.2.0/24"),
			pinned:  map[string]string{"h3": "172.80.9.0/24"},
			nodes:   []SwarmNode{n3, n1},
			wantPut: map[string]string{"n1": "172.80.1.0/24", "n3": "172.80.9.0/24"},
		},
		{
			name:        "exhausted pool names the nodes without a chunk",
			plan:        testPlan("172.80.1.0/24"),
			nodes:       []SwarmNode{n1, n2, n3},
			wantPut:     map[string]string{"n1": "172.80.1.0/24"},
			wantUnalloc: []string{"h2", "h3"},
		},
		{
			name:    "node gone: quarantine starts, chunk stays held",
			plan:    testPlan("172.80.1.0/24", "172.80.2.0/24"),
			nodes:   []SwarmNode{n2},
			have:    map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.1.0/24", nil)},
			wantPut: map[string]string{"n1": "172.80.1.0/24", "n2": "172.80.2.0/24"},
		},
		{
			name:        "quarantine not over: a new node cannot take the chunk",
			plan:        testPlan("172.80.1.0/24"),
			nodes:       []SwarmNode{n2},
			have:        map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.1.0/24", &earlier)},
			wantPut:     map[string]string{},
			wantUnalloc: []string{"h2"},
		},
		{
			name:       "quarantine over: allocation deleted",
			plan:       testPlan("172.80.1.0/24"),
			nodes:      nil,
			have:       map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.1.0/24", &longAgo)},
			wantPut:    map[string]string{},
			wantDelete: []string{"n1"},
		},
		{
			name:    "node back within quarantine keeps its chunk",
			plan:    testPlan("172.80.1.0/24"),
			nodes:   []SwarmNode{n1},
			have:    map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.1.0/24", &earlier)},
			wantPut: map[string]string{"n1": "172.80.1.0/24"},
		},
		{
			// An adopted range of another size is pinned as it was cut:
			// a new node gets no chunk inside it.
			name:    "pinned chunk of another size",
			plan:    testPlan("172.80.1.0/24", "172.80.2.0/24", "172.80.3.0/24", "172.80.4.0/24"),
			pinned:  map[string]string{"h1": "172.80.0.0/23", "h2": "172.80.2.0/24"},
			nodes:   []SwarmNode{n1, n2, n3},
			wantPut: map[string]string{"n1": "172.80.0.0/23", "n2": "172.80.2.0/24", "n3": "172.80.3.0/24"},
		},
		{
			name:    "held pinned chunk of another size is no problem",
			plan:    testPlan("172.80.1.0/24", "172.80.2.0/24"),
			pinned:  map[string]string{"h1": "172.80.0.0/23"},
			nodes:   []SwarmNode{n1},
			have:    map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.0.0/23", nil)},
			wantPut: map[string]string{},
		},
		{
			name:        "plan change that would move a chunk in use is refused",
			plan:        testPlan("172.80.5.0/24"),
			nodes:       []SwarmNode{n1},
			have:        map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.1.0/24", nil)},
			wantPut:     map[string]string{},
			wantProblem: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pinned := map[string]netip.Prefix{}
			for h, c := range tc.pinned {
				pinned[h] = netip.MustParsePrefix(c)
			}
			res := planAllocations(tc.plan, pinned, tc.nodes, tc.have, now, 10*time.Minute)
			got := map[string]string{}
			for id, a := range res.Put {
				got[id] = a.Chunk
				if a.Node != id {
					t.Errorf("allocation for %s names node %s", id, a.Node)
				}
			}
			want := tc.wantPut
			if want == nil {
				want = map[string]string{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("put = %v, want %v", got, want)
			}
			if !reflect.DeepEqual(res.Delete, tc.wantDelete) {
				t.Errorf("delete = %v, want %v", res.Delete, tc.wantDelete)
			}
			if !reflect.DeepEqual(res.Unallocated, tc.wantUnalloc) {
				t.Errorf("unallocated = %v, want %v", res.Unallocated, tc.wantUnalloc)
			}
			if (len(res.Problems) > 0) != tc.wantProblem {
				t.Errorf("problems = %v, want some: %v", res.Problems, tc.wantProblem)
			}
			// Whatever happens, no chunk is held twice.
			seen := map[string]string{}
			all := map[string]state.Allocation{}
			for id, a := range tc.have {
				all[id] = a
			}
			for id, a := range res.Put {
				all[id] = a
			}
			for _, id := range res.Delete {
				delete(all, id)
			}
			for id, a := range all {
				if other, dup := seen[a.Chunk]; dup {
					t.Fatalf("chunk %s held by %s and %s", a.Chunk, id, other)
				}
				seen[a.Chunk] = id
			}
		})
	}
}

func TestPlanAllocationsQuarantineStartsAtDeparture(t *testing.T) {
	now := time.Now()
	res := planAllocations(testPlan("172.80.1.0/24"), nil, nil,
		map[string]state.Allocation{"n1": {Chunk: "172.80.1.0/24", Node: "n1", Hostname: "h1"}}, now, 10*time.Minute)
	a := res.Put["n1"]
	if a.Left == nil || !a.Left.Equal(now) {
		t.Fatalf("Left = %v, want %v", a.Left, now)
	}
	if !res.NextRelease.Equal(now.Add(10 * time.Minute)) {
		t.Fatalf("NextRelease = %v, want %v", res.NextRelease, now.Add(10*time.Minute))
	}
}
