package spec

import (
	"encoding/json"
	"testing"
)

func TestSetDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // canonical JSON after SetDefaults
	}{
		{"vlan: everything omitted",
			vlanHeader + "spec: {trunk: eth0, subnet: 10.0.0.0/16, rangePlan: {chunkPrefix: 24}}",
			`{"apiVersion":"swarmvlan/v1","kind":"VLAN","metadata":{"name":"vlan40"},"spec":{"driver":"macvlan","hostAccess":true,"mode":"bridge","promiscuous":true,"rangePlan":{"chunkPrefix":24,"quarantine":"10m"},"subnet":"10.0.0.0/16","trunk":"eth0"}}`},
		{"vlan: ipvlan defaults to l2",
			vlanHeader + "spec: {trunk: eth0, driver: ipvlan, subnet: 10.0.0.0/16, rangePlan: {chunkPrefix: 24}}",
			`{"apiVersion":"swarmvlan/v1","kind":"VLAN","metadata":{"name":"vlan40"},"spec":{"driver":"ipvlan","hostAccess":true,"mode":"l2","promiscuous":true,"rangePlan":{"chunkPrefix":24,"quarantine":"10m"},"subnet":"10.0.0.0/16","trunk":"eth0"}}`},
		{"vlan: explicit values kept",
			vlanHeader + "spec: {trunk: eth0, mode: vepa, promiscuous: false, hostAccess: false, subnet: 10.0.0.0/16, rangePlan: {chunkPrefix: 24, quarantine: 0s}}",
			`{"apiVersion":"swarmvlan/v1","kind":"VLAN","metadata":{"name":"vlan40"},"spec":{"driver":"macvlan","hostAccess":false,"mode":"vepa","promiscuous":false,"rangePlan":{"chunkPrefix":24,"quarantine":"0s"},"subnet":"10.0.0.0/16","trunk":"eth0"}}`},
		{"service: replicated with one replica",
			serviceHeader + "spec: {image: web, networks: [vlan40]}",
			`{"apiVersion":"swarmvlan/v1","kind":"Service","metadata":{"name":"web"},"spec":{"image":"web","mode":"replicated","networks":["vlan40"],"replicas":1}}`},
		{"service: replicas 0 kept",
			serviceHeader + "spec: {image: web, networks: [vlan40], replicas: 0}",
			`{"apiVersion":"swarmvlan/v1","kind":"Service","metadata":{"name":"web"},"spec":{"image":"web","mode":"replicated","networks":["vlan40"],"replicas":0}}`},
		{"service: global has no replicas",
			serviceHeader + "spec: {image: web, networks: [vlan40], mode: global}",
			`{"apiVersion":"swarmvlan/v1","kind":"Service","metadata":{"name":"web"},"spec":{"image":"web","mode":"global","networks":["vlan40"]}}`},
		{"service: scaling step, replicas from scaling.min, consul service name",
			serviceHeader + "spec: {image: web, networks: [vlan40], scaling: {min: 3, max: 5}, consul: {port: 80}}",
			`{"apiVersion":"swarmvlan/v1","kind":"Service","metadata":{"name":"web"},"spec":{"consul":{"port":80,"service":"web"},"image":"web","mode":"replicated","networks":["vlan40"],"replicas":3,"scaling":{"max":5,"min":3,"step":1}}}`},
		{"service: explicit values kept",
			serviceHeader + "spec: {image: web, networks: [vlan40], replicas: 4, scaling: {min: 0, max: 5, step: 2}, consul: {service: www, port: 80}}",
			`{"apiVersion":"swarmvlan/v1","kind":"Service","metadata":{"name":"web"},"spec":{"consul":{"port":80,"service":"www"},"image":"web","mode":"replicated","networks":["vlan40"],"replicas":4,"scaling":{"max":5,"min":0,"step":2}}}`},
		{"host: nothing to default",
			"apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: w}\n",
			`{"apiVersion":"swarmvlan/v1","kind":"Host","metadata":{"name":"w"},"spec":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Decode([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			SetDefaults(o)
			got, err := canonicalJSON(o)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("after SetDefaults\n%s\nwant\n%s", got, tt.want)
			}
			SetDefaults(o)
			again, _ := canonicalJSON(o)
			if string(again) != string(got) {
				t.Errorf("SetDefaults is not idempotent:\n%s\nthen\n%s", got, again)
			}
			if err := Validate(o); err != nil {
				t.Errorf("defaulted document does not validate: %v", err)
			}
		})
	}
}

func TestSetDefaultsFillsHeader(t *testing.T) {
	for _, o := range []Object{&VLAN{}, &Service{}, &Host{}} {
		SetDefaults(o)
		b, _ := json.Marshal(o)
		var h struct{ APIVersion, Kind string }
		if err := json.Unmarshal(b, &h); err != nil {
			t.Fatal(err)
		}
		if h.APIVersion != APIVersion || h.Kind != o.GetKind() {
			t.Errorf("%T: apiVersion %q kind %q", o, h.APIVersion, h.Kind)
		}
	}
	// Nil objects and unknown types are left alone rather than panicking.
	SetDefaults(nil)
	SetDefaults((*VLAN)(nil))
	SetDefaults((*Service)(nil))
	SetDefaults((*Host)(nil))
}

func TestBoolOr(t *testing.T) {
	tr, fa := true, false
	for _, tt := range []struct {
		p    *bool
		d    bool
		want bool
	}{
		{nil, true, true},
		{nil, false, false},
		{&tr, false, true},
		{&fa, true, false},
	} {
		if got := BoolOr(tt.p, tt.d); got != tt.want {
			t.Errorf("BoolOr(%v, %v) = %v, want %v", tt.p, tt.d, got, tt.want)
		}
	}
}
