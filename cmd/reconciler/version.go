package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"swarmvlan/reconcile/engine"
)

// version and commit are set at build time (make build, make image):
//
//	go build -ldflags "-X main.version=$(git describe --tags --always --dirty) -X main.commit=$(git rev-parse HEAD)"
//
// Without them, buildInfo falls back on what the Go toolchain recorded.
var version, commit string

// buildInfo is what this binary knows of its own build.
type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// readBuildInfo is the version and commit set with -ldflags -X, else the
// module version and VCS revision the toolchain stamped (go install
// module@version records the first; a build inside a checkout without
// -buildvcs=false the second), else "devel" and "unknown".
func readBuildInfo() buildInfo {
	bi := buildInfo{Version: version, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info, ok := debug.ReadBuildInfo(); ok {
		if bi.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			bi.Version = info.Main.Version
		}
		if bi.Commit == "" {
			var rev, modified string
			for _, s := range info.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value
				}
			}
			if rev != "" && modified == "true" {
				rev += "-dirty"
			}
			bi.Commit = rev
		}
	}
	if bi.Version == "" {
		bi.Version = "devel"
	}
	if bi.Commit == "" {
		bi.Commit = "unknown"
	}
	return bi
}

// versionReport is the output of `reconciler version -o json`.
type versionReport struct {
	buildInfo
	// Docker is the engine's answer; DockerError says why there is none.
	Docker      *dockerVersion `json:"docker,omitempty"`
	DockerError string         `json:"dockerError,omitempty"`
}

// dockerVersion is engine.Version as the JSON output spells it.
type dockerVersion struct {
	Engine string `json:"engine"`
	// API is the version negotiated; MinAPI and MaxAPI the daemon's range.
	API    string `json:"api"`
	MinAPI string `json:"minAPI"`
	MaxAPI string `json:"maxAPI"`
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	text   string
}

// cmdVersion prints the build and, when an engine answers within
// --timeout, its version and the API version negotiated with it. An engine
// that does not answer is reported, not an error: the build is still known.
func cmdVersion(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	dockerHost := fs.String("docker-host", "", "Docker Engine address (default: DOCKER_HOST or the local socket)")
	output := fs.String("o", "text", "text or json")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the Docker Engine's answer")
	noDocker := fs.Bool("client", false, "print only the build, without asking the Docker Engine")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("-o: must be text or json, not %q", *output)
	}
	rep := versionReport{buildInfo: readBuildInfo()}
	if !*noDocker {
		v, err := engineVersion(ctx, *dockerHost, *timeout)
		if err != nil {
			rep.DockerError = err.Error()
		} else {
			rep.Docker = &dockerVersion{Engine: v.Engine, API: v.API, MinAPI: v.MinAPI, MaxAPI: v.MaxAPI, OS: v.OS, Arch: v.Arch, text: v.String()}
		}
	}
	if *output == "json" {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(c.stdout, "reconciler %s\n  commit:  %s\n  go:      %s %s\n", rep.Version, rep.Commit, rep.GoVersion, rep.Platform)
	switch {
	case rep.Docker != nil:
		fmt.Fprintf(c.stdout, "  docker:  %s\n", rep.Docker.text)
	case rep.DockerError != "":
		fmt.Fprintf(c.stdout, "  docker:  not answering (%s)\n", rep.DockerError)
	}
	return nil
}

func engineVersion(ctx context.Context, host string, timeout time.Duration) (engine.Version, error) {
	d, err := engine.New(host)
	if err != nil {
		return engine.Version{}, err
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return d.ServerVersion(ctx)
}
