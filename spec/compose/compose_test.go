package compose_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"swarmvlan/spec"
	"swarmvlan/spec/compose"
)

var update = flag.Bool("update", false, "rewrite the golden outputs under testdata")

// cases are the compose files under testdata, how each is converted, and
// keys each must report by path (the golden issues hold all of them).
var cases = []struct {
	dir      string
	files    []string
	vlans    map[string]string
	env      []string
	profiles []string
	report   []string
}{
	{
		dir: "shop", files: []string{"compose.yml", "override.yml"},
		env: []string{"WEB_TAG=1.4.2", "LOG_LEVEL=warn"},
		report: []string{
			"services.web.build", "services.web.ports[0]", "services.web.depends_on",
			"services.api.environment.CACHE_URL", "secrets.api_key",
		},
	},
	{
		dir: "monitoring", files: []string{"compose.yml"}, vlans: map[string]string{"vlan10": "vlan10"},
		report: []string{
			"services.node-exporter.container_name", "services.node-exporter.ports[0]",
			"services.node-exporter.volumes[0].bind.propagation",
		},
	},
	{
		dir: "legacy", files: []string{"compose.yml"}, vlans: map[string]string{"office": "vlan30"},
		report: []string{
			"services.app.restart", "services.app.links", "services.app.expose", "services.app.privileged",
			"services.app.networks.office.ipv4_address", "services.cache.deploy.resources.limits.pids",
		},
	},
	{
		dir: "database", files: []string{"compose.yml"}, vlans: map[string]string{"vlan60": "vlan60"},
		report: []string{
			"services.postgres.shm_size", "services.postgres.healthcheck.start_interval",
			"services.postgres.deploy.update_config.max_failure_ratio", "services.backup.deploy.mode",
			"services.backup.devices", "volumes.pgdata", "configs.pg_hba",
		},
	},
	{
		dir: "workers", files: []string{"compose.yml"}, vlans: map[string]string{"vlan70": "vlan70", "vlan71": "vlan71"},
		env: []string{"WORKER_TAG=5.0.1"}, profiles: []string{"reports"},
		report: []string{
			"services.queue_worker", "services.queue_worker.x-team", "services.Reporter.profiles",
			"services.Reporter.networks.jobs_b.aliases", "services.scheduler.tty", "services.scheduler.stdin_open",
			"services.scheduler.networks",
		},
	},
}

// TestConvertGolden converts every compose file under testdata and
// compares the documents and the issues with the golden outputs; every
// document printed decodes and validates with spec and prints the same
// again, and each case's unsupported keys are reported by path.
func TestConvertGolden(t *testing.T) {
	var all []*spec.Service
	for _, tc := range cases {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join("testdata", tc.dir)
			var files []string
			for _, f := range tc.files {
				files = append(files, filepath.Join(dir, f))
			}
			res, err := compose.Convert(context.Background(), compose.Options{Files: files, Env: tc.env, VLANs: tc.vlans, Profiles: tc.profiles})
			if err != nil {
				t.Fatal(err)
			}
			out, err := compose.Marshal(res.Services...)
			if err != nil {
				t.Fatal(err)
			}
			var issues bytes.Buffer
			for _, i := range res.Issues {
				issues.WriteString(i.String() + "\n")
			}
			golden(t, filepath.Join(dir, "want.yaml"), out)
			golden(t, filepath.Join(dir, "want.issues"), issues.Bytes())

			if _, err := spec.DecodeAndValidate(out); err != nil {
				t.Fatalf("the printed documents do not validate:\n%v", err)
			}
			docs, err := spec.DecodeAll(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) != len(res.Services) || len(docs) == 0 {
				t.Fatalf("%d documents printed, %d converted", len(docs), len(res.Services))
			}
			var again []*spec.Service
			for _, d := range docs {
				again = append(again, d.Object.(*spec.Service))
			}
			if b, err := compose.Marshal(again...); err != nil || !bytes.Equal(b, out) {
				t.Errorf("decoded and printed again, the documents differ (%v):\n%s", err, b)
			}
			var paths []string
			for _, i := range res.Issues {
				paths = append(paths, i.Path)
			}
			for _, p := range tc.report {
				if !slices.Contains(paths, p) {
					t.Errorf("%s is not reported; issues:\n%s", p, issues.String())
				}
			}
			all = append(all, res.Services...)
		})
	}

	// Together the files use every key that maps: each field a compose
	// file can set is set in some converted document.
	// Scaling, Consul and Addresses are swarmvlan's own, and DockerName
	// names a service made by hand that adopt takes over: compose has no
	// key for them.
	composeless := map[string]bool{"Scaling": true, "Consul": true, "Addresses": true, "DockerName": true}
	set := map[string]bool{}
	for _, s := range all {
		v := reflect.ValueOf(s.Spec)
		for i := 0; i < v.NumField(); i++ {
			if !v.Field(i).IsZero() {
				set[v.Type().Field(i).Name] = true
			}
		}
		if len(s.Metadata.Labels) > 0 {
			set["metadata.labels"] = true
		}
	}
	typ := reflect.TypeOf(spec.ServiceSpec{})
	for i := 0; i < typ.NumField(); i++ {
		if n := typ.Field(i).Name; !set[n] && !composeless[n] {
			t.Errorf("no compose file under testdata sets what becomes spec.%s", n)
		}
	}
	if !set["metadata.labels"] {
		t.Error("no compose file under testdata sets deploy.labels")
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestConvertErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		want  string
	}{
		{"no file", nil, "no compose file"},
		{"missing file", []string{"testdata/none/compose.yml"}, "no such file"},
		{"required variable", []string{"testdata/workers/compose.yml"}, "required variable WORKER_TAG is missing a value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compose.Convert(context.Background(), compose.Options{Files: tc.files})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Convert: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
