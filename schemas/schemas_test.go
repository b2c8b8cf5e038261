package schemas

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"swarmvlan/spec"
)

// genericDocs decodes every document of a YAML or JSON file into generic
// JSON values, without spec's decoder, so the schemas are tested on what a
// user wrote rather than on what spec made of it.
func genericDocs(data []byte) ([]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []any
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		g, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		docs = append(docs, g)
	}
}

func kindOf(doc any) string {
	m, _ := doc.(map[string]any)
	k, _ := m["kind"].(string)
	return k
}

func testdata(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "spec", "testdata", dir, "*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no testdata in %s: %v", dir, err)
	}
	files := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = b
	}
	return files
}

func TestSchemasCompile(t *testing.T) {
	all, err := compiled()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range spec.Kinds {
		if all[k] == nil {
			t.Errorf("no schema for %s", k)
		}
		if len(File(k)) == 0 || !bytes.Equal(File(k), File(spec.Plural(k))) {
			t.Errorf("File(%s) is empty or differs from File(%s)", k, spec.Plural(k))
		}
	}
	if File("Route") != nil {
		t.Error("File(Route) is not nil")
	}
	if err := Validate("Route", map[string]any{}); err == nil {
		t.Error("Validate accepted an unknown kind")
	}
}

func TestValidTestdataPassesSchemas(t *testing.T) {
	for name, data := range testdata(t, "valid") {
		t.Run(name, func(t *testing.T) {
			docs, err := genericDocs(data)
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range docs {
				if err := Validate(kindOf(d), d); err != nil {
					t.Errorf("document %d:\n%v", i+1, err)
				}
			}
			if err := ValidateBytes(data); err != nil {
				t.Errorf("ValidateBytes:\n%v", err)
			}
		})
	}
}

// schemaCannotExpress lists the invalid testdata documents a JSON Schema
// accepts or cannot read, and why. Everything else in spec/testdata/invalid
// must fail its schema.
var schemaCannotExpress = map[string]string{
	"vlan-docker-same-name.yaml":   "two fields holding the same value is a relation between fields",
	"decode-duplicate-key.yaml":    "a generic YAML decoder refuses duplicate keys before any schema sees them",
	"json-duplicate-key.json":      "a generic decoder refuses or silently merges duplicate keys",
	"decode-syntax-error.yaml":     "not YAML",
	"json-syntax-error.json":       "not JSON",
	"decode-unsupported-tag.yaml":  "a generic decoder applies or drops the tag; the schema sees a plain string",
	"decode-merge-key.yaml":        "a generic decoder expands the merge key",
	"decode-integer-overflow.yaml": "a generic decoder reads the overflowing integer as a float without a fraction, which JSON Schema counts as an integer",
	"multi-second-document.yaml":   "chunkPrefix relates to the subnet's prefix length",
	"decode-alias-bomb.yaml":       "a generic decoder expands the aliases (the size limit is spec's)",

	"vlan-subinterface-too-long.yaml":     "the length of <trunk>.<id> relates two fields",
	"vlan-subnet-host-bits.yaml":          "host bits of a prefix are arithmetic",
	"vlan-gateway-outside.yaml":           "gateway inside subnet is arithmetic",
	"vlan-gateway-network.yaml":           "gateway inside subnet is arithmetic",
	"vlan-gateway-broadcast.yaml":         "gateway inside subnet is arithmetic",
	"vlan-chunk-prefix-below-subnet.yaml": "chunkPrefix relates to the subnet's prefix length",
	"vlan-chunk-prefix-too-many.yaml":     "the number of chunks is arithmetic",
	"vlan-pool-host-bits.yaml":            "host bits of a prefix are arithmetic",
	"vlan-pool-outside.yaml":              "containment is arithmetic",
	"vlan-pool-smaller-than-chunk.yaml":   "relates pool entries to chunkPrefix",
	"vlan-pool-overlap.yaml":              "overlap is arithmetic",
	"vlan-exclude-outside.yaml":           "containment is arithmetic",
	"vlan-exclude-host-bits.yaml":         "host bits of a prefix are arithmetic",
	"vlan-pinned-wrong-size.yaml":         "relates pinned chunks to chunkPrefix",
	"vlan-pinned-unaligned.yaml":          "host bits of a prefix are arithmetic",
	"vlan-pinned-outside-subnet.yaml":     "containment is arithmetic",
	"vlan-pinned-twice.yaml":              "overlap between values of different keys",
	"vlan-pinned-excluded.yaml":           "overlap is arithmetic",
	"vlan-pinned-outside-pool.yaml":       "containment is arithmetic",
	"host-vlan-chunk-host-bits.yaml":      "host bits of a prefix are arithmetic",

	"svc-scaling-min-above-max.yaml":              "relates two fields",
	"svc-replicas-below-min.yaml":                 "relates replicas to scaling bounds",
	"svc-replicas-above-max.yaml":                 "relates replicas to scaling bounds",
	"svc-memory-below-docker-minimum.yaml":        "compares a parsed quantity",
	"svc-memory-reservation-above-limit.yaml":     "compares two parsed quantities",
	"svc-memory-reservation-below-minimum.yaml":   "compares a parsed quantity",
	"svc-cpus-reservation-above-limit.yaml":       "compares two parsed numbers",
	"svc-mount-target-twice.yaml":                 "uniqueness of one field across list items",
	"svc-healthcheck-interval-zero.yaml":          "a zero duration is syntactically valid",
	"svc-consul-check-timeout-zero.yaml":          "a zero duration is syntactically valid",
	"svc-consul-deregister-short.yaml":            "compares a parsed duration",
	"svc-healthcheck-interval-below-1ms.yaml":     "compares a parsed duration",
	"svc-healthcheck-start-period-below-1ms.yaml": "compares a parsed duration",
	"svc-image-id.yaml":                           "the image pattern is spec's grammar; telling a 64-hex ID from a name is a second rule",
	"svc-image-path-too-long.yaml":                "the path length after Docker's normalisation is arithmetic",
	"svc-env-template.yaml":                       "whether a Swarm template runs needs a template engine",
	"svc-mount-source-template.yaml":              "whether a Swarm template runs needs a template engine",
	"svc-hostname-template.yaml":                  "whether a Swarm template runs needs a template engine",
	"svc-ulimit-soft-above-hard.yaml":             "compares two values of the document",
	"svc-overlay-is-vlan.yaml":                    "relates overlays to networks",
	"svc-overlay-twice.yaml":                      "uniqueness of one field across list items of two forms",
	"svc-secret-target-twice.yaml":                "a target relates to another item's name or target",
	"svc-config-target-twice.yaml":                "uniqueness of one field across list items",
}

func TestInvalidTestdataFailsSchemas(t *testing.T) {
	files := testdata(t, "invalid")
	for name := range schemaCannotExpress {
		if files[name] == nil {
			t.Errorf("schemaCannotExpress names %s, which does not exist", name)
		}
	}
	rejected := 0
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			reason, excused := schemaCannotExpress[name]
			docs, err := genericDocs(data)
			if err != nil {
				if !excused {
					t.Fatalf("does not decode generically (%v); list it in schemaCannotExpress if that is expected", err)
				}
				return
			}
			var errs spec.ErrorList
			for i, d := range docs {
				for _, e := range spec.AsErrorList(Validate(kindOf(d), d)) {
					if len(docs) > 1 {
						e = prefixed(i, e)
					}
					errs = append(errs, e)
				}
			}
			switch {
			case len(errs) == 0 && !excused:
				t.Fatalf("the schema accepts it")
			case len(errs) == 0:
				return
			case excused:
				t.Fatalf("the schema rejects it, but schemaCannotExpress says %q:\n%v", reason, errs)
			}
			rejected++
			want := wantPath(t, name, data)
			if want == "-" {
				return
			}
			for _, e := range errs {
				if related(e.Path, want) {
					return
				}
			}
			t.Errorf("no schema error at or around %s:\n%v", want, errs)
		})
	}
	if rejected < 70 {
		t.Errorf("the schemas reject only %d invalid documents", rejected)
	}
}

// related reports whether a schema error at got points at the problem at
// want: the same field, a field inside it, or the object holding it (where
// a schema reports alternatives none of which matched).
func related(got, want string) bool {
	if got == want {
		return true
	}
	inside := func(child, parent string) bool {
		return parent == "" || strings.HasPrefix(child, parent+".") || strings.HasPrefix(child, parent+"[")
	}
	return inside(got, want) || inside(want, got) && got != ""
}

var jsonWant = map[string]string{
	"json-vlan-id.json":        "spec.id",
	"json-float-replicas.json": "spec.replicas",
}

func wantPath(t *testing.T, name string, data []byte) string {
	t.Helper()
	if w, ok := jsonWant[name]; ok {
		return w
	}
	first, _, _ := bufio.NewReader(bytes.NewReader(data)).ReadLine()
	w, ok := strings.CutPrefix(string(first), "# want: ")
	if !ok {
		t.Fatalf("%s has no '# want:' line and no entry in jsonWant", name)
	}
	return w
}

func TestErrorPaths(t *testing.T) {
	const vlan = `{"apiVersion": "swarmvlan/v1", "kind": "VLAN", "metadata": {"name": "vlan40"}, "spec": `
	const svc = `{"apiVersion": "swarmvlan/v1", "kind": "Service", "metadata": {"name": "web"}, "spec": `
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"unknown field", vlan + `{"trunk": "eth0", "subnet": "10.0.0.0/16", "rangePlan": {"chunkPrefix": 24, "chunkSize": 1}}}`,
			[]string{"spec.rangePlan.chunkSize: unknown field"}},
		{"missing fields", vlan + `{"rangePlan": {}}}`,
			[]string{"spec.trunk: required", "spec.subnet: required", "spec.rangePlan.chunkPrefix: required"}},
		{"list index", vlan + `{"trunk": "eth0", "subnet": "10.0.0.0/16", "rangePlan": {"chunkPrefix": 24, "pool": ["10.0.1.0/24", "ten"]}}}`,
			[]string{"spec.rangePlan.pool[1]"}},
		{"bad key", vlan + `{"trunk": "eth0", "subnet": "10.0.0.0/16", "rangePlan": {"chunkPrefix": 24, "pinned": {"bad_host": "10.0.1.0/24"}}}}`,
			[]string{"spec.rangePlan.pinned.bad_host: invalid key"}},
		{"reserved key", svc + `{"image": "web", "networks": ["v"], "consul": {"port": 80, "meta": {"consul-x": "y"}}}}`,
			[]string{"spec.consul.meta.consul-x: key is reserved"}},
		{"key with dots", svc + `{"image": "web", "networks": ["v"], "labels": {"io.swarmvlan.managed": "true"}}}`,
			[]string{`spec.labels["io.swarmvlan.managed"]: key is reserved`}},
		{"scaling in global mode", svc + `{"image": "web", "networks": ["v"], "mode": "global", "scaling": {"max": 2}}}`,
			[]string{"spec.scaling: not allowed here"}},
		{"check with http and tcp", svc + `{"image": "web", "networks": ["v"], "consul": {"port": 80, "check": {"http": "/", "tcp": true}}}}`,
			[]string{"spec.consul.check: matches a form that is not allowed"}},
		{"check with neither", svc + `{"image": "web", "networks": ["v"], "consul": {"port": 80, "check": {"interval": "5s"}}}}`,
			[]string{"spec.consul.check: does not match any allowed form"}},
		{"wrong type", svc + `{"image": "web", "networks": ["v"], "replicas": "3"}}`,
			[]string{"spec.replicas: got string, want integer"}},
		{"enum", svc + `{"image": "web", "networks": ["v"], "mode": "daemonset"}}`,
			[]string{"spec.mode: value must be one of 'replicated', 'global'"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := jsonschema.UnmarshalJSON(strings.NewReader(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			err = Validate(kindOf(doc), doc)
			if err == nil {
				t.Fatal("accepted")
			}
			var l spec.ErrorList
			if !errors.As(err, &l) {
				t.Fatalf("error is a %T, want spec.ErrorList", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestValidateBytes(t *testing.T) {
	valid := testdata(t, "valid")
	multi := append(append([]byte{}, valid["worker1.yaml"]...), "---\n"...)
	multi = append(multi, `{apiVersion: swarmvlan/v1, kind: VLAN, metadata: {name: v}, spec: {trunk: eth0, subnet: 10.0.0.0/16, mtu: 40, rangePlan: {chunkPrefix: 24}}}`...)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"valid", valid["stack.yaml"], ""},
		{"schema problem in the second document", multi, "document 2: spec.mtu: minimum: got 40, want 68"},
		{"decode problem", []byte("apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: w, x: 1}\n"), "metadata.x: unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateBytes(tt.data)
			if tt.want == "" {
				if err != nil {
					t.Errorf("ValidateBytes = %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Errorf("ValidateBytes =\n%v\nwant\n%v", err, tt.want)
			}
		})
	}
}

// TestSchemaAgreesWithSpec sets one field of a valid document to each
// sample value and expects the schema and spec.Validate to agree on it. It
// covers the fields whose rule a schema can state in full.
func TestSchemaAgreesWithSpec(t *testing.T) {
	const vlan = `{"apiVersion": "swarmvlan/v1", "kind": "VLAN", "metadata": {"name": "vlan40"},
		"spec": {"trunk": "eth0", "subnet": "10.0.0.0/16", "rangePlan": {"chunkPrefix": 24}}}`
	const svc = `{"apiVersion": "swarmvlan/v1", "kind": "Service", "metadata": {"name": "web"},
		"spec": {"image": "web", "networks": ["vlan40"]}}`
	const host = `{"apiVersion": "swarmvlan/v1", "kind": "Host", "metadata": {"name": "worker1"}}`
	durations := []any{"10s", "1m30s", "1.5h", "0", "0s", "+5s", ".5s", "5.s", "1µs", "1us", "100ns", "-1s", "10", "1d", "s", "1 s", "1m-1s"}
	tests := []struct {
		base    string
		path    string
		samples []any
	}{
		{svc, "spec.image", []any{"web", "registry.example.com:5000/team/web:1.4", "web@sha256:" + strings.Repeat("ab", 32), "Web", "web:", "web:-1", "a//b", "web app"}},
		{svc, "spec.scaling.cooldown", durations},
		{svc, "spec.update.delay", durations},
		{svc, "spec.resources.limits.cpus", []any{"0.5", "2", "0.000000001", "0", "0.0", "00.10", ".5", "1.", "1e3", "1000000000", "999999999.999999999", "0.0000000001", "0.5000000000", "1.0000000001", "0001", "12345678912345678", "0.01", "0.010000000", "0.009", "0.001", "0.0100000001"}},
		{svc, "spec.resources.reservations.cpus", []any{"0.5", "2", "0.001", "0.0010", "0.000999999", "0.0009", "0.000000001", "0.123456789", "0"}},
		// Memory samples sit above Swarm's 4Mi minimum, which the schema
		// cannot state: they test the grammar.
		{svc, "spec.resources.reservations.memory", []any{"4194304", "256Mi", "256M", "256m", "1GB", "1gb", "1.5Gi", "0", "0Mi", "0.0G", "256MiB", "1mi", "1P", "-1", "Mi", ".5G", "8388608b", "8388608B", "512mb", "1 M", "1e9"}},
		{svc, "spec.networks", []any{[]any{"a"}, []any{"a", "b"}, []any{}, []any{"a", "a"}, []any{"A"}, []any{""}, []any{"a-"}}},
		{svc, "spec.secrets", []any{[]any{"db_password"}, []any{"db.password-1"}, []any{"db password"}, []any{"_x"}, []any{"x_"}, []any{strings.Repeat("s", 65)}, []any{"a", "a"}}},
		{svc, "spec.placement.constraints", []any{[]any{"node.role==manager"}, []any{"node.role != manager"}, []any{"node.labels.a!b==c"}, []any{"node.role"}, []any{"==x"}, []any{"x=="}, []any{"a==b==c"}, []any{"a = b"}, []any{"node.labels.owner==a@b"}, []any{"node.labels.zone == eu west"}, []any{"x==y"}, []any{"node.labels.a== "}, []any{"1node==a"}}},
		{svc, "spec.env", []any{map[string]any{"A": "b"}, map[string]any{"A=B": "c"}, map[string]any{"": "c"}, map[string]any{"A": "b\x00"}}},
		{svc, "spec.labels", []any{map[string]any{"tier": "front"}, map[string]any{"io.swarmvlan.x": "y"}, map[string]any{"-x": "y"}, map[string]any{"x": "a\x07b"}, map[string]any{"x": "tab\tok"}}},
		{svc, "spec.healthcheck.test", []any{[]any{"CMD", "/app"}, []any{"CMD-SHELL", "true"}, []any{"NONE"}, []any{"CMD"}, []any{"NONE", "x"}, []any{"CMD-SHELL", "a", "b"}, []any{"/app"}, []any{}}},
		{svc, "spec.mode", []any{"replicated", "global", "daemonset"}},
		{svc, "spec.user", []any{"app", "1000", "1000:1000", "app:staff", "www-data", "app user", "a:b:c", ":1000", "1000:"}},
		{svc, "spec.workdir", []any{"/srv", "/", "/srv/app dir", "srv", "./srv", "/srv\n", "/a\tb"}},
		{svc, "spec.hostname", []any{"web", "web-1.lab", "web-{{.Task.Slot}}", "{{.Node.Hostname}}", "web_1", "-web", strings.Repeat("a", 64), strings.Repeat("a", 65)}},
		{svc, "spec.stopSignal", []any{"SIGTERM", "TERM", "term", "sigterm", "SIGUSR1", "15", "1", "64", "65", "0", "-1", "SIGFOO", "SIGRTMIN+3", "RTMAX-14", "RTMAX-15", "RTMIN+16", "SIG"}},
		{svc, "spec.stopGracePeriod", durations},
		{svc, "spec.capAdd", []any{[]any{"NET_ADMIN"}, []any{"CAP_NET_ADMIN", "sys_time"}, []any{"ALL"}, []any{"all"}, []any{"cap_bpf"}, []any{"NET_FLY"}, []any{"CAP_"}, []any{"CAPNET_ADMIN"}, []any{" NET_ADMIN"}, []any{"MKNOD", "MKNOD"}, []any{""}}},
		{svc, "spec.capDrop", []any{[]any{"MKNOD"}, []any{"ALL", "NET_RAW"}, []any{"CAP_ALL"}, []any{"x"}}},
		{svc, "spec.sysctls", []any{map[string]any{"net.ipv4.ip_forward": "1"}, map[string]any{"net.core.somaxconn": "1024"}, map[string]any{"net.ipv4.ip_local_port_range": "1024\t65000"}, map[string]any{"fs.mqueue.msg_max": "10"}, map[string]any{"kernel.shm_rmid_forced": "1"}, map[string]any{"kernel.sem": "250 32000 32 128"},
			map[string]any{"kernel.hostname": "x"}, map[string]any{"vm.swappiness": "1"}, map[string]any{"net": "1"}, map[string]any{"net.": "1"}, map[string]any{"fs.mqueue": "1"}, map[string]any{"net.ipv4.ip_forward": ""}, map[string]any{"net.ipv4.ip_forward": " "}, map[string]any{"net.ipv4.ip_forward": "1\n"}, map[string]any{"Net.ipv4": "1"}}},
		{svc, "spec.dns.servers", []any{[]any{"10.0.0.2"}, []any{"fd00::2", "2001:db8::53"}, []any{"::1"}, []any{"::"}, []any{"1::"}, []any{"1:2:3:4:5:6:7:8"}, []any{"1:2:3:4:5:6:7::"}, []any{"1::8"}, []any{"1:2::7:8"},
			[]any{"10.0.0.256"}, []any{"010.0.0.2"}, []any{"10.0.0"}, []any{"fe80::1%eth0"}, []any{"::ffff:10.0.0.2"}, []any{"1:2:3:4:5:6:7:8:9"}, []any{"1::2::3"}, []any{"12345::"}, []any{"10.0.0.0/8"}, []any{"dns.example.com"}, []any{""}}},
		{svc, "spec.dns.search", []any{[]any{"example.com"}, []any{"lab", "corp.example"}, []any{"example_com"}, []any{"-x.com"}, []any{""}}},
		{svc, "spec.dns.options", []any{[]any{"ndots:2"}, []any{"rotate", "timeout:1", "single-request", "no-aaaa"}, []any{"ndots 2"}, []any{"ndots:"}, []any{""}}},
		{svc, "spec.extraHosts", []any{[]any{"db.local:10.0.0.5"}, []any{"v6:fd00::1"}, []any{"db:::1"}, []any{"Db-1.lab:192.168.0.1"}, []any{"db.local"}, []any{"10.0.0.5 db.local"}, []any{"db_1:10.0.0.5"}, []any{"db:10.0.0.256"}, []any{":10.0.0.5"}, []any{"db:"}, []any{"db:fe80::1%eth0"}, []any{"db=10.0.0.5"}}},
		{svc, "spec.logging", []any{map[string]any{"driver": "json-file"}, map[string]any{"driver": "local", "options": map[string]any{"max-size": "10m", "max-file": "3"}}, map[string]any{"driver": "example.com/team/logger:1.0"}, map[string]any{"driver": "syslog", "options": map[string]any{"tag": "{{.Name}}\tx"}},
			map[string]any{}, map[string]any{"driver": ""}, map[string]any{"driver": "JSON"}, map[string]any{"driver": "-x"}, map[string]any{"driver": "json-file", "options": map[string]any{"": "x"}}, map[string]any{"driver": "json-file", "options": map[string]any{"k": "a\nb"}}, map[string]any{"driver": "json-file", "other": 1}}},
		{svc, "spec.rollback.failureAction", []any{"continue", "pause", "rollback", "stop"}},
		{svc, "spec.rollback.order", []any{"start-first", "stop-first", "first"}},
		{svc, "spec.rollback.parallelism", []any{0, 2, -1}},
		{svc, "spec.rollback.monitor", durations},
		{svc, "spec.secrets", []any{[]any{map[string]any{"name": "a", "target": "a.key", "uid": 1, "gid": 2, "mode": 0o400}}, []any{map[string]any{"name": "a", "target": "/etc/a"}}, []any{map[string]any{"name": "a", "target": "/etc/../a"}}, []any{map[string]any{"name": "a", "target": "x/a"}}, []any{map[string]any{"name": "a", "target": "/etc//a"}}, []any{map[string]any{"name": "a", "target": "/etc/a/"}}, []any{map[string]any{"name": "a", "target": "/"}}, []any{map[string]any{"name": "a", "target": "."}}, []any{map[string]any{"name": "a", "target": "..."}}, []any{map[string]any{"name": "a", "target": ".a"}}, []any{map[string]any{"name": "a", "target": "a\tb"}}, []any{map[string]any{"name": "a", "mode": 512}}, []any{map[string]any{"name": "a", "uid": -1}}, []any{map[string]any{"target": "a"}}}},
		{svc, "spec.configs", []any{[]any{"app"}, []any{map[string]any{"name": "a", "target": "etc/a"}}, []any{map[string]any{"name": "a", "target": "/etc/a.conf", "mode": 0o644}}, []any{map[string]any{"name": "a", "target": "../a"}}, []any{map[string]any{"name": "a", "target": "etc/./a"}}, []any{map[string]any{"name": "a", "target": ""}}, []any{"a b"}}},
		{svc, "spec.aliases", []any{[]any{"web"}, []any{"web.lab", "web_1"}, []any{"-web"}, []any{"web."}, []any{""}, []any{"a b"}}},
		{svc, "spec.overlays", []any{[]any{"backend"}, []any{"my_net-1"}, []any{"my.net"}, []any{"net_"}, []any{map[string]any{"name": "backend", "aliases": []any{"api"}}}, []any{"_x"}, []any{map[string]any{"aliases": []any{"api"}}}, []any{map[string]any{"name": "b", "aliases": []any{"a", "a"}}}, []any{strings.Repeat("n", 63)}, []any{strings.Repeat("n", 64)}}},
		{svc, "spec.endpointMode", []any{"vip", "dnsrr", "ingress", "VIP"}},
		{svc, "spec.ulimits", []any{map[string]any{"nofile": map[string]any{"soft": 1024, "hard": 2048}}, map[string]any{"core": map[string]any{"soft": 0, "hard": 0}}, map[string]any{"nofile": map[string]any{"soft": 1024}}, map[string]any{"nofile": map[string]any{"soft": -1, "hard": 1}}, map[string]any{"files": map[string]any{"soft": 1, "hard": 1}}, map[string]any{"nofile": map[string]any{"soft": 1, "hard": 1, "x": 1}}}},
		{svc, "spec.consul", []any{
			map[string]any{"port": 80},
			map[string]any{"port": 0},
			map[string]any{"port": 65536},
			map[string]any{"port": 80, "service": "Web"},
			map[string]any{"port": 80, "check": map[string]any{"http": "/health"}},
			map[string]any{"port": 80, "check": map[string]any{"tcp": true}},
			map[string]any{"port": 80, "check": map[string]any{"tcp": false}},
			map[string]any{"port": 80, "check": map[string]any{"http": "/", "tcp": true}},
			map[string]any{"port": 80, "check": map[string]any{"http": "health"}},
			map[string]any{"port": 80, "meta": map[string]any{"consul-x": "y"}},
			map[string]any{"port": 80, "tags": []any{" "}},
		}},
		{svc, "spec.mounts", []any{
			[]any{map[string]any{"type": "bind", "source": "/srv", "target": "/data"}},
			[]any{map[string]any{"type": "bind", "target": "/data"}},
			[]any{map[string]any{"type": "bind", "source": "srv", "target": "/data"}},
			[]any{map[string]any{"type": "volume", "target": "/data"}},
			[]any{map[string]any{"type": "volume", "source": "data", "target": "/data"}},
			[]any{map[string]any{"type": "volume", "source": "/data", "target": "/data"}},
			[]any{map[string]any{"type": "tmpfs", "target": "/tmp"}},
			[]any{map[string]any{"type": "tmpfs", "source": "x", "target": "/tmp"}},
			[]any{map[string]any{"type": "nfs", "target": "/data"}},
			[]any{map[string]any{"type": "tmpfs", "target": "tmp"}},
			[]any{map[string]any{"type": "tmpfs", "target": "/"}},
			[]any{map[string]any{"type": "tmpfs", "target": "//."}},
			[]any{map[string]any{"type": "tmpfs", "target": "/.."}},
			[]any{map[string]any{"type": "tmpfs", "target": "/..."}},
			[]any{map[string]any{"type": "volume", "source": "d", "target": "/data"}},
			[]any{map[string]any{"type": "volume", "source": "d1", "target": "/data"}},
		}},
		{vlan, "spec.trunk", []any{"eth0", "bond0", "enp0s31f6abcdef", "enp0s31f6abcdefg", "eth0/1", "eth0:1", "eth 0", ".", "..", "...", ""}},
		{vlan, "spec.id", []any{0, 1, 4094, 4095, -1}},
		{vlan, "spec.mtu", []any{68, 1500, 65535, 67, 65536}},
		{vlan, "spec.driver", []any{"macvlan", "ipvlan", "bridge"}},
		{vlan, "spec.mode", []any{"bridge", "private", "vepa", "passthru", "l2", "l3", "x"}},
		{vlan, "spec.subnet", []any{"10.0.0.0/16", "10.0.0.0", "10.0.0.0/31", "fd00::/64", "10.0.0.0/016", "010.0.0.0/16", "256.0.0.0/16"}},
		{vlan, "spec.gateway", []any{"10.0.0.1", "10.0.0.01", "10.0.0.1/32", "fd00::1", "x"}},
		{vlan, "spec.rangePlan.chunkPrefix", []any{16, 24, 30, 31}},
		{vlan, "spec.rangePlan.quarantine", durations},
		{host, "metadata.name", []any{"worker1", "Worker-1", "node1.lab.example", "-w", "w_1", "a..b", strings.Repeat("a", 64)}},
		{host, "spec.trunk", []any{"eth1", "eth1/0", "enp0s31f6abcdefg"}},
		{host, "spec.vlans", []any{map[string]any{"vlan40": map[string]any{"chunk": "10.0.1.0/24"}}, map[string]any{"VLAN": map[string]any{}}, map[string]any{"v": map[string]any{"chunk": "10.0.1.0"}}}},
	}
	for _, tt := range tests {
		for _, sample := range tt.samples {
			name := tt.path + "=" + mustJSON(t, sample)
			t.Run(name, func(t *testing.T) {
				doc, err := jsonschema.UnmarshalJSON(strings.NewReader(tt.base))
				if err != nil {
					t.Fatal(err)
				}
				set(doc, tt.path, sample)
				b := mustJSON(t, doc)
				doc, _ = jsonschema.UnmarshalJSON(strings.NewReader(b))
				schemaErr := Validate(kindOf(doc), doc)

				obj, err := spec.Decode([]byte(b))
				var specErr error
				if err != nil {
					specErr = err
				} else {
					specErr = spec.Validate(obj)
				}
				if (schemaErr == nil) != (specErr == nil) {
					t.Errorf("schema says %v\nspec says %v", orOK(schemaErr), orOK(specErr))
				}
			})
		}
	}
}

func orOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// set puts v at a dotted path, creating objects on the way.
func set(doc any, path string, v any) {
	parts := strings.Split(path, ".")
	m := doc.(map[string]any)
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// TestPatternsMatchSpec keeps patterns copied from spec in step.
func TestPatternsMatchSpec(t *testing.T) {
	var s map[string]any
	if err := json.Unmarshal(File(spec.KindService), &s); err != nil {
		t.Fatal(err)
	}
	image := s["properties"].(map[string]any)["spec"].(map[string]any)["properties"].(map[string]any)["image"].(map[string]any)["pattern"]
	if image != spec.ImageReferencePattern {
		t.Errorf("service schema image pattern\n%v\ndiffers from spec.ImageReferencePattern\n%v", image, spec.ImageReferencePattern)
	}
}

// TestDrift walks the Go document types and the schemas side by side and
// fails, naming the field, when a field exists in one and not the other or
// their types differ.
func TestDrift(t *testing.T) {
	for _, obj := range []spec.Object{&spec.VLAN{}, &spec.Service{}, &spec.Host{}} {
		k := obj.GetKind()
		t.Run(k, func(t *testing.T) {
			var root map[string]any
			if err := json.Unmarshal(File(k), &root); err != nil {
				t.Fatal(err)
			}
			d := &drift{t: t, root: root}
			d.compare(k, reflect.TypeOf(obj).Elem(), root)
		})
	}
}

type drift struct {
	t    *testing.T
	root map[string]any
}

// resolve follows local $refs.
func (d *drift) resolve(s map[string]any) map[string]any {
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		name, ok := strings.CutPrefix(ref, "#/$defs/")
		if !ok {
			d.t.Fatalf("unsupported $ref %q", ref)
		}
		next, ok := d.root["$defs"].(map[string]any)[name].(map[string]any)
		if !ok {
			d.t.Fatalf("$ref %q points nowhere", ref)
		}
		s = next
	}
}

func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return jsonType(t.Elem())
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return "unsupported Go type " + t.String()
}

func (d *drift) compare(path string, typ reflect.Type, schema map[string]any) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	s := d.resolve(schema)
	want := jsonType(typ)
	// A struct a document may also write as a bare string (a secret by
	// name) is a oneOf of a string and the object: the object is compared.
	if alts, ok := s["oneOf"].([]any); ok && want == "object" {
		for _, a := range alts {
			if a := d.resolve(a.(map[string]any)); a["type"] == "object" {
				s = a
			}
		}
	}
	if got, _ := s["type"].(string); got != want {
		d.t.Errorf("%s: schema type %q, Go type %s is %q", path, got, typ, want)
		return
	}
	switch typ.Kind() {
	case reflect.Slice:
		items, ok := s["items"].(map[string]any)
		if !ok {
			d.t.Errorf("%s: schema array has no items schema", path)
			return
		}
		d.compare(path+"[]", typ.Elem(), items)
	case reflect.Map:
		// A map's values are described by additionalProperties, or, when
		// its keys follow a rule, by patternProperties (false for reserved
		// keys) with additionalProperties false.
		if _, ok := s["properties"]; ok {
			d.t.Errorf("%s: Go map, but the schema lists properties", path)
		}
		var values []map[string]any
		if v, ok := s["additionalProperties"].(map[string]any); ok {
			values = append(values, v)
		}
		pp, _ := s["patternProperties"].(map[string]any)
		for _, v := range pp {
			if v, ok := v.(map[string]any); ok {
				values = append(values, v)
			}
		}
		if len(values) == 0 {
			d.t.Errorf("%s: Go map, but the schema describes no values", path)
		}
		for _, v := range values {
			d.compare(path+".*", typ.Elem(), v)
		}
	case reflect.Struct:
		if s["additionalProperties"] != false {
			d.t.Errorf("%s: schema object does not set additionalProperties: false", path)
		}
		props, _ := s["properties"].(map[string]any)
		goFields := map[string]reflect.Type{}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			goFields[name] = f.Type
		}
		names := make([]string, 0, len(goFields))
		for n := range goFields {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			ps, ok := props[n].(map[string]any)
			if !ok {
				d.t.Errorf("%s.%s: field in Go, not in the schema", path, n)
				continue
			}
			d.compare(path+"."+n, goFields[n], ps)
		}
		for n := range props {
			if _, ok := goFields[n]; !ok {
				d.t.Errorf("%s.%s: field in the schema, not in Go", path, n)
			}
		}
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, ok := goFields[r.(string)]; !ok {
					d.t.Errorf("%s: schema requires %v, which Go does not have", path, r)
				}
			}
		}
	}
}
