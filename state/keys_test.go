package state

import (
	"testing"
)

func mustStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return s
}

func TestPrefixNormalised(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "swarmvlan/"},
		{"swarmvlan", "swarmvlan/"},
		{"swarmvlan/", "swarmvlan/"},
		{"/teams/net", "teams/net/"},
		{"/", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := mustStore(t, Config{Prefix: tc.in, Address: "127.0.0.1:1"}).Prefix(); got != tc.want {
				t.Errorf("Prefix() for %q = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestKeyLayout(t *testing.T) {
	s := mustStore(t, Config{Prefix: "sv", Address: "127.0.0.1:1"})
	for _, tc := range []struct {
		name, got, want string
	}{
		{"spec prefix", s.SpecPrefix(), "sv/spec/"},
		{"vlan by kind", s.SpecKey("VLAN", "vlan40"), "sv/spec/vlans/vlan40"},
		{"service by plural", s.SpecKey("services", "web"), "sv/spec/services/web"},
		{"host by lowercase", s.SpecKey("host", "worker1"), "sv/spec/hosts/worker1"},
		{"status prefix", s.StatusPrefix(), "sv/status/"},
		{"status", s.StatusKey("vlans", "vlan40"), "sv/status/vlans/vlan40"},
		{"node status", s.StatusKey(SectionNodes, "n1"), "sv/status/nodes/n1"},
		{"allocation prefix", s.AllocationPrefix("vlan40"), "sv/state/allocations/vlan40/"},
		{"allocation", s.AllocationKey("vlan40", "abc123"), "sv/state/allocations/vlan40/abc123"},
		{"spec kind prefix", s.SpecKindPrefix("VLAN"), "sv/spec/vlans/"},
		{"allocations prefix", s.allocationsPrefix(), "sv/state/allocations/"},
		{"scale prefix", s.ScalePrefix(), "sv/state/scale/"},
		{"scale", s.ScaleKey("web"), "sv/state/scale/web"},
		{"installation", s.InstallationKey(), "sv/state/installation"},
		{"node prefix", s.NodePrefix(), "sv/state/nodes/"},
		{"node", s.NodeKey("abc123"), "sv/state/nodes/abc123"},
		{"leader", s.LeaderKey(), "sv/leader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestParseSpecKey(t *testing.T) {
	s := mustStore(t, Config{Address: "127.0.0.1:1"})
	for _, tc := range []struct {
		key, kind, name string
		ok              bool
	}{
		{"swarmvlan/spec/vlans/vlan40", "VLAN", "vlan40", true},
		{"swarmvlan/spec/services/web", "Service", "web", true},
		{"swarmvlan/spec/hosts/worker1", "Host", "worker1", true},
		{"swarmvlan/spec/vlan/vlan40", "", "", false},    // singular is not the layout
		{"swarmvlan/spec/VLAN/vlan40", "", "", false},    // nor the kind
		{"swarmvlan/spec/widgets/w", "", "", false},      // unknown kind
		{"swarmvlan/spec/vlans/", "", "", false},         // no name
		{"swarmvlan/spec/vlans/a/b", "", "", false},      // nested
		{"swarmvlan/spec/vlans", "", "", false},          // a directory
		{"swarmvlan/status/vlans/vlan40", "", "", false}, // another tree
		{"other/spec/vlans/vlan40", "", "", false},       // another prefix
	} {
		t.Run(tc.key, func(t *testing.T) {
			kind, name, ok := s.ParseSpecKey(tc.key)
			if kind != tc.kind || name != tc.name || ok != tc.ok {
				t.Errorf("ParseSpecKey(%q) = %q, %q, %v; want %q, %q, %v", tc.key, kind, name, ok, tc.kind, tc.name, tc.ok)
			}
		})
	}
	t.Run("round trip", func(t *testing.T) {
		for _, kind := range []string{"VLAN", "Service", "Host"} {
			kind2, name, ok := s.ParseSpecKey(s.SpecKey(kind, "x1"))
			if !ok || kind2 != kind || name != "x1" {
				t.Errorf("ParseSpecKey(SpecKey(%q, x1)) = %q, %q, %v", kind, kind2, name, ok)
			}
		}
	})
}

func TestParseStatusKey(t *testing.T) {
	s := mustStore(t, Config{Address: "127.0.0.1:1"})
	for _, tc := range []struct {
		key, section, name string
		ok                 bool
	}{
		{"swarmvlan/status/vlans/vlan40", "vlans", "vlan40", true},
		{s.StatusKey(SectionNodes, "n1"), SectionNodes, "n1", true},
		{"swarmvlan/status/vlans/", "", "", false},
		{"swarmvlan/status/vlans", "", "", false},
		{"swarmvlan/status//x", "", "", false},
		{"swarmvlan/spec/vlans/vlan40", "", "", false},
	} {
		t.Run(tc.key, func(t *testing.T) {
			section, name, ok := s.ParseStatusKey(tc.key)
			if section != tc.section || name != tc.name || ok != tc.ok {
				t.Errorf("ParseStatusKey(%q) = %q, %q, %v; want %q, %q, %v", tc.key, section, name, ok, tc.section, tc.name, tc.ok)
			}
		})
	}
}

func TestParseLeafKeys(t *testing.T) {
	s := mustStore(t, Config{Address: "127.0.0.1:1"})
	for _, tc := range []struct {
		name  string
		parse func(string) (string, bool)
		key   string
		want  string
		ok    bool
	}{
		{"scale", s.ParseScaleKey, "swarmvlan/state/scale/web", "web", true},
		{"scale round trip", s.ParseScaleKey, s.ScaleKey("api"), "api", true},
		{"scale without name", s.ParseScaleKey, "swarmvlan/state/scale/", "", false},
		{"scale nested", s.ParseScaleKey, "swarmvlan/state/scale/a/b", "", false},
		{"scale of another tree", s.ParseScaleKey, "swarmvlan/state/nodes/web", "", false},
		{"node", s.ParseNodeKey, "swarmvlan/state/nodes/abc123", "abc123", true},
		{"node round trip", s.ParseNodeKey, s.NodeKey("n1"), "n1", true},
		{"node without name", s.ParseNodeKey, "swarmvlan/state/nodes/", "", false},
		{"node nested", s.ParseNodeKey, "swarmvlan/state/nodes/a/b", "", false},
		{"node of another prefix", s.ParseNodeKey, "other/state/nodes/n1", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.parse(tc.key)
			if got != tc.want || ok != tc.ok {
				t.Errorf("parse(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.ok)
			}
		})
	}
}
