package cluster_test

import (
	"os"
	"path/filepath"
	"testing"

	"swarmvlan/reconcile"
	"swarmvlan/spec"
)

// validSources are every valid document the repository holds: the
// testdata, the examples, and the golden test's own inputs.
var validSources = []string{
	"../../spec/testdata/valid/*",
	"../../examples/*.yaml",
	"../../examples/demo/*.yaml",
	"testdata/golden/*.yaml",
}

// sourcedService is one Service document and where it came from.
type sourcedService struct {
	source string
	svc    *spec.Service
}

// validServices decodes, defaults and validates every Service document of
// validSources, the way the reconciler reads them.
func validServices(t testing.TB) []sourcedService {
	t.Helper()
	var out []sourcedService
	for _, g := range validSources {
		files, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, servicesIn(t, f, data)...)
		}
	}
	if len(out) == 0 {
		t.Fatal("no valid Service document found")
	}
	return out
}

// servicesIn is every Service document in data, validated.
func servicesIn(t testing.TB, source string, data []byte) []sourcedService {
	t.Helper()
	docs, err := reconcile.ParseDocuments(data)
	if err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	var out []sourcedService
	for _, d := range docs {
		if s, ok := d.Object.(*spec.Service); ok {
			out = append(out, sourcedService{source: source, svc: s})
		}
	}
	return out
}
