package spec

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestSplitChunks(t *testing.T) {
	tests := []struct {
		name    string
		pool    []netip.Prefix
		exclude []netip.Prefix
		bits    int
		want    []netip.Prefix
	}{
		{"whole /22 into /24s", prefixes("10.0.0.0/22"), nil, 24,
			prefixes("10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24")},
		{"exclusions drop overlapping chunks", prefixes("10.0.0.0/22"), prefixes("10.0.0.0/24", "10.0.2.7/32"), 24,
			prefixes("10.0.1.0/24", "10.0.3.0/24")},
		{"an exclusion larger than a chunk", prefixes("10.0.0.0/22"), prefixes("10.0.0.0/23"), 24,
			prefixes("10.0.2.0/24", "10.0.3.0/24")},
		{"pool order does not matter", prefixes("10.0.8.0/24", "10.0.2.0/23", "10.0.1.0/24"), nil, 24,
			prefixes("10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24", "10.0.8.0/24")},
		{"overlapping pool entries give each chunk once", prefixes("10.0.0.0/23", "10.0.1.0/24"), nil, 24,
			prefixes("10.0.0.0/24", "10.0.1.0/24")},
		{"pool entry smaller than a chunk yields nothing", prefixes("10.0.0.0/25", "10.0.1.0/24"), nil, 24,
			prefixes("10.0.1.0/24")},
		{"pool entry with host bits is masked", prefixes("10.0.1.9/24"), nil, 25,
			prefixes("10.0.1.0/25", "10.0.1.128/25")},
		{"chunk the size of the pool", prefixes("10.0.1.0/24"), nil, 24, prefixes("10.0.1.0/24")},
		{"small chunks", prefixes("192.168.0.0/28"), nil, 30,
			prefixes("192.168.0.0/30", "192.168.0.4/30", "192.168.0.8/30", "192.168.0.12/30")},
		{"top of the address space", prefixes("255.255.255.0/24"), nil, 25,
			prefixes("255.255.255.0/25", "255.255.255.128/25")},
		{"everything excluded", prefixes("10.0.0.0/24"), prefixes("10.0.0.0/16"), 26, nil},
		{"no pool", nil, nil, 24, nil},
		{"chunk longer than an address", prefixes("10.0.0.0/24"), nil, 33, nil},
		{"invalid pool entry skipped", []netip.Prefix{{}, netip.MustParsePrefix("10.0.0.0/24")}, nil, 24, prefixes("10.0.0.0/24")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SplitChunks(tt.pool, tt.exclude, tt.bits)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SplitChunks = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestShimAddress(t *testing.T) {
	tests := []struct {
		subnet, chunk, want string
	}{
		{"172.80.0.0/16", "172.80.1.0/24", "172.80.1.255"},
		{"172.80.0.0/16", "172.80.0.0/24", "172.80.0.255"},
		{"172.80.0.0/16", "172.80.255.0/24", "172.80.255.254"}, // the last chunk ends at the broadcast address
		{"10.0.0.0/24", "10.0.0.0/24", "10.0.0.254"},
		{"10.0.0.0/24", "10.0.0.64/26", "10.0.0.127"},
		{"10.0.0.0/24", "10.0.0.252/30", "10.0.0.254"},
		{"10.0.0.0/24", "10.0.0.248/30", "10.0.0.251"},
	}
	for _, tt := range tests {
		t.Run(tt.chunk+" of "+tt.subnet, func(t *testing.T) {
			got := ShimAddress(netip.MustParsePrefix(tt.subnet), netip.MustParsePrefix(tt.chunk))
			if got != netip.MustParseAddr(tt.want) {
				t.Errorf("ShimAddress = %v, want %s", got, tt.want)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	t.Run("SPEC.md example", func(t *testing.T) {
		v := mustDecode[*VLAN](t, string(readTestdata(t, "valid")["vlan40.yaml"]))
		p, err := v.Plan()
		if err != nil {
			t.Fatal(err)
		}
		// 172.80.1.0/24, two /24s of 172.80.2.0/23 and sixteen of 172.80.16.0/20.
		if len(p.Chunks) != 19 {
			t.Fatalf("%d chunks, want 19: %v", len(p.Chunks), p.Chunks)
		}
		want := prefixes("172.80.1.0/24", "172.80.2.0/24", "172.80.3.0/24", "172.80.16.0/24")
		if !reflect.DeepEqual(p.Chunks[:4], want) || p.Chunks[18] != netip.MustParsePrefix("172.80.31.0/24") {
			t.Errorf("chunks = %v", p.Chunks)
		}
		if p.Subnet != netip.MustParsePrefix("172.80.0.0/16") || p.Gateway != netip.MustParseAddr("172.80.0.1") || p.ChunkBits != 24 {
			t.Errorf("plan = %+v", p)
		}
		if !reflect.DeepEqual(p.Pinned, map[string]netip.Prefix{"manager1": netip.MustParsePrefix("172.80.1.0/24")}) {
			t.Errorf("pinned = %v", p.Pinned)
		}
	})
	t.Run("default pool is the subnet", func(t *testing.T) {
		v := mustDecode[*VLAN](t, vlanHeader+"spec: {trunk: eth0, subnet: 172.80.0.0/16, rangePlan: {chunkPrefix: 24, exclude: [172.80.0.0/24, 172.80.255.0/24]}}")
		p, err := v.Plan()
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Chunks) != 254 || p.Chunks[0] != netip.MustParsePrefix("172.80.1.0/24") || p.Chunks[253] != netip.MustParsePrefix("172.80.254.0/24") {
			t.Errorf("%d chunks from %v to %v", len(p.Chunks), p.Chunks[0], p.Chunks[len(p.Chunks)-1])
		}
		if p.Gateway.IsValid() {
			t.Errorf("gateway = %v, want none", p.Gateway)
		}
	})
	t.Run("refuses a plan it cannot compute", func(t *testing.T) {
		for _, spec := range []string{
			"{trunk: eth0, subnet: 172.80.0.0/16, rangePlan: {chunkPrefix: 8}}",
			"{trunk: eth0, subnet: 10.0.0.0/8, rangePlan: {chunkPrefix: 30}}",
			"{trunk: eth0, subnet: nonsense, rangePlan: {chunkPrefix: 24}}",
			"{trunk: eth0, subnet: 172.80.0.0/16, rangePlan: {chunkPrefix: 24, pool: [172.80.0.0/33]}}",
		} {
			v := mustDecode[*VLAN](t, vlanHeader+"spec: "+spec)
			p, err := v.Plan()
			if err == nil || p != nil {
				t.Errorf("%s: Plan = %v, %v; want an error", spec, p, err)
			} else if !strings.HasPrefix(err.Error(), "spec.") {
				t.Errorf("%s: error %q names no field", spec, err)
			}
		}
	})
	t.Run("at most MaxChunks", func(t *testing.T) {
		v := mustDecode[*VLAN](t, vlanHeader+"spec: {trunk: eth0, subnet: 10.0.0.0/8, rangePlan: {chunkPrefix: 24}}")
		p, err := v.Plan()
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Chunks) != MaxChunks {
			t.Errorf("%d chunks, want %d", len(p.Chunks), MaxChunks)
		}
	})
}

func TestNames(t *testing.T) {
	v := mustDecode[*VLAN](t, vlanHeader+"spec: {id: 40, trunk: bond0, subnet: 172.80.0.0/16, rangePlan: {chunkPrefix: 24}}")
	untagged := mustDecode[*VLAN](t, "apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: lan}\nspec: {trunk: eth0, subnet: 10.0.0.0/24, rangePlan: {chunkPrefix: 28}}")
	for _, tt := range []struct{ got, want string }{
		{v.SubInterface("bond0"), "bond0.40"},
		{v.SubInterface("eth1"), "eth1.40"},
		{untagged.SubInterface("eth0"), "eth0"},
		{v.ConfigNetworkName(), "vlan40-config"},
		{v.NetworkName(), "vlan40"},
		{untagged.ConfigNetworkName(), "lan-config"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestTrunkFor(t *testing.T) {
	vlan40 := &VLAN{Metadata: ObjectMeta{Name: "vlan40"}, Spec: VLANSpec{Trunk: "bond0"}}
	vlan50 := &VLAN{Metadata: ObjectMeta{Name: "vlan50"}, Spec: VLANSpec{Trunk: "bond0"}}
	tests := []struct {
		name string
		host *Host
		vlan *VLAN
		want string
	}{
		{"no host document", nil, vlan40, "bond0"},
		{"host without overrides", &Host{}, vlan40, "bond0"},
		{"host trunk", &Host{Spec: HostSpec{Trunk: "eth1"}}, vlan40, "eth1"},
		{"per-VLAN trunk", &Host{Spec: HostSpec{Trunk: "eth1", VLANs: map[string]HostVLAN{"vlan40": {Trunk: "bond1"}}}}, vlan40, "bond1"},
		{"per-VLAN trunk for another VLAN", &Host{Spec: HostSpec{Trunk: "eth1", VLANs: map[string]HostVLAN{"vlan40": {Trunk: "bond1"}}}}, vlan50, "eth1"},
		{"per-VLAN entry with only a chunk", &Host{Spec: HostSpec{VLANs: map[string]HostVLAN{"vlan40": {Chunk: "172.80.9.0/24"}}}}, vlan40, "bond0"},
		{"no VLAN", &Host{Spec: HostSpec{Trunk: "eth1"}}, nil, "eth1"},
		{"nothing", nil, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.host.TrunkFor(tt.vlan); got != tt.want {
				t.Errorf("TrunkFor = %q, want %q", got, tt.want)
			}
		})
	}
}
