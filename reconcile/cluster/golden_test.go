package cluster_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"swarmvlan/reconcile/cluster"
	"swarmvlan/spec"
)

// goldenFixes are the values the mapping used to get wrong, by golden file:
// the JSON path of the value, what Docker was given before, and what it is
// given now. A memory quantity with a decimal-looking suffix (512M, 1G) was
// read as a power of 1000; Docker's CLI and validation read every suffix as a
// power of 1024. Upgrading restarts the tasks of exactly these services (the
// spec changes, and with it the spec-hash label); README.md's upgrade notes
// say so.
var goldenFixes = map[string][]goldenFix{
	"spec_testdata_valid_cache.cache.json": {
		{"TaskTemplate.Resources.Limits.MemoryBytes", 1_000_000_000, 1 << 30},
		{"TaskTemplate.Resources.Reservations.MemoryBytes", 512_000_000, 512 << 20},
	},
	"memory-decimal.decimal.json": {
		{"TaskTemplate.Resources.Limits.MemoryBytes", 1_000_000_000, 1 << 30},
		{"TaskTemplate.Resources.Reservations.MemoryBytes", 512_000_000, 512 << 20},
	},
}

type goldenFix struct {
	path     string
	old, new float64
}

// goldenNew writes the golden ServiceSpec of a document that has none yet
// (a new case under testdata/golden), and never touches an existing one:
// go test -run TestGoldenServiceSpecs ./reconcile/cluster/ -golden-new
var goldenNew = flag.Bool("golden-new", false, "write golden ServiceSpecs for documents that have none yet")

// goldenName is the golden file of the service name documented in src.
func goldenName(src, name string) string {
	src = strings.TrimPrefix(strings.TrimPrefix(src, "../../"), "testdata/golden/")
	src = strings.NewReplacer("/", "_", ".yaml", "", ".json", "").Replace(src)
	return src + "." + name + ".json"
}

// TestGoldenServiceSpecs checks that a document that did not change maps to
// a byte-identical ServiceSpec across upgrades of the reconciler, so an
// upgrade restarts no task, except where the old value was wrong
// (goldenFixes), where exactly that value and the spec hash differ.
func TestGoldenServiceSpecs(t *testing.T) {
	seen := map[string]bool{}
	// Every valid document's ServiceSpec was recorded under
	// testdata/golden before the mapping moved onto spec's parsers.
	for _, d := range validServices(t) {
		s := d.svc
		name := goldenName(d.source, s.Metadata.Name)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			ss, err := cluster.BuildServiceSpec(cluster.ServiceInput{Service: s, Replicas: cluster.EffectiveReplicas(s, nil), Owner: "golden-owner"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(ss, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			file := filepath.Join("testdata/golden", name)
			want, err := os.ReadFile(file)
			if os.IsNotExist(err) && *goldenNew {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("wrote the new golden %s", file)
				return
			}
			if err != nil {
				t.Fatalf("no golden ServiceSpec for %s: %v", name, err)
			}
			fixes := goldenFixes[name]
			if len(fixes) == 0 {
				if !bytes.Equal(got, want) {
					t.Errorf("ServiceSpec changed for an unchanged document:\n got %s\nwant %s", got, want)
				}
				return
			}
			goldenCompareFixed(t, got, want, fixes)
		})
	}
	for name := range goldenFixes {
		if !seen[name] {
			t.Errorf("golden fix for %s, which no document produces", name)
		}
	}
}

// goldenCompareFixed checks that want with fixes applied, and the spec hash
// label left out, equals got.
func goldenCompareFixed(t *testing.T, got, want []byte, fixes []goldenFix) {
	t.Helper()
	var g, w map[string]any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	for _, fx := range fixes {
		parent, key := goldenAt(t, w, fx.path)
		if parent[key] != fx.old {
			t.Errorf("golden %s = %v, the fix expects %v", fx.path, parent[key], fx.old)
		}
		parent[key] = fx.new
	}
	for _, m := range []map[string]any{g, w} {
		labels, _ := goldenAt(t, m, "Labels."+spec.LabelSpecHash)
		delete(labels, spec.LabelSpecHash)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("ServiceSpec differs beyond the fixed values:\n got %s\nwant %s", gb, wb)
	}
}

// goldenAt walks a dotted path and returns the map holding its last part.
func goldenAt(t *testing.T, m map[string]any, path string) (map[string]any, string) {
	t.Helper()
	parts := strings.Split(path, ".")
	// Label keys contain dots: the first part names the map, the rest is
	// the key.
	if parts[0] == "Labels" {
		l, _ := m["Labels"].(map[string]any)
		return l, strings.Join(parts[1:], ".")
	}
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			t.Fatalf("golden path %s: no object at %s", path, p)
		}
		m = next
	}
	return m, parts[len(parts)-1]
}
