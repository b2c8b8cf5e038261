package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"swarmvlan/spec"
)

// convertRun runs the built binary's convert with a fixed environment.
func convertRun(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"convert"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func TestConvertCommand(t *testing.T) {
	shop := []string{"-f", "../../spec/compose/testdata/shop/compose.yml", "-f", "../../spec/compose/testdata/shop/override.yml"}

	t.Run("stdout", func(t *testing.T) {
		code, out, errs := convertRun(t, []string{"WEB_TAG=1.4.2"}, shop...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		docs, err := spec.DecodeAndValidate([]byte(out))
		if err != nil || len(docs) != 2 {
			t.Fatalf("%d documents, %v:\n%s", len(docs), err, out)
		}
		web := docs[1].Object.(*spec.Service)
		// The override's value, the .env file's tag and the environment's.
		if web.Spec.Env["LOG_LEVEL"] != "debug" || web.Spec.Image != "registry.example.com/shop/web:1.4.2" || *web.Spec.Replicas != 4 {
			t.Errorf("web: env %v, image %s, replicas %d", web.Spec.Env, web.Spec.Image, *web.Spec.Replicas)
		}
		if api := docs[0].Object.(*spec.Service); api.Spec.Image != "registry.example.com/shop/api:2.3.1" {
			t.Errorf("api image %s: the .env file's API_TAG is not used", api.Spec.Image)
		}
		for _, p := range []string{"services.web.build: ", "services.web.ports[0]: ", "services.web.depends_on: ", "secrets.api_key: "} {
			if !strings.Contains(errs, "not converted: "+p) {
				t.Errorf("stderr does not report %s:\n%s", p, errs)
			}
		}
	})

	t.Run("strict", func(t *testing.T) {
		code, out, errs := convertRun(t, nil, append(shop, "--strict")...)
		if code != 1 || out != "" || !strings.Contains(errs, "key(s) not converted (--strict); nothing written") || !strings.Contains(errs, "services.web.build") {
			t.Errorf("--strict: exit %d, stdout %q, stderr:\n%s", code, out, errs)
		}
	})

	t.Run("strict on a file that maps whole", func(t *testing.T) {
		dir := t.TempDir()
		f := writeFile(t, dir, "compose.yml", `services:
  web:
    image: web:1
    networks: [v40]
    deploy: {replicas: 2}
networks:
  v40: {external: true}
`)
		code, out, errs := convertRun(t, nil, "-f", f, "--vlan", "v40", "--strict")
		if code != 0 || !strings.Contains(out, "networks: [v40]") || errs != "" {
			t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errs)
		}
	})

	t.Run("directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		code, out, errs := convertRun(t, []string{"WORKER_TAG=5"}, "-f", "../../spec/compose/testdata/workers/compose.yml", "--vlan", "vlan70", "--vlan", "vlan71", "-o", dir)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		want := filepath.Join(dir, "queue-worker.yaml")
		if !strings.Contains(out, want+": Service queue-worker") {
			t.Errorf("stdout:\n%s", out)
		}
		if code, vout, verr := run(t, "", "", "validate", "-f", dir); code != 0 || !strings.Contains(vout, "Service queue-worker valid") {
			t.Errorf("validate -f %s: exit %d\n%s%s", dir, code, vout, verr)
		}
	})

	t.Run("bad flag", func(t *testing.T) {
		if code, _, errs := convertRun(t, nil, "-f", "x.yml", "--vlan", "=v"); code != 1 || !strings.Contains(errs, `--vlan "=v"`) {
			t.Errorf("exit %d: %s", code, errs)
		}
	})
}
