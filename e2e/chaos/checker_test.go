package chaos

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"swarmvlan/state"
)

// The rules on observations made by hand: each finding must be reported
// once it is seen in two polls running, and not before.
func TestCheckerRules(t *testing.T) {
	chunk := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	addr := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	base := func() *obs {
		return &obs{
			at:     time.Now(),
			unread: map[string]bool{},
			chunks: map[string]netip.Prefix{"h1": chunk("172.80.1.0/24"), "h2": chunk("172.80.2.0/24")},
			config: map[string]string{"h1/vlan80-config": "n1", "h2/vlan80-config": "n2"},
			tasks: []task{
				{host: "h1", service: "web", container: "c1", vlan: chunksVLAN, addr: addr("172.80.1.5")},
				{host: "h2", service: "api", container: "c2", vlan: poolVLAN, addr: addr("172.81.0.9")},
			},
			services: map[string]swarmService{"web": {id: "s1", replicas: 4}, "api": {id: "s2", replicas: 3}},
			swarmOK:  true,
			consulOK: true,
			allocs: map[string]state.Allocation{
				"id1": {Chunk: "172.80.1.0/24", Node: "id1"},
				"id2": {Chunk: "172.80.2.0/24", Node: "id2"},
			},
			leases:  map[netip.Addr]state.Lease{addr("172.81.0.9"): {Node: "id2", Kind: state.LeaseTask}},
			passing: []entry{{id: "e1", service: "web", node: "h1", addr: addr("172.80.1.5")}},
			foreign: foreign{serviceID: "f1", overlayID: "o1", keys: map[string]uint64{foreignKey: 7}},
		}
	}
	cases := []struct {
		name, want string
		change     func(o *obs, c *checker)
	}{
		{"clean", "", func(o *obs, c *checker) {}},
		{"duplicate address", "safety: dup", func(o *obs, c *checker) {
			o.tasks = append(o.tasks, task{host: "h2", service: "web", container: "c3", vlan: chunksVLAN, addr: addr("172.80.1.5")})
		}},
		{"outside the chunk", "safety: chunk", func(o *obs, c *checker) { o.tasks[0].addr = addr("172.80.3.5") }},
		{"chunks overlap", "safety: chunks", func(o *obs, c *checker) { o.chunks["h2"] = chunk("172.80.1.0/25") }},
		{"allocations overlap", "safety: allocs", func(o *obs, c *checker) {
			o.allocs["id3"] = state.Allocation{Chunk: "172.80.2.0/23", Node: "id3"}
		}},
		{"chunk in use allocated to another node", "safety: taken", func(o *obs, c *checker) {
			o.allocs["id3"] = state.Allocation{Chunk: "172.80.2.128/25", Node: "id3"}
			o.chunks["h3"] = chunk("172.80.3.0/24")
		}},
		{"outside the pool", "safety: pool", func(o *obs, c *checker) { o.tasks[1].addr = addr("172.81.0.1") }},
		{"lease of another node", "safety: lease", func(o *obs, c *checker) {
			o.leases[addr("172.81.0.9")] = state.Lease{Node: "id1", Kind: state.LeaseTask}
		}},
		{"lease released", "safety: lease", func(o *obs, c *checker) {
			now := time.Now()
			o.leases[addr("172.81.0.9")] = state.Lease{Node: "id2", Kind: state.LeaseTask, Released: &now}
		}},
		{"replicas past the bounds", "safety: replicas", func(o *obs, c *checker) { o.services["web"] = swarmService{id: "s1", replicas: 7} }},
		{"intent past the bounds", "safety: intent", func(o *obs, c *checker) {
			o.scale = map[string]state.ScaleIntent{"api": {Replicas: 0}}
		}},
		{"foreign service changed", "safety: foreign", func(o *obs, c *checker) { o.foreign.serviceID = "f2" }},
		{"foreign key changed", "safety: foreign", func(o *obs, c *checker) { o.foreign.keys[foreignKey] = 8 }},
		{"config network removed while frozen", "safety: removed", func(o *obs, c *checker) {
			c.frozen["h2"] = map[string]string{"vlan80-config": "n2"}
			delete(o.config, "h2/vlan80-config")
		}},
		{"service removed while frozen", "safety: removed", func(o *obs, c *checker) {
			c.frozenServices = map[string]string{"web": "s1"}
			delete(o.services, "web")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			r := newRun(nil, nil, 1)
			r.hostIDs = map[string][]string{"h1": {"id1"}, "h2": {"id2"}}
			r.report = func(s string) { got = append(got, s) }
			c := newChecker(r, foreign{serviceID: "f1", overlayID: "o1", keys: map[string]uint64{foreignKey: 7}})
			o := base()
			tc.change(o, c)
			c.check(o)
			if len(got) > 0 {
				t.Fatalf("reported after one poll: %v", got)
			}
			o2 := base()
			tc.change(o2, c)
			c.check(o2)
			switch {
			case tc.want == "" && len(got) > 0:
				t.Fatalf("reported on a clean state: %v", got)
			case tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)):
				t.Fatalf("want one report of %q, got %v", tc.want, got)
			}
		})
	}

	// A passing entry with no task: reported only past its bound.
	var got []string
	r := newRun(nil, nil, 1)
	r.hostIDs = map[string][]string{"h1": {"id1"}, "h2": {"id2"}}
	r.report = func(s string) { got = append(got, s) }
	c := newChecker(r, foreign{serviceID: "f1", overlayID: "o1", keys: map[string]uint64{foreignKey: 7}})
	at := time.Now()
	for _, d := range []time.Duration{0, staleBound / 2, staleBound + time.Second} {
		o := base()
		o.at = at.Add(d)
		o.tasks = o.tasks[1:]
		c.check(o)
		if d <= staleBound && len(got) > 0 {
			t.Fatalf("stale entry reported %s after it was seen: %v", d, got)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0], "liveness: passing entry") {
		t.Fatalf("stale entry past its bound: got %v", got)
	}

	// Right after a snapshot restore, the longer bound.
	got = nil
	c = newChecker(r, foreign{serviceID: "f1", overlayID: "o1", keys: map[string]uint64{foreignKey: 7}})
	r.restored = at
	for _, d := range []time.Duration{time.Second, staleBound + time.Second, staleBoundRestore - time.Second, staleBoundRestore + time.Second} {
		o := base()
		o.at = at.Add(d)
		o.tasks = o.tasks[1:]
		c.check(o)
		if d < staleBoundRestore && len(got) > 0 {
			t.Fatalf("stale entry after a restore reported %s after the restore: %v", d, got)
		}
	}
	if len(got) != 1 {
		t.Fatalf("stale entry after a restore, past its bound: got %v", got)
	}
}
