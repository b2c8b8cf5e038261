package spec

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

func TestDockerAndHostNames(t *testing.T) {
	v := &VLAN{Metadata: ObjectMeta{Name: "vlan40"}, Spec: VLANSpec{ID: 40}}
	untagged := &VLAN{Metadata: ObjectMeta{Name: "flat"}}
	for _, tt := range []struct{ got, want string }{
		{NetworkName("vlan40"), "vlan40"},
		{ConfigNetworkName("vlan40"), "vlan40-config"},
		{v.NetworkName(), "vlan40"},
		{v.ConfigNetworkName(), "vlan40-config"},
		{SubInterfaceName("bond0", 40), "bond0.40"},
		{SubInterfaceName("bond0", 0), "bond0"},
		{v.SubInterface("bond0"), "bond0.40"},
		{untagged.SubInterface("eth1"), "eth1"},
	} {
		if tt.got != tt.want {
			t.Errorf("name = %q, want %q", tt.got, tt.want)
		}
	}
}

// shimTestHash is the rule's hash, spelled out apart from ShimName.
func shimTestHash(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

func TestShimName(t *testing.T) {
	for _, tt := range []struct{ vlan, want string }{
		{"vlan40", "sv-vlan40"},
		{"abcdefghijkl", "sv-abcdefghijkl"},
		{"abcdefghijklm", "sv-abcde-" + shimTestHash("abcdefghijklm")[:6]},
		{"payments-vlan-4000", "sv-payme-" + shimTestHash("payments-vlan-4000")[:6]},
		{"a:b/c d", "sv-abcd-" + shimTestHash("a:b/c d")[:7]},
		{"wlé0", "sv-wl0-" + shimTestHash("wlé0")[:8]},
		{"", "sv--" + shimTestHash("")[:11]},
	} {
		t.Run(tt.vlan, func(t *testing.T) {
			got := ShimName(tt.vlan)
			if got != tt.want {
				t.Errorf("ShimName(%q) = %q, want %q", tt.vlan, got, tt.want)
			}
			if ifaceName(got) != "" {
				t.Errorf("ShimName(%q) = %q: %s", tt.vlan, got, ifaceName(got))
			}
		})
	}
	if ShimName("payments-vlan-4000") == ShimName("payments-vlan-4001") {
		t.Error("long names sharing a prefix map to one shim")
	}
}

func TestModeDefaults(t *testing.T) {
	two, neg := 2, -1
	for _, tt := range []struct{ got, want any }{
		{VLANDriver(""), "macvlan"},
		{VLANDriver("ipvlan"), "ipvlan"},
		{VLANMode("", ""), "bridge"},
		{VLANMode("macvlan", ""), "bridge"},
		{VLANMode("ipvlan", ""), "l2"},
		{VLANMode("ipvlan", "l3"), "l3"},
		{VLANMode("macvlan", "vepa"), "vepa"},
		{(&ServiceSpec{}).ModeOrDefault(), "replicated"},
		{(&ServiceSpec{Mode: "global"}).ModeOrDefault(), "global"},
		{(&ServiceSpec{Mode: "global"}).IsGlobal(), true},
		{(&ServiceSpec{}).IsGlobal(), false},
		{(*UpdatePolicy)(nil).ParallelismOrDefault(), uint64(1)},
		{(&UpdatePolicy{Parallelism: &two}).ParallelismOrDefault(), uint64(2)},
		{(&UpdatePolicy{Parallelism: &neg}).ParallelismOrDefault(), uint64(0)},
		{(*UpdatePolicy)(nil).FailureActionOrDefault(), "pause"},
		{(&UpdatePolicy{FailureAction: "rollback"}).FailureActionOrDefault(), "rollback"},
		{(*UpdatePolicy)(nil).OrderOrDefault(), "stop-first"},
		{(&UpdatePolicy{Order: "start-first"}).OrderOrDefault(), "start-first"},
		{(*RestartPolicy)(nil).ConditionOrDefault(), "any"},
		{(&RestartPolicy{Condition: "on-failure"}).ConditionOrDefault(), "on-failure"},
		{(*RestartPolicy)(nil).MaxAttemptsPtr() == nil, true},
		{*(&RestartPolicy{MaxAttempts: &two}).MaxAttemptsPtr(), uint64(2)},
	} {
		if tt.got != tt.want {
			t.Errorf("got %v (%T), want %v (%T)", tt.got, tt.got, tt.want, tt.want)
		}
	}
}
