package spec

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// readTestdata returns the files of a testdata directory, by name.
func readTestdata(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("testdata", dir))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata", dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

func TestValidTestdata(t *testing.T) {
	files := readTestdata(t, "valid")
	for _, name := range []string{"vlan40.yaml", "web.yaml", "worker1.yaml", "stack.yaml", "cache.json"} {
		if files[name] == nil {
			t.Errorf("testdata/valid/%s is missing", name)
		}
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			docs, err := DecodeAll(data)
			if err != nil {
				t.Fatalf("decode:\n%v", err)
			}
			if len(docs) == 0 {
				t.Fatal("no documents")
			}
			for i, d := range docs {
				if d.Index != i {
					t.Errorf("document %d has Index %d", i, d.Index)
				}
				// Validation must hold with and without defaults.
				if err := Validate(d.Object); err != nil {
					t.Errorf("document %d before defaults:\n%v", i+1, err)
				}
				SetDefaults(d.Object)
				if err := Validate(d.Object); err != nil {
					t.Errorf("document %d after defaults:\n%v", i+1, err)
				}
				// Raw alone must decode to the same document.
				again, err := Decode(d.Raw)
				if err != nil {
					t.Fatalf("document %d: Raw %q does not decode on its own: %v", i+1, d.Raw, err)
				}
				SetDefaults(again)
				if !reflect.DeepEqual(again, d.Object) {
					t.Errorf("document %d: Raw decodes to\n%+v\nwant\n%+v", i+1, again, d.Object)
				}
			}
			if _, err := DecodeAndValidate(data); err != nil {
				t.Errorf("DecodeAndValidate:\n%v", err)
			}
		})
	}
}

// TestSpecExamples checks the decoded values of the examples in SPEC.md, so a
// field silently dropped or misread fails here.
func TestSpecExamples(t *testing.T) {
	files := readTestdata(t, "valid")
	decode := func(name string) Object {
		t.Helper()
		o, err := Decode(files[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return o
	}

	v := decode("vlan40.yaml").(*VLAN)
	if v.Spec.ID != 40 || v.Spec.Trunk != "bond0" || v.Spec.MTU != 1500 || v.Spec.Gateway != "172.80.0.1" ||
		!BoolOr(v.Spec.Promiscuous, false) || !BoolOr(v.Spec.HostAccess, false) {
		t.Errorf("vlan40 spec = %+v", v.Spec)
	}
	rp := v.Spec.RangePlan
	if rp.ChunkPrefix != 24 || !reflect.DeepEqual(rp.Pool, []string{"172.80.1.0/24", "172.80.2.0/23", "172.80.16.0/20"}) ||
		!reflect.DeepEqual(rp.Exclude, []string{"172.80.0.0/24"}) || rp.Pinned["manager1"] != "172.80.1.0/24" {
		t.Errorf("vlan40 rangePlan = %+v", rp)
	}

	s := decode("web.yaml").(*Service)
	if s.Metadata.Labels["team"] != "payments" || s.Spec.Image != "registry.example.com/web:1.4" ||
		!reflect.DeepEqual(s.Spec.Args, []string{"--listen", ":8080"}) || s.Spec.Env["LOG_LEVEL"] != "info" ||
		*s.Spec.Replicas != 3 || s.Spec.Scaling.Min != 2 || s.Spec.Scaling.Max != 10 || s.Spec.Scaling.Cooldown.Duration().Seconds() != 60 {
		t.Errorf("web spec = %+v", s.Spec)
	}
	if s.Spec.Placement.MaxPerNode != 1 || s.Spec.Placement.Preferences[0].Spread != "node.labels.rack" ||
		s.Spec.Resources.Limits.Memory != "256Mi" || s.Spec.Resources.Reservations.CPUs != "0.1" ||
		s.Spec.Update.Order != "start-first" || *s.Spec.Restart.MaxAttempts != 3 ||
		!s.Spec.Mounts[0].ReadOnly || s.Spec.Secrets[0].Name != "db_password" || s.Spec.Healthcheck.Retries != 3 {
		t.Errorf("web spec = %+v", s.Spec)
	}
	if c := s.Spec.Consul; c.Port != 8080 || c.Meta["owner"] != "payments" || c.Check.HTTP != "/health" ||
		c.Check.DeregisterAfter.Duration().Minutes() != 1 {
		t.Errorf("web consul = %+v %+v", c, c.Check)
	}

	h := decode("worker1.yaml").(*Host)
	if h.Metadata.Name != "worker1" || h.Spec.Trunk != "eth1" || h.Spec.VLANs["vlan40"].Trunk != "bond1" {
		t.Errorf("worker1 = %+v", h)
	}
	if got := h.TrunkFor(v); got != "bond1" {
		t.Errorf("worker1 trunk for vlan40 = %q, want bond1", got)
	}
}

func TestMultiDocumentTestdata(t *testing.T) {
	docs, err := DecodeAll(readTestdata(t, "valid")["stack.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ kind, name, rawHas string }{
		{KindVLAN, "vlan50", "id: 50"},
		{KindVLAN, "untagged", "driver: ipvlan"},
		{KindHost, "Node-1", "vlan50: {trunk: eth1"},
		{KindService, "agent", "mode: global"},
	}
	if len(docs) != len(want) {
		t.Fatalf("got %d documents, want %d", len(docs), len(want))
	}
	for i, w := range want {
		d := docs[i]
		if d.Object.GetKind() != w.kind || d.Object.GetName() != w.name {
			t.Errorf("document %d is %s %s, want %s %s", i+1, d.Object.GetKind(), d.Object.GetName(), w.kind, w.name)
		}
		if !bytes.Contains(d.Raw, []byte(w.rawHas)) {
			t.Errorf("document %d Raw lacks %q:\n%s", i+1, w.rawHas, d.Raw)
		}
		if bytes.Count(d.Raw, []byte("apiVersion:")) != 1 || bytes.Contains(d.Raw, []byte("\n---")) {
			t.Errorf("document %d Raw holds more than its own document:\n%s", i+1, d.Raw)
		}
	}
}

// invalidJSONWant is the expected field path for each invalid JSON file,
// which cannot carry a comment.
var invalidJSONWant = map[string]string{
	"json-vlan-id.json":        "spec.id",
	"json-duplicate-key.json":  "spec.replicas",
	"json-float-replicas.json": "spec.replicas",
	"json-syntax-error.json":   "-",
}

// wantPath returns the field path an invalid testdata file must be rejected
// at: its "# want:" first line, or its entry in invalidJSONWant. "-" means a
// problem with the document as a whole (an error with no field path).
func wantPath(t *testing.T, name string, data []byte) string {
	t.Helper()
	if strings.HasSuffix(name, ".json") {
		w, ok := invalidJSONWant[name]
		if !ok {
			t.Fatalf("%s has no entry in invalidJSONWant", name)
		}
		return w
	}
	first, _, _ := bufio.NewReader(bytes.NewReader(data)).ReadLine()
	w, ok := strings.CutPrefix(string(first), "# want: ")
	if !ok || w == "" {
		t.Fatalf("%s does not start with a '# want: <path>' line", name)
	}
	return w
}

func TestInvalidTestdata(t *testing.T) {
	files := readTestdata(t, "invalid")
	if len(files) < 70 {
		t.Errorf("only %d invalid documents, want at least 70", len(files))
	}
	for name := range invalidJSONWant {
		if files[name] == nil {
			t.Errorf("invalidJSONWant names %s, which does not exist", name)
		}
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			want := wantPath(t, name, data)
			docs, err := DecodeAndValidate(data)
			if err == nil {
				t.Fatalf("accepted (%d documents), want an error at %s", len(docs), want)
			}
			errs := AsErrorList(err)
			for _, e := range errs {
				if e.Path == want || want == "-" && e.Path == "" {
					return
				}
			}
			t.Errorf("no error at %s; got:\n%v", want, err)
		})
	}
}

// TestValidateWithoutDefaults checks that Validate gives the same verdict on
// a document before and after SetDefaults, for every testdata document that
// decodes.
func TestValidateWithoutDefaults(t *testing.T) {
	for _, dir := range []string{"valid", "invalid"} {
		for name, data := range readTestdata(t, dir) {
			docs, err := DecodeAll(data)
			if err != nil {
				continue
			}
			for _, d := range docs {
				before := Validate(d.Object)
				SetDefaults(d.Object)
				after := Validate(d.Object)
				if (before == nil) != (after == nil) {
					t.Errorf("%s/%s document %d: before defaults %v, after %v", dir, name, d.Index+1, before, after)
				}
			}
		}
	}
}
