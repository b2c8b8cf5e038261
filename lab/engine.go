package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// EngineCacheEnv names the environment variable that moves the Engine cache
// (default DefaultEngineCache).
const EngineCacheEnv = "SWARMVLAN_ENGINE_CACHE"

// DefaultEngineCache is where scripts/ensure-engines.sh puts the Engines it
// fetched or built: <cache>/<version>/bin/dockerd, <version>/engine.env.
const DefaultEngineCache = "/var/cache/swarmvlan/engines"

// Engine is the Docker Engine a lab cluster's daemons run. The zero Engine
// (and a nil *Engine) is the machine's own dockerd, found on PATH.
type Engine struct {
	// Name is what tests are named after: "20.10", "26", "28", "29".
	Name string
	// Version is the exact release the daemon must report ("26.1.5").
	Version string
	// BinDir holds dockerd, and containerd and its shim when the Engine
	// brings its own; it goes first on the daemon's PATH, so what it lacks
	// (containerd for some, runc for all) is the machine's. Empty for the
	// machine's Engine.
	BinDir string
	// Config is the daemon's configuration file beyond what every lab
	// daemon gets (nothing): settings this Engine needs on this machine.
	Config map[string]any
	// Env is added to the daemon's environment.
	Env []string
}

// knownEngines are the Engines scripts/ensure-engines.sh prepares, keyed by
// Name. Engine 29 refuses API versions below 1.44 unless told otherwise, and
// bookworm's docker CLI speaks 1.41; its default runc options ask for a
// time namespace, which bookworm's runc 1.1.5 does not know.
var knownEngines = map[string]Engine{
	"26": {Name: "26", Version: "26.1.5"},
	"28": {Name: "28", Version: "28.5.2"},
	"29": {
		Name: "29", Version: "29.8.1",
		Config: map[string]any{"features": map[string]any{"time-namespaces": false}},
		Env:    []string{"DOCKER_MIN_API_VERSION=1.41"},
	},
}

// MachineEngineName is the Name of the machine's own Engine (Debian
// bookworm's docker.io).
const MachineEngineName = "20.10"

// MatrixEngines are the Engines the Engine matrix runs, oldest first.
var MatrixEngines = []string{MachineEngineName, "26", "28", "29"}

// EngineCache is the directory the Engines are cached in.
func EngineCache() string {
	if d := os.Getenv(EngineCacheEnv); d != "" {
		return d
	}
	return DefaultEngineCache
}

// EngineByName returns Engine name (one of MatrixEngines). For the
// machine's Engine that is its dockerd on PATH; for the others the cached
// one, and when it is not there an error that says why: the reason
// scripts/ensure-engines.sh recorded (a pinned package no longer served, a
// failed build), or that the script has not run.
func EngineByName(name string) (*Engine, error) {
	if name == MachineEngineName {
		if _, err := exec.LookPath("dockerd"); err != nil {
			return nil, fmt.Errorf("engine %s: %w", name, err)
		}
		return &Engine{Name: name}, nil
	}
	known, ok := knownEngines[name]
	if !ok {
		return nil, fmt.Errorf("engine %q: unknown (known: %s)", name, strings.Join(MatrixEngines, ", "))
	}
	e := known
	dir := filepath.Join(EngineCache(), e.Version)
	e.BinDir = filepath.Join(dir, "bin")
	if why, err := os.ReadFile(filepath.Join(dir, "missing")); err == nil {
		return nil, fmt.Errorf("engine %s (%s) not available: %s", name, e.Version, strings.TrimSpace(string(why)))
	}
	env, err := os.ReadFile(filepath.Join(dir, "engine.env"))
	if err != nil {
		return nil, fmt.Errorf("engine %s (%s) not in %s (scripts/ensure-engines.sh prepares it): %w", name, e.Version, dir, err)
	}
	if !strings.Contains(string(env), "VERSION='"+e.Version+"'") {
		return nil, fmt.Errorf("engine %s: %s/engine.env is not for %s:\n%s", name, dir, e.Version, env)
	}
	if _, err := os.Stat(e.dockerd()); err != nil {
		return nil, fmt.Errorf("engine %s (%s): %w", name, e.Version, err)
	}
	return &e, nil
}

// String names the Engine as the tests do: "Engine29", "Engine20.10".
func (e *Engine) String() string {
	if e == nil || e.Name == "" {
		return "Engine" + MachineEngineName
	}
	return "Engine" + e.Name
}

// version is the release the daemon must report; "" for the machine's
// Engine, which is whatever the machine has.
func (e *Engine) version() string {
	if e == nil {
		return ""
	}
	return e.Version
}

// dockerd is the daemon binary: the Engine's own or the machine's.
func (e *Engine) dockerd() string {
	if e == nil || e.BinDir == "" {
		return "dockerd"
	}
	return filepath.Join(e.BinDir, "dockerd")
}

// configFile is the daemon's --config-file content. Every daemon gets one
// of its own, so the machine's /etc/docker/daemon.json (data root, storage
// driver) never reaches it.
func (e *Engine) configFile() ([]byte, error) {
	cfg := map[string]any{}
	if e != nil {
		for k, v := range e.Config {
			cfg[k] = v
		}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("engine %s: config file: %w", e, err)
	}
	return append(b, '\n'), nil
}

// environ is the daemon's environment: base with the Engine's BinDir first
// on PATH and its Env added.
func (e *Engine) environ(base []string) []string {
	if e == nil {
		return base
	}
	out := make([]string, 0, len(base)+len(e.Env)+1)
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range base {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = p
			continue
		}
		out = append(out, kv)
	}
	if e.BinDir != "" {
		path = e.BinDir + string(os.PathListSeparator) + path
	}
	out = append(out, "PATH="+path)
	return append(out, e.Env...)
}
