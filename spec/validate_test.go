package spec

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustDecode[T Object](t *testing.T, s string) T {
	t.Helper()
	o, err := Decode([]byte(s))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return o.(T)
}

const vlanHeader = "apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: vlan40}\n"
const serviceHeader = "apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: web}\n"

// TestValidateMessages pins the wording of the messages SPEC.md and users
// rely on.
func TestValidateMessages(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"chunk prefix out of range", vlanHeader + "spec: {trunk: bond0, subnet: 172.80.0.0/16, rangePlan: {chunkPrefix: 12}}",
			"spec.rangePlan.chunkPrefix: must be between 16 and 30 (subnet is /16)"},
		{"subnet not a network address", vlanHeader + "spec: {trunk: bond0, subnet: 172.80.3.4/16, rangePlan: {chunkPrefix: 24}}",
			"spec.subnet: 172.80.3.4/16 is not a network address (did you mean 172.80.0.0/16?)"},
		{"pool entry smaller than a chunk", vlanHeader + "spec: {trunk: bond0, subnet: 172.80.0.0/16, rangePlan: {chunkPrefix: 24, pool: [172.80.1.0/24, 172.80.2.0/25]}}",
			"spec.rangePlan.pool[1]: 172.80.2.0/25 is smaller than a /24 chunk"},
		{"sub-interface name too long", vlanHeader + "spec: {id: 4094, trunk: enp0s31f6abc, subnet: 172.80.0.0/16, rangePlan: {chunkPrefix: 24}}",
			`spec.trunk: sub-interface name "enp0s31f6abc.4094" would be 17 bytes, more than Linux's 15; use a shorter trunk name`},
		{"scaling in global mode", serviceHeader + "spec: {image: web, networks: [vlan40], mode: global, scaling: {min: 1, max: 2}}",
			"spec.scaling: not allowed with mode global"},
		{"http and tcp check", serviceHeader + "spec: {image: web, networks: [vlan40], consul: {port: 80, check: {http: /, tcp: true}}}",
			"spec.consul.check: set http or tcp, not both"},
		{"deregisterAfter below a minute", serviceHeader + "spec: {image: web, networks: [vlan40], consul: {port: 80, check: {tcp: true, deregisterAfter: 59s}}}",
			"spec.consul.check.deregisterAfter: must be at least 1m (Consul's reaper ignores less)"},
		{"replicas outside the bounds", serviceHeader + "spec: {image: web, networks: [vlan40], replicas: 1, scaling: {min: 2, max: 4}}",
			"spec.replicas: 1 is outside scaling.min..scaling.max (2..4)"},
		{"relative workdir", serviceHeader + "spec: {image: web, networks: [vlan40], workdir: srv}",
			`spec.workdir: "srv" must be an absolute path`},
		{"unknown stop signal", serviceHeader + "spec: {image: web, networks: [vlan40], stopSignal: SIGFOO}",
			`spec.stopSignal: "SIGFOO" is not a signal: a name such as SIGTERM or TERM, or a number 1-64`},
		{"unknown capability", serviceHeader + "spec: {image: web, networks: [vlan40], capAdd: [NET_ADMIN, NET_FLY]}",
			`spec.capAdd[1]: "NET_FLY" is not a Linux capability such as NET_ADMIN or CAP_NET_ADMIN, or ALL`},
		{"ulimit soft above hard", serviceHeader + "spec: {image: web, networks: [vlan40], ulimits: {nofile: {soft: 4096, hard: 1024}}}",
			"spec.ulimits.nofile.soft: 4096 is more than the hard limit 1024"},
		{"extra host without address", serviceHeader + "spec: {image: web, networks: [vlan40], extraHosts: [db.local]}",
			`spec.extraHosts[0]: "db.local" must be host:ip, such as db.local:10.0.0.5`},
		{"rollback that rolls back", serviceHeader + "spec: {image: web, networks: [vlan40], rollback: {failureAction: rollback}}",
			`spec.rollback.failureAction: must be one of continue, pause, not "rollback"`},
		{"hostname template", serviceHeader + "spec: {image: web, networks: [vlan40], hostname: 'web-{{.Task.Number}}'}",
			`spec.hostname: is expanded by Swarm as a template, which fails: 1:11: executing "expansion" at <.Task.Number>: can't evaluate field Number in type struct { ID string; Name string; Slot string }`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Decode([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			err = Validate(o)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Validate =\n%v\nwant\n%v", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	v := mustDecode[*VLAN](t, `apiVersion: swarmvlan/v1
kind: VLAN
metadata: {name: VLAN40}
spec:
  id: 5000
  trunk: bond0/1
  driver: ipvlan
  mode: bridge
  subnet: 172.80.0.0/16
  gateway: 172.80.255.255
  mtu: 10
  rangePlan:
    chunkPrefix: 24
    pool: [172.80.1.0/24, 10.0.0.0/24]
    exclude: [172.80.0.0/24]
    pinned: {m1: 172.80.0.0/24, m2: 172.80.1.0/25}
    quarantine: soon
`)
	v.APIVersion = "swarmvlan/v2" // the decoder refuses it; Validate checks it too
	want := []string{
		"apiVersion",
		"metadata.name",
		"spec.id",
		"spec.trunk",
		"spec.mode",
		"spec.mtu",
		"spec.gateway",
		"spec.rangePlan.pool[1]",
		"spec.rangePlan.pinned.m1",
		"spec.rangePlan.pinned.m2",
		"spec.rangePlan.quarantine",
	}
	got := AsErrorList(Validate(v)).Paths()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("paths =\n%q\nwant\n%q\nerrors:\n%v", got, want, Validate(v))
	}
}

func TestValidateDoesNotChangeTheDocument(t *testing.T) {
	for _, name := range []string{"vlan40.yaml", "web.yaml", "worker1.yaml"} {
		t.Run(name, func(t *testing.T) {
			o, err := Decode(readTestdata(t, "valid")[name])
			if err != nil {
				t.Fatal(err)
			}
			before, _ := json.Marshal(o)
			if err := Validate(o); err != nil {
				t.Fatal(err)
			}
			after, _ := json.Marshal(o)
			if string(before) != string(after) {
				t.Errorf("Validate changed the document:\n%s\n%s", before, after)
			}
		})
	}
}

func TestValidateObjectsBuiltInGo(t *testing.T) {
	tests := []struct {
		name string
		obj  Object
		want string // "" for valid
	}{
		{"nil VLAN", (*VLAN)(nil), "no document"},
		{"nil Object", nil, "kind: unknown kind of document <nil>"},
		{"empty header", &Host{Metadata: ObjectMeta{Name: "w"}}, "apiVersion: must be swarmvlan/v1\nkind: must be Host"},
		{"kind of another type", &Host{APIVersion: APIVersion, Kind: KindVLAN, Metadata: ObjectMeta{Name: "w"}}, "kind: must be Host"},
		{"minimal host", &Host{APIVersion: APIVersion, Kind: KindHost, Metadata: ObjectMeta{Name: "w"}}, ""},
		{"minimal service", &Service{APIVersion: APIVersion, Kind: KindService, Metadata: ObjectMeta{Name: "s"},
			Spec: ServiceSpec{Image: "s", Networks: []string{"v"}}}, ""},
		{"minimal vlan", &VLAN{APIVersion: APIVersion, Kind: KindVLAN, Metadata: ObjectMeta{Name: "v"},
			Spec: VLANSpec{Trunk: "eth0", Subnet: "10.0.0.0/24", RangePlan: RangePlan{ChunkPrefix: 24}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.obj)
			if tt.want == "" {
				if err != nil {
					t.Errorf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Errorf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestValidateNames(t *testing.T) {
	tests := []struct {
		s                  string
		dns, host, ifaceOK bool
	}{
		{"web", true, true, true},
		{"web-1", true, true, true},
		{"1web", true, true, true},
		{"Web", false, true, true},
		{"web_1", false, false, true},
		{"-web", false, false, true},
		{"web-", false, false, true},
		{"", false, false, false},
		{strings.Repeat("a", 63), true, true, false},
		{strings.Repeat("a", 64), false, false, false},
		{"node1.lab.example", false, true, false},
		{"node1.lab", false, true, true},
		{"node1..example", false, false, true},
		{"eth0.40", false, true, true},
		{"eth0:1", false, false, false},
		{"eth 0", false, false, false},
		{"eth0/1", false, false, false},
		{".", false, false, false},
		{"..", false, false, false},
		{"...", false, false, true},
		{"enp0s31f6abcdef", true, true, true},
		{"enp0s31f6abcdefg", true, true, false},
		{"wlé0", false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.s, func(t *testing.T) {
			if got := dnsLabel(tt.s) == ""; got != tt.dns {
				t.Errorf("dnsLabel ok = %v, want %v", got, tt.dns)
			}
			if got := hostname(tt.s) == ""; got != tt.host {
				t.Errorf("hostname ok = %v, want %v", got, tt.host)
			}
			if got := ifaceName(tt.s) == ""; got != tt.ifaceOK {
				t.Errorf("ifaceName ok = %v, want %v", got, tt.ifaceOK)
			}
		})
	}
}

func TestValidImageReference(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		ref string
		ok  bool
	}{
		{"web", true},
		{"web:1.4", true},
		{"library/web", true},
		{"registry.example.com/web:1.4", true},
		{"registry.example.com:5000/team/web:1.4", true},
		{"localhost:5000/web", true},
		{"Registry.Example.com/web", true},
		{"[::1]:5000/web:1", true},
		{"web@" + digest, true},
		{"web:1.4@" + digest, true},
		{"my_app__x/web-app.v2:latest", true},
		{"web:" + strings.Repeat("t", 128), true},
		{"web:" + strings.Repeat("t", 129), false},
		{"", false},
		{"Web", false},
		{"registry.example.com/Web", false},
		{"web:", false},
		{"web:-1", false},
		{"web:1.4:5", false},
		{"web@sha256:abc", false},
		{"web@md5:" + strings.Repeat("0", 32), false},
		{"web app", false},
		{"/web", false},
		{"web/", false},
		{"web//x", false},
		{"-web", false},
		{"web-", false},
		{"registry.example.com:port/web", false},
		{strings.Repeat("a", 256), false},
		{strings.Repeat("a", 247), true},  // library/ + 247 = 255
		{strings.Repeat("a", 248), false}, // library/ + 248 = 256
		{"docker.io/" + strings.Repeat("a", 248), false},
		{"team/" + strings.Repeat("a", 250), true},
		{"registry.example.com/" + strings.Repeat("a", 255), true},
		{"registry.example.com/" + strings.Repeat("a", 256), false},
		{strings.Repeat("0123456789abcdef", 4), false}, // an image ID
		{strings.Repeat("0123456789abcdef", 4) + ":1", true},
		{"web/" + strings.Repeat("0123456789abcdef", 4), true},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			if got := ValidImageReference(tt.ref); got != tt.ok {
				t.Errorf("ValidImageReference(%q) = %v, want %v", tt.ref, got, tt.ok)
			}
		})
	}
}

// TestQuantityBytes pins QuantityBytes to what the docker CLI sets for the
// same text (--limit-memory, --memory: go-units' RAMInBytes), so a quantity
// means one thing all the way to Docker.
func TestQuantityBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64 // 0: error
	}{
		{"1", 1},
		{"268435456", 268435456},
		{"512m", 536870912},
		{"512M", 536870912},
		{"512Mi", 536870912},
		{"512MB", 536870912},
		{"512mb", 536870912},
		{"512mB", 536870912},
		{"256Mi", 256 << 20},
		{"1g", 1 << 30},
		{"1G", 1 << 30},
		{"1gb", 1 << 30},
		{"1Gi", 1 << 30},
		{"1.5Gi", 1610612736},
		{"1.5g", 1610612736},
		{"64k", 64 << 10},
		{"64K", 64 << 10},
		{"64kb", 64 << 10},
		{"64Ki", 64 << 10},
		{"2t", 2 << 40},
		{"2T", 2 << 40},
		{"2Ti", 2 << 40},
		{"512b", 512},
		{"512B", 512},
		{"1.1K", 1126}, // rounded down, as Docker does
		{"0.5", 0},     // less than a byte
		{"8388607Ti", 8388607 << 40},
		{"8388608Ti", 0}, // 2^63: too large
		{"9223372036854775807", 0},
		{"1" + strings.Repeat("0", 400), 0},
		{"0", 0},
		{"0Mi", 0},
		{"0.0001", 0},
		{"", 0},
		{"Mi", 0},
		{"b", 0},
		{"-1", 0},
		{"+1", 0},
		{"1 Mi", 0},
		{" 1", 0},
		{"1MiB", 0},
		{"1mi", 0},
		{"1Bi", 0},
		{"1P", 0},
		{"1p", 0},
		{".5G", 0},
		{"1.G", 0},
		{"1e9", 0},
		{"0x10", 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := QuantityBytes(tt.in)
			if tt.want == 0 {
				if err == nil {
					t.Errorf("QuantityBytes(%q) = %d, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("QuantityBytes(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestQuantityBytesMessages(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"8388608Ti", `"8388608Ti" is too large`},
		{"0", `"0" is less than one byte`},
		{"512 MB", `"512 MB" is not a quantity such as 256Mi, 512m, 1G or 268435456`},
	} {
		if _, err := QuantityBytes(tt.in); err == nil || err.Error() != tt.want {
			t.Errorf("QuantityBytes(%q) error = %v, want %q", tt.in, err, tt.want)
		}
	}
}

// TestCPUsNano pins CPUsNano to the docker CLI's opts.NanoCPUs: the exact
// decimal times 10^9, refused when that is not a whole number.
func TestCPUsNano(t *testing.T) {
	tests := []struct {
		in   string
		want int64 // 0: error
	}{
		{"0.5", 500000000},
		{"2", 2e9},
		{"0.1", 1e8},
		{"1.25", 125e7},
		{"00.10", 1e8},
		{"0.000000001", 1},
		{"0.5000000000", 5e8}, // more decimals, but still whole nano-CPUs
		{"999999999.999999999", 999999999999999999},
		{"0", 0},
		{"0.0", 0},
		{"0.0000000001", 0}, // too precise
		{"1.0000000001", 0}, // too precise
		{"1000000000", 0},   // too large
		{"", 0},
		{".5", 0},
		{"1.", 0},
		{"-1", 0},
		{"+1", 0},
		{"1/2", 0},
		{"half", 0},
		{"1e3", 0},
		{" 1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := CPUsNano(tt.in)
			if tt.want == 0 {
				if err == nil {
					t.Errorf("CPUsNano(%q) = %d, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("CPUsNano(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
			}
		})
	}
	if _, err := CPUsNano("0.0000000001"); err == nil || !strings.Contains(err.Error(), "value is too precise") {
		t.Errorf("CPUsNano(0.0000000001) error = %v, want Docker's \"value is too precise\"", err)
	}
	if _, err := CPUsNano("1000000000"); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("CPUsNano(1000000000) error = %v, want too large", err)
	}
}

func TestResourceListValues(t *testing.T) {
	for _, tt := range []struct {
		l         *ResourceList
		cpus, mem int64
	}{
		{nil, 0, 0},
		{&ResourceList{}, 0, 0},
		{&ResourceList{CPUs: "0.5"}, 5e8, 0},
		{&ResourceList{Memory: "512m"}, 0, 536870912},
		{&ResourceList{CPUs: "2", Memory: "1.5Gi"}, 2e9, 1610612736},
		{&ResourceList{CPUs: "x", Memory: "y"}, 0, 0},
	} {
		cpus, mem := tt.l.Values()
		if cpus != tt.cpus || mem != tt.mem {
			t.Errorf("%+v.Values() = %d, %d, want %d, %d", tt.l, cpus, mem, tt.cpus, tt.mem)
		}
	}
}

func TestDurationDuration(t *testing.T) {
	for _, tt := range []struct {
		d    Duration
		want time.Duration
	}{
		{"", 0},
		{"10s", 10 * time.Second},
		{"1m30s", 90 * time.Second},
		{"1.5h", 90 * time.Minute},
		{"-1s", -time.Second},
		{"soon", 0},
	} {
		t.Run(string(tt.d), func(t *testing.T) {
			if got := tt.d.Duration(); got != tt.want {
				t.Errorf("Duration(%q) = %v, want %v", tt.d, got, tt.want)
			}
			p := tt.d.Ptr()
			switch {
			case tt.d == "" && p != nil:
				t.Errorf("Ptr(%q) = %v, want nil", tt.d, *p)
			case tt.d != "" && (p == nil || *p != tt.want):
				t.Errorf("Ptr(%q) = %v, want &%v", tt.d, p, tt.want)
			}
		})
	}
}

func TestValidConstraint(t *testing.T) {
	for _, tt := range []struct {
		c  string
		ok bool
	}{
		{"node.labels.rack==a", true},
		{"node.role != manager", true},
		{"node.hostname==worker1", true},
		{"node.labels.rack", false},
		{"node.labels.rack=a", false},
		{"==a", false},
		{"node.labels.rack==", false},
		{" == ", false},
		{"a==b==c", false},
		{"a==b!=c", false},
	} {
		t.Run(tt.c, func(t *testing.T) {
			if got := validConstraint(tt.c); got != tt.ok {
				t.Errorf("validConstraint(%q) = %v, want %v", tt.c, got, tt.ok)
			}
		})
	}
}

func TestPaths(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{KeyPath("", "spec"), "spec"},
		{KeyPath("spec", "rangePlan"), "spec.rangePlan"},
		{KeyPath("spec.env", "LOG_LEVEL"), "spec.env.LOG_LEVEL"},
		{KeyPath("spec.labels", "io.example/tier"), `spec.labels["io.example/tier"]`},
		{KeyPath("spec.env", ""), `spec.env[""]`},
		{KeyPath("", "a b"), `["a b"]`},
		{IndexPath("spec.rangePlan.pool", 1), "spec.rangePlan.pool[1]"},
	} {
		if tt.got != tt.want {
			t.Errorf("path = %q, want %q", tt.got, tt.want)
		}
	}
}

func TestErrorList(t *testing.T) {
	l := ErrorList{{Path: "spec.id", Msg: "bad"}, {Path: "", Msg: "whole"}}
	if got, want := l.Error(), "spec.id: bad\nwhole"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var err error = l
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "spec.id" {
		t.Errorf("errors.As found %v, want the first FieldError", fe)
	}
	if got := AsErrorList(errors.New("plain")); len(got) != 1 || got[0].Msg != "plain" || got[0].Path != "" {
		t.Errorf("AsErrorList(plain) = %v", got)
	}
	if got := AsErrorList(&FieldError{Path: "a", Msg: "b"}); len(got) != 1 || got[0].Path != "a" {
		t.Errorf("AsErrorList(FieldError) = %v", got)
	}
	if AsErrorList(nil) != nil {
		t.Error("AsErrorList(nil) is not nil")
	}
	if err := (ErrorList{}).err(); err != nil {
		t.Errorf("an empty list gave the error %v", err)
	}
	var long ErrorList
	for range maxErrors + 50 {
		long.add("a", "b")
	}
	if got := long.truncated(); len(got) != maxErrors+1 || got[maxErrors].Error() != "and 50 more problems" {
		t.Errorf("truncated list has %d entries ending in %v", len(got), got[len(got)-1])
	}
}

func TestSwarmTemplate(t *testing.T) {
	labels := map[string]string{"team": "payments"}
	for _, tt := range []struct {
		s  string
		ok bool
	}{
		{"plain", true},
		{"{ not a template }", true},
		{"{{.Task.Slot}}", true},
		{"web-{{.Task.Slot}}-{{.Node.Hostname}}", true},
		{"{{.Node.Platform.OS}}/{{.Service.Name}}", true},
		{"{{.Service.Labels.team}}", true},
		{`{{index .Service.Labels "absent"}}`, true},
		{`{{join "-" .Service.Name .Task.Slot}}`, true},
		{"{{", false},
		{"{{.Task.Slot", false},
		{"{{.Task.Number}}", false},
		{"{{.Service.Labels.absent}}", false},
		{"{{env \"HOME\"}}", false},
	} {
		t.Run(tt.s, func(t *testing.T) {
			if got := swarmTemplate(tt.s, labels) == ""; got != tt.ok {
				t.Errorf("swarmTemplate(%q) ok = %v, want %v (%s)", tt.s, got, tt.ok, swarmTemplate(tt.s, labels))
			}
		})
	}
}
