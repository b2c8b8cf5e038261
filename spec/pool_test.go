package spec

import (
	"net/netip"
	"strings"
	"testing"
)

func TestPoolMath(t *testing.T) {
	v := mustDecode[*VLAN](t, vlanHeader+"spec: {trunk: eth0, subnet: 10.5.0.0/26, gateway: 10.5.0.62, rangePlan: {mode: cluster, exclude: [10.5.0.8/30]}}")
	if err := Validate(v); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if v.RangeMode() != RangeModeCluster {
		t.Fatalf("mode %q", v.RangeMode())
	}
	p, err := v.Pool()
	if err != nil {
		t.Fatal(err)
	}
	// 64 addresses less network, broadcast, gateway and the four excluded.
	if got := p.Size(); got != 64-3-4 {
		t.Errorf("size = %d, want 57", got)
	}
	for a, want := range map[string]bool{
		"10.5.0.0": false, "10.5.0.63": false, "10.5.0.62": false, "10.5.0.9": false,
		"10.5.0.1": true, "10.5.0.12": true, "10.5.0.61": true, "10.5.1.1": false,
	} {
		if got := p.Usable(netip.MustParseAddr(a)); got != want {
			t.Errorf("Usable(%s) = %v, want %v", a, got, want)
		}
	}
	var first netip.Addr
	p.Each(func(a netip.Addr) bool { first = a; return false })
	if first != netip.MustParseAddr("10.5.0.1") {
		t.Errorf("first = %s", first)
	}

	// Without a gateway in the document the subnet's first address is the
	// gateway (what the config network is given), so it is not leased.
	v = mustDecode[*VLAN](t, vlanHeader+"spec: {trunk: eth0, subnet: 10.5.0.0/26, rangePlan: {mode: cluster, pool: [10.5.0.0/27]}}")
	p, err = v.Pool()
	if err != nil {
		t.Fatal(err)
	}
	if p.Usable(netip.MustParseAddr("10.5.0.1")) || !p.Usable(netip.MustParseAddr("10.5.0.2")) || p.Usable(netip.MustParseAddr("10.5.0.40")) {
		t.Error("pool of 10.5.0.0/27 without gateway: wrong usable set")
	}
	if got := p.Size(); got != 32-2 {
		t.Errorf("size = %d, want 30", got)
	}
}

func TestPoolID(t *testing.T) {
	id := PoolID("vlan40", netip.MustParsePrefix("10.5.0.0/26"))
	vlan, subnet, err := ParsePoolID(id)
	if err != nil || vlan != "vlan40" || subnet != netip.MustParsePrefix("10.5.0.0/26") {
		t.Fatalf("ParsePoolID(%q) = %q %s %v", id, vlan, subnet, err)
	}
	for _, bad := range []string{"", "vlan40", "/10.0.0.0/8", "vlan40/10.0.0.0", "vlan/x/24"} {
		if _, _, err := ParsePoolID(bad); err == nil {
			t.Errorf("ParsePoolID(%q): no error", bad)
		}
	}
}

func TestClusterModeValidation(t *testing.T) {
	tests := []struct{ doc, want string }{
		{"{trunk: eth0, subnet: 10.5.0.0/26, rangePlan: {mode: pools}}", `spec.rangePlan.mode: "pools" is not a mode: chunks or cluster`},
		{"{trunk: eth0, subnet: 10.5.0.0/26, rangePlan: {mode: cluster, pinned: {h1: 10.5.0.0/28}}}", "spec.rangePlan.pinned: pinned chunks need mode chunks"},
		{"{trunk: eth0, subnet: 10.5.0.0/26, rangePlan: {mode: chunks}}", "spec.rangePlan.chunkPrefix: required"},
	}
	for _, tt := range tests {
		v := mustDecode[*VLAN](t, vlanHeader+"spec: "+tt.doc)
		err := Validate(v)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.doc, err, tt.want)
		}
	}
	ok := mustDecode[*VLAN](t, vlanHeader+"spec: {trunk: eth0, subnet: 10.5.0.0/26, rangePlan: {mode: cluster}}")
	if err := Validate(ok); err != nil {
		t.Errorf("cluster without chunkPrefix: %v", err)
	}
}
