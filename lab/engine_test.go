package lab

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestEngineByName reads what scripts/ensure-engines.sh leaves in the
// cache: a ready Engine, one whose package is gone (the script's reason
// is the error), one never prepared, and an engine.env of another version.
func TestEngineByName(t *testing.T) {
	cache := t.TempDir()
	t.Setenv(EngineCacheEnv, cache)
	write := func(version, file, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(cache, version, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cache, version, file), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("26.1.5", "engine.env", "VERSION='26.1.5'\n")
	write("26.1.5", "bin/dockerd", "#!/bin/sh\n")
	write("28.5.2", "missing", "docker.io=28.5.2+dfsg4-5 is no longer served by trixie or sid (now: 28.5.3)\n")
	write("29.8.1", "engine.env", "VERSION='29.8.0'\n")
	write("29.8.1", "bin/dockerd", "#!/bin/sh\n")

	e, err := EngineByName("26")
	if err != nil {
		t.Fatal(err)
	}
	if e.dockerd() != filepath.Join(cache, "26.1.5", "bin", "dockerd") || e.version() != "26.1.5" || e.String() != "Engine26" {
		t.Errorf("Engine 26: dockerd %s, version %s, %s", e.dockerd(), e.version(), e)
	}
	for name, want := range map[string]string{
		"28":   "no longer served by trixie or sid (now: 28.5.3)",
		"29":   "is not for 29.8.1",
		"27":   "unknown",
		"20.9": "unknown",
	} {
		if _, err := EngineByName(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("EngineByName(%q) = %v, want an error saying %q", name, err, want)
		}
	}
	os.RemoveAll(filepath.Join(cache, "29.8.1"))
	if _, err := EngineByName("29"); err == nil || !strings.Contains(err.Error(), "scripts/ensure-engines.sh prepares it") {
		t.Errorf("EngineByName(29) without its directory = %v", err)
	}
}

// TestEngineDaemonSettings: every daemon's config file is its own (an
// empty object for the machine's Engine), Engine 29's turns time
// namespaces off and lets API 1.41 clients in, and an Engine's own
// binaries come first on the daemon's PATH.
func TestEngineDaemonSettings(t *testing.T) {
	var machine *Engine
	if b, err := machine.configFile(); err != nil || strings.TrimSpace(string(b)) != "{}" {
		t.Errorf("machine's Engine config file %q, %v; want {}", b, err)
	}
	e29 := knownEngines["29"]
	e29.BinDir = "/cache/29.8.1/bin"
	b, err := e29.configFile()
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Features map[string]bool `json:"features"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if v, ok := cfg.Features["time-namespaces"]; !ok || v {
		t.Errorf("Engine 29 config file %s: want features.time-namespaces false", b)
	}
	env := e29.environ([]string{"HOME=/root", "PATH=/usr/sbin:/usr/bin"})
	if !slices.Contains(env, "PATH=/cache/29.8.1/bin:/usr/sbin:/usr/bin") || !slices.Contains(env, "DOCKER_MIN_API_VERSION=1.41") || !slices.Contains(env, "HOME=/root") {
		t.Errorf("Engine 29 environment %v", env)
	}
	if got := machine.environ([]string{"PATH=/usr/bin"}); !slices.Equal(got, []string{"PATH=/usr/bin"}) {
		t.Errorf("machine's Engine environment %v", got)
	}
}
