package spec

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

const hostYAML = `apiVersion: swarmvlan/v1
kind: Host
metadata:
  name: worker1
spec:
  trunk: eth1
  vlans:
    vlan40: {trunk: bond1}
`

// TestCanonicalIgnoresFormat decodes the same document written in several
// ways and expects one canonical form.
func TestCanonicalIgnoresFormat(t *testing.T) {
	const want = `{"apiVersion":"swarmvlan/v1","kind":"Host","metadata":{"name":"worker1"},"spec":{"trunk":"eth1","vlans":{"vlan40":{"trunk":"bond1"}}}}`
	tests := []struct {
		name string
		in   string
	}{
		{"yaml block", hostYAML},
		{"yaml flow", `{apiVersion: swarmvlan/v1, kind: Host, metadata: {name: worker1}, spec: {trunk: eth1, vlans: {vlan40: {trunk: bond1}}}}`},
		{"yaml reordered, quoted, commented", "# the second worker\nspec:\n  vlans:\n    \"vlan40\":\n      trunk: 'bond1' # per VLAN\n  trunk: eth1\nmetadata: {name: \"worker1\"}\nkind: Host\napiVersion: swarmvlan/v1\n"},
		{"yaml with document markers", "---\n" + hostYAML + "...\n"},
		{"yaml with CRLF", strings.ReplaceAll(hostYAML, "\n", "\r\n")},
		{"json compact", `{"apiVersion":"swarmvlan/v1","kind":"Host","metadata":{"name":"worker1"},"spec":{"trunk":"eth1","vlans":{"vlan40":{"trunk":"bond1"}}}}`},
		{"json pretty, reordered", "\ufeff{\n  \"spec\": {\"vlans\": {\"vlan40\": {\"trunk\": \"bond1\"}}, \"trunk\": \"eth1\"},\n  \"kind\": \"Host\",\n  \"metadata\": {\"name\": \"worker1\", \"labels\": {}},\n  \"apiVersion\": \"swarmvlan/v1\"\n}\n"},
		{"json escapes", `{"apiVersion":"swarmvlan\/v1","kind":"Host","metadata":{"name":"worker\u0031"},"spec":{"trunk":"eth1","vlans":{"vlan40":{"trunk":"bond1"}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonical([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("Canonical =\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestCanonicalSeesChanges(t *testing.T) {
	base, err := Canonical([]byte(hostYAML))
	if err != nil {
		t.Fatal(err)
	}
	for _, change := range []struct{ from, to string }{
		{"trunk: eth1", "trunk: eth2"},
		{"vlan40: {trunk: bond1}", "vlan40: {trunk: bond1, chunk: 172.80.1.0/24}"},
		{"name: worker1", "name: worker2"},
	} {
		t.Run(change.to, func(t *testing.T) {
			got, err := Canonical([]byte(strings.Replace(hostYAML, change.from, change.to, 1)))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(got, base) {
				t.Errorf("changing %q to %q left the canonical form unchanged", change.from, change.to)
			}
		})
	}
}

func TestDecodeAllSplitsDocuments(t *testing.T) {
	doc := func(name string) string {
		return "apiVersion: swarmvlan/v1\nkind: Host\nmetadata:\n  name: " + name + "\n"
	}
	tests := []struct {
		name    string
		in      string
		wantRaw []string
	}{
		{"one document", doc("a"), []string{doc("a")}},
		{"leading marker", "---\n" + doc("a"), []string{doc("a")}},
		{"two documents", doc("a") + "---\n" + doc("b"), []string{doc("a"), doc("b")}},
		{"comment on the marker line", doc("a") + "--- # second\n" + doc("b"), []string{doc("a"), doc("b")}},
		{"content on the marker line", doc("a") + "--- {apiVersion: swarmvlan/v1, kind: Host, metadata: {name: b}}\n",
			[]string{doc("a"), "--- {apiVersion: swarmvlan/v1, kind: Host, metadata: {name: b}}\n"}},
		{"empty documents skipped", "# header\n---\n---\n" + doc("a") + "---\n# nothing\n---\n" + doc("b") + "---\n",
			[]string{doc("a"), doc("b")}},
		{"end markers", doc("a") + "...\n---\n" + doc("b") + "...\n", []string{doc("a"), doc("b")}},
		{"end marker without start marker", doc("a") + "...\n" + doc("b"), []string{doc("a"), doc("b")}},
		{"directive kept with its document", doc("a") + "---\n%TAG !e! tag:example.com,2000:\n--- \n" + doc("b"),
			[]string{doc("a"), "%TAG !e! tag:example.com,2000:\n--- \n" + doc("b")}},
		{"marker-like text inside a line", doc("a") + "  # --- not a marker\n", []string{doc("a") + "  # --- not a marker\n"}},
		{"json stream", `{"apiVersion":"swarmvlan/v1","kind":"Host","metadata":{"name":"a"}}` + "\n\n" + ` {"apiVersion":"swarmvlan/v1","kind":"Host","metadata":{"name":"b"}}`,
			[]string{`{"apiVersion":"swarmvlan/v1","kind":"Host","metadata":{"name":"a"}}`, `{"apiVersion":"swarmvlan/v1","kind":"Host","metadata":{"name":"b"}}`}},
		{"nothing", "", nil},
		{"only comments", "# nothing here\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := DecodeAll([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var raws []string
			for i, d := range docs {
				raws = append(raws, string(d.Raw))
				if d.Index != i {
					t.Errorf("document %d has Index %d", i, d.Index)
				}
				if _, err := Decode(d.Raw); err != nil {
					t.Errorf("document %d: Raw does not decode alone: %v", i, err)
				}
			}
			if !reflect.DeepEqual(raws, tt.wantRaw) {
				t.Errorf("Raw =\n%q\nwant\n%q", raws, tt.wantRaw)
			}
		})
	}
}

// TestDecodeErrors checks the exact messages users see.
func TestDecodeErrors(t *testing.T) {
	const vlan = "apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: vlan40}\n"
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"unknown field", vlan + "spec:\n  rangePlan: {chunkSize: 24}\n",
			"spec.rangePlan.chunkSize: unknown field"},
		{"unknown field, wrong case", vlan + "spec: {Trunk: eth0}\n",
			`spec.Trunk: unknown field (did you mean "trunk"?)`},
		{"every problem at once", vlan + "spec: {id: forty, trunk: 7, promiscuous: 1, pool: []}\nstatus: {}\n",
			"spec.id: must be an integer\nspec.trunk: must be a string (quote the value)\nspec.promiscuous: must be true or false\nspec.pool: unknown field\nstatus: unknown field"},
		{"replicas not an integer", "apiVersion: swarmvlan/v1\nkind: Service\nmetadata: {name: web}\nspec: {replicas: 2.5}\n",
			"spec.replicas: must be an integer"},
		{"list expected", vlan + "spec: {rangePlan: {pool: 172.80.1.0/24}}\n",
			"spec.rangePlan.pool: must be a list"},
		{"object expected", vlan + "spec: [1]\n",
			"spec: must be an object"},
		{"duplicate key", vlan + "spec: {trunk: a, trunk: b}\n",
			"spec.trunk: duplicate key"},
		{"duplicate key in json", `{"apiVersion": "swarmvlan/v1", "kind": "VLAN", "kind": "VLAN"}`,
			"kind: duplicate key"},
		{"missing kind", "apiVersion: swarmvlan/v1\nmetadata: {name: x}\n",
			"kind: required (one of VLAN, Host, Service)"},
		{"unknown kind", "apiVersion: swarmvlan/v1\nkind: Vlan\n",
			`kind: unknown kind "Vlan" (one of VLAN, Host, Service)`},
		{"kind not a string", "apiVersion: swarmvlan/v1\nkind: [VLAN]\n",
			"kind: must be a string"},
		{"wrong apiVersion", "apiVersion: v1\nkind: Host\nmetadata: {name: x}\n",
			`apiVersion: must be swarmvlan/v1, not "v1"`},
		{"missing apiVersion and unknown field", "kind: Host\nmetadata: {name: x, namespace: y}\n",
			"apiVersion: required (must be swarmvlan/v1)\nmetadata.namespace: unknown field"},
		{"not an object", "- a\n- b\n",
			"document must be an object with apiVersion, kind, metadata and spec"},
		{"second document", vlan + "spec: {trunk: eth0}\n---\n" + vlan + "spec: {id: x}\n",
			"document 2: spec.id: must be an integer"},
		{"syntax error in second document gives the file's line", vlan + "---\n" + vlan + "spec:\n  trunk: [eth0\n",
			"document 2: line 8: did not find expected ',' or ']'"},
		{"json syntax error", "{\"apiVersion\": \"swarmvlan/v1\",\n \"kind\": }",
			"line 2: invalid character '}' looking for beginning of value"},
		{"unsupported tag", vlan + "spec: {trunk: !!binary ZXRoMA==}\n",
			"spec.trunk: unsupported tag !!binary"},
		{"keys must be strings", vlan + "spec: {[a]: b}\n",
			"spec: line 4: keys must be strings"},
		{"integer out of range in json", `{"apiVersion": "swarmvlan/v1", "kind": "VLAN", "spec": {"id": 99999999999999999999}}`,
			"spec.id: integer 99999999999999999999 is out of range"},
		{"too deep", vlan + "spec: {rangePlan: {pinned: " + strings.Repeat("[", 70) + strings.Repeat("]", 70) + "}}\n",
			"spec.rangePlan.pinned" + strings.Repeat("[0]", 62) + ": nested more than 64 levels deep\nspec.rangePlan.pinned: must be an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := DecodeAll([]byte(tt.in))
			if err == nil {
				t.Fatalf("decoded %d documents, want error %q", len(docs), tt.want)
			}
			if docs != nil {
				t.Errorf("returned documents along with the error")
			}
			if err.Error() != tt.want {
				t.Errorf("error =\n%v\nwant\n%v", err, tt.want)
			}
			if _, ok := err.(ErrorList); !ok {
				t.Errorf("error is a %T, want ErrorList", err)
			}
		})
	}
}

func TestDecodeValues(t *testing.T) {
	const in = `apiVersion: swarmvlan/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  replicas: 0
  env: {EMPTY: "", TILDE: ~, DATE: 2024-01-01, QUOTED: "8080"}
  update: {parallelism: 0}
  mounts: [{type: tmpfs, target: /tmp, readOnly: false}]
  placement: null
  consul: {port: 0x1F90, check: {tcp: true}}
`
	o, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	s := o.(*Service)
	if s.Spec.Replicas == nil || *s.Spec.Replicas != 0 {
		t.Errorf("replicas: 0 decoded as %v, want a pointer to 0", s.Spec.Replicas)
	}
	if s.Spec.Update.Parallelism == nil || *s.Spec.Update.Parallelism != 0 {
		t.Errorf("parallelism: 0 decoded as %v, want a pointer to 0", s.Spec.Update.Parallelism)
	}
	wantEnv := map[string]string{"EMPTY": "", "TILDE": "", "DATE": "2024-01-01", "QUOTED": "8080"}
	if !reflect.DeepEqual(s.Spec.Env, wantEnv) {
		t.Errorf("env = %q, want %q", s.Spec.Env, wantEnv)
	}
	if s.Spec.Placement != nil {
		t.Errorf("placement: null decoded as %+v, want nil", s.Spec.Placement)
	}
	if s.Spec.Consul.Port != 8080 || !s.Spec.Consul.Check.TCP {
		t.Errorf("consul = %+v", s.Spec.Consul)
	}
}

func TestDecodeWantsOneDocument(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", "no document found"},
		{"# only a comment\n---\n", "no document found"},
		{hostYAML + "---\n" + hostYAML, "want one document, found 2"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			if _, err := Decode([]byte(tt.in)); err == nil || err.Error() != tt.want {
				t.Errorf("Decode error = %v, want %q", err, tt.want)
			}
			if _, err := Canonical([]byte(tt.in)); err == nil || err.Error() != tt.want {
				t.Errorf("Canonical error = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestDecodeEveryField decodes a document that sets every field of every
// type to a non-zero value and checks that encoding it again gives the same
// JSON: a field the decoder skipped would be missing.
func TestDecodeEveryField(t *testing.T) {
	for _, obj := range []Object{&VLAN{}, &Service{}, &Host{}} {
		t.Run(obj.GetKind(), func(t *testing.T) {
			fill(reflect.ValueOf(obj).Elem(), 1)
			v := reflect.ValueOf(obj).Elem()
			v.FieldByName("APIVersion").SetString(APIVersion)
			v.FieldByName("Kind").SetString(obj.GetKind())
			in, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(in)
			if err != nil {
				t.Fatalf("%s\n%v", in, err)
			}
			if !reflect.DeepEqual(got, obj) {
				t.Errorf("decoded\n%+v\nwant\n%+v", got, obj)
			}
		})
	}
}

// fill sets every field reachable from v to a non-zero value.
func fill(v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(v.Field(i), depth)
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		fill(v.Index(0), depth)
		fill(v.Index(1), depth+1)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		e := reflect.New(v.Type().Elem()).Elem()
		fill(e, depth)
		m.SetMapIndex(reflect.ValueOf("k"+strings.Repeat("x", depth)), e)
		v.Set(m)
	case reflect.String:
		v.SetString("s" + strings.Repeat("x", depth))
	case reflect.Int:
		v.SetInt(int64(depth))
	case reflect.Bool:
		v.SetBool(true)
	}
}

// TestDecodeLargeInputs checks that inputs built to be expensive are
// rejected or decoded in time linear in their size, with a bounded error
// list. The bound is generous: it only catches quadratic behaviour, which
// takes minutes on these sizes.
func TestDecodeLargeInputs(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"many directives", strings.Repeat("# c\n%TAG !a! tag:a,2000:\n", 20000) + "---\n" + hostYAML},
		{"many empty documents", strings.Repeat("---\n", 100000)},
		{"many duplicate keys", strings.Repeat("a: 1\n", 100000)},
		{"many documents", strings.Repeat(hostYAML+"---\n", 5000)},
		{"deep flow nesting", "x: " + strings.Repeat("[", 10000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := DecodeAll([]byte(tt.in))
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
			if l := AsErrorList(err); len(l) > maxErrors+1 {
				t.Errorf("%d problems reported, want at most %d", len(l), maxErrors+1)
			}
		})
	}
}
