package cluster

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// previewVLAN is vlan40 on 172.80.0.0/22 with /24 chunks: four chunks,
// 172.80.0.0/24 to 172.80.3.0/24.
func previewVLAN(edit func(*spec.RangePlan)) *spec.VLAN {
	v := &spec.VLAN{
		Metadata: spec.ObjectMeta{Name: "vlan40"},
		Spec: spec.VLANSpec{
			ID: 40, Trunk: "bond0", Subnet: "172.80.0.0/22", Gateway: "172.80.0.1",
			RangePlan: spec.RangePlan{ChunkPrefix: 24},
		},
	}
	if edit != nil {
		edit(&v.Spec.RangePlan)
	}
	spec.SetDefaults(v)
	return v
}

// chunkLines renders a chunk map compactly for comparison.
func chunkLines(rs []ChunkRange) []string {
	var out []string
	for _, r := range rs {
		s := r.First
		if r.Count > 1 {
			s += ".." + r.Last
		}
		s += " " + string(r.State)
		if r.Hostname != "" {
			s += " " + r.Hostname
		}
		if r.PinnedTo != "" {
			s += " pin:" + r.PinnedTo
		}
		if r.Until != nil {
			s += " until:" + r.Until.Format("15:04")
		}
		if r.Shim != "" {
			s += " shim:" + r.Shim
		}
		if r.OutsidePlan {
			s += " outside"
		}
		out = append(out, s)
	}
	return out
}

// nodeLines renders node rows as "hostname change now>next".
func nodeLines(ns []NodePreview) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Hostname+" "+string(n.Change)+" "+n.Now+">"+n.Next)
	}
	return out
}

func TestPreviewRangePlan(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	alloc := func(node, host, chunk string, left time.Duration) state.Allocation {
		a := state.Allocation{Chunk: chunk, Node: node, Hostname: host, Created: now.Add(-time.Hour)}
		if left != 0 {
			l := now.Add(-left)
			a.Left = &l
		}
		return a
	}
	n1, n2, n3 := SwarmNode{"n1", "h1"}, SwarmNode{"n2", "h2"}, SwarmNode{"n3", "h3"}
	for _, tc := range []struct {
		name        string
		vlan        *spec.VLAN
		hosts       []*spec.Host
		nodes       []SwarmNode
		have        map[string]state.Allocation
		wantChunks  []string
		wantNodes   []string
		wantFree    int
		wantUnalloc []string
		wantReason  map[string]string // hostname -> part of its reason
		wantProblem []string          // parts of problems, in order
	}{
		{
			name: "excluded and pinned chunks are skipped by joining nodes",
			vlan: previewVLAN(func(rp *spec.RangePlan) {
				rp.Exclude = []string{"172.80.0.0/24"}
				rp.Pinned = map[string]string{"h3": "172.80.1.0/24"}
			}),
			nodes: []SwarmNode{n2, n1},
			wantChunks: []string{
				"172.80.0.0/24 excluded",
				"172.80.1.0/24 pinned pin:h3",
				"172.80.2.0/24 allocated h1 shim:172.80.2.255",
				"172.80.3.0/24 allocated h2 shim:172.80.3.254", // .255 is the subnet's broadcast
			},
			wantNodes: []string{"h1 new >172.80.2.0/24", "h2 new >172.80.3.0/24"},
		},
		{
			name:  "a pinned host joining gets its chunk",
			vlan:  previewVLAN(func(rp *spec.RangePlan) { rp.Pinned = map[string]string{"h3": "172.80.2.0/24"} }),
			nodes: []SwarmNode{n3},
			wantChunks: []string{
				"172.80.0.0/24..172.80.1.0/24 free",
				"172.80.2.0/24 allocated h3 pin:h3 shim:172.80.2.255",
				"172.80.3.0/24 free",
			},
			wantNodes:  []string{"h3 new >172.80.2.0/24"},
			wantFree:   3,
			wantReason: map[string]string{"h3": "pinned"},
		},
		{
			name: "a Host document's pin wins over rangePlan.pinned",
			vlan: previewVLAN(func(rp *spec.RangePlan) { rp.Pinned = map[string]string{"h3": "172.80.2.0/24"} }),
			hosts: []*spec.Host{{Metadata: spec.ObjectMeta{Name: "h3"}, Spec: spec.HostSpec{
				VLANs: map[string]spec.HostVLAN{"vlan40": {Chunk: "172.80.1.0/24"}}}}},
			nodes:     []SwarmNode{n3},
			wantNodes: []string{"h3 new >172.80.1.0/24"},
			wantChunks: []string{
				"172.80.0.0/24 free",
				"172.80.1.0/24 allocated h3 pin:h3 shim:172.80.1.255",
				"172.80.2.0/24..172.80.3.0/24 free",
			},
			wantFree: 3,
		},
		{
			name:  "departed nodes: quarantine starts, runs, ends",
			vlan:  previewVLAN(nil),
			nodes: []SwarmNode{n3},
			have: map[string]state.Allocation{
				"n1": alloc("n1", "h1", "172.80.0.0/24", 0),              // just left
				"n2": alloc("n2", "h2", "172.80.1.0/24", 4*time.Minute),  // left 4m ago
				"n4": alloc("n4", "h4", "172.80.2.0/24", 11*time.Minute), // quarantine over
				"n3": alloc("n3", "h3", "172.80.3.0/24", 2*time.Minute),  // came back
			},
			wantChunks: []string{
				"172.80.0.0/24 quarantined h1 until:03:10",
				"172.80.1.0/24 quarantined h2 until:03:06",
				"172.80.2.0/24 free",
				"172.80.3.0/24 allocated h3 shim:172.80.3.254",
			},
			wantNodes: []string{
				"h1 leaving 172.80.0.0/24>172.80.0.0/24",
				"h2 quarantined 172.80.1.0/24>172.80.1.0/24",
				"h3 returned 172.80.3.0/24>172.80.3.0/24",
				"h4 released 172.80.2.0/24>",
			},
			wantFree: 1,
		},
		{
			name:  "a quarantined chunk is not handed to a joining node",
			vlan:  previewVLAN(func(rp *spec.RangePlan) { rp.Pool = []string{"172.80.0.0/23"} }),
			nodes: []SwarmNode{n2, n3},
			have:  map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.0.0/24", time.Minute)},
			wantChunks: []string{
				"172.80.0.0/24 quarantined h1 until:03:09",
				"172.80.1.0/24 allocated h2 shim:172.80.1.255",
			},
			wantNodes:   []string{"h1 quarantined 172.80.0.0/24>172.80.0.0/24", "h2 new >172.80.1.0/24", "h3 unallocated >"},
			wantUnalloc: []string{"h3"},
			wantReason:  map[string]string{"h3": "pool exhausted"},
		},
		{
			name:        "pool exhausted lists the nodes without a chunk",
			vlan:        previewVLAN(func(rp *spec.RangePlan) { rp.Exclude = []string{"172.80.1.0/24", "172.80.2.0/23"} }),
			nodes:       []SwarmNode{n1, n2, n3},
			wantChunks:  []string{"172.80.0.0/24 allocated h1 shim:172.80.0.255", "172.80.1.0/24..172.80.3.0/24 excluded"},
			wantNodes:   []string{"h1 new >172.80.0.0/24", "h2 unallocated >", "h3 unallocated >"},
			wantUnalloc: []string{"h2", "h3"},
			wantReason:  map[string]string{"h2": "pool exhausted", "h3": "pool exhausted"},
		},
		{
			name:  "a change that would move a chunk in use is refused",
			vlan:  previewVLAN(func(rp *spec.RangePlan) { rp.Exclude = []string{"172.80.1.0/24"} }),
			nodes: []SwarmNode{n1},
			have:  map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.1.0/24", 0)},
			wantChunks: []string{
				"172.80.0.0/24 free",
				"172.80.1.0/24 allocated h1 shim:172.80.1.255 outside",
				"172.80.2.0/24..172.80.3.0/24 free",
			},
			wantNodes:   []string{"h1 refused 172.80.1.0/24>172.80.1.0/24"},
			wantFree:    3,
			wantReason:  map[string]string{"h1": "which the new plan no longer contains"},
			wantProblem: []string{"node h1 (n1) holds 172.80.1.0/24, which the new plan no longer contains"},
		},
		{
			name:  "a new pin for a host holding another chunk is refused",
			vlan:  previewVLAN(func(rp *spec.RangePlan) { rp.Pinned = map[string]string{"h1": "172.80.3.0/24", "h2": "172.80.1.0/24"} }),
			nodes: []SwarmNode{n1, n2},
			have:  map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.1.0/24", 0)},
			wantChunks: []string{
				"172.80.0.0/24 free",
				"172.80.1.0/24 allocated h1 pin:h2 shim:172.80.1.255",
				"172.80.2.0/24 free",
				"172.80.3.0/24 pinned pin:h1",
			},
			wantNodes:   []string{"h1 refused 172.80.1.0/24>172.80.1.0/24", "h2 unallocated >"},
			wantFree:    2,
			wantUnalloc: []string{"h2"},
			wantReason:  map[string]string{"h1": "is pinned to 172.80.3.0/24", "h2": "which node n1 still holds"},
			wantProblem: []string{"node h1 (n1) holds 172.80.1.0/24 but is pinned to 172.80.3.0/24", "node h2 (n2) is pinned to 172.80.1.0/24, which node n1 still holds"},
		},
		{
			name:  "a smaller chunkPrefix hands out no address inside a held chunk",
			vlan:  previewVLAN(nil),
			nodes: []SwarmNode{n1, n2},
			have:  map[string]state.Allocation{"n1": alloc("n1", "h1", "172.80.0.0/23", 0)},
			wantChunks: []string{
				"172.80.0.0/23 allocated h1 shim:172.80.1.255 outside",
				"172.80.2.0/24 allocated h2 shim:172.80.2.255",
				"172.80.3.0/24 free",
			},
			wantNodes:   []string{"h1 refused 172.80.0.0/23>172.80.0.0/23", "h2 new >172.80.2.0/24"},
			wantFree:    1,
			wantProblem: []string{"node h1 (n1) holds 172.80.0.0/23"},
		},
		{
			name:       "no shim without host access",
			vlan:       func() *spec.VLAN { v := previewVLAN(nil); f := false; v.Spec.HostAccess = &f; return v }(),
			nodes:      []SwarmNode{n1},
			wantChunks: []string{"172.80.0.0/24 allocated h1", "172.80.1.0/24..172.80.3.0/24 free"},
			wantNodes:  []string{"h1 new >172.80.0.0/24"},
			wantFree:   3,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := map[string]state.Allocation{}
			for k, v := range tc.have {
				before[k] = v
			}
			p, err := PreviewRangePlan(tc.vlan, tc.hosts, tc.nodes, tc.have, now)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tc.have, before) && len(tc.have) > 0 {
				t.Errorf("the preview changed its input allocations")
			}
			if got := chunkLines(p.Chunks); !reflect.DeepEqual(got, tc.wantChunks) {
				t.Errorf("chunks:\n got %q\nwant %q", got, tc.wantChunks)
			}
			if got := nodeLines(p.Nodes); !reflect.DeepEqual(got, tc.wantNodes) {
				t.Errorf("nodes:\n got %q\nwant %q", got, tc.wantNodes)
			}
			if p.FreeChunks != tc.wantFree {
				t.Errorf("free chunks %d, want %d", p.FreeChunks, tc.wantFree)
			}
			if !reflect.DeepEqual(p.Unallocated, tc.wantUnalloc) {
				t.Errorf("unallocated %q, want %q", p.Unallocated, tc.wantUnalloc)
			}
			for _, n := range p.Nodes {
				if want := tc.wantReason[n.Hostname]; !strings.Contains(n.Reason, want) {
					t.Errorf("%s: reason %q lacks %q", n.Hostname, n.Reason, want)
				}
			}
			if len(p.Problems) != len(tc.wantProblem) {
				t.Fatalf("problems %q, want %d like %q", p.Problems, len(tc.wantProblem), tc.wantProblem)
			}
			for i, want := range tc.wantProblem {
				if !strings.Contains(p.Problems[i], want) {
					t.Errorf("problem %d %q lacks %q", i, p.Problems[i], want)
				}
			}
		})
	}
}

func TestPreviewRangePlanHeader(t *testing.T) {
	v := previewVLAN(func(rp *spec.RangePlan) { rp.Exclude = []string{"172.80.0.0/25"} })
	p, err := PreviewRangePlan(v, nil, nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if p.VLAN != "vlan40" || p.Subnet != "172.80.0.0/22" || p.Gateway != "172.80.0.1" || p.ChunkPrefix != 24 ||
		!reflect.DeepEqual(p.Pool, []string{"172.80.0.0/22"}) || !reflect.DeepEqual(p.Exclude, []string{"172.80.0.0/25"}) || p.Quarantine != "10m" {
		t.Errorf("header: %+v", p)
	}
	// An exclusion smaller than a chunk excludes the whole chunk.
	if got := chunkLines(p.Chunks); got[0] != "172.80.0.0/24 excluded" || p.FreeChunks != 3 {
		t.Errorf("chunks %q, free %d", got, p.FreeChunks)
	}
}

func TestPreviewRangePlanRefusesAnInvalidPlan(t *testing.T) {
	v := previewVLAN(func(rp *spec.RangePlan) { rp.ChunkPrefix = 8 })
	if _, err := PreviewRangePlan(v, nil, nil, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "chunkPrefix") {
		t.Errorf("err = %v, want a chunkPrefix problem", err)
	}
}
