package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestVersionStampedAndFallback builds the binary as make build does (the
// version and commit set with -ldflags -X) and as a plain go build does
// (-buildvcs=false: nothing stamped), and checks what version prints.
func TestVersionStampedAndFallback(t *testing.T) {
	dir := t.TempDir()
	stamped := filepath.Join(dir, "stamped")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-3-gabcdef0 -X main.commit=abcdef0123", "-o", stamped, ".")
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		bin, version, commit string
	}{
		{stamped, "v9.8.7-3-gabcdef0", "abcdef0123"},
		// TestMain's binary: go build with nothing stamped.
		{binary, "devel", ""},
	} {
		out, err := exec.Command(tc.bin, "version", "--client", "-o", "json").Output()
		if err != nil {
			t.Fatalf("%s version: %v", tc.bin, err)
		}
		var rep versionReport
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("version -o json: %v\n%s", err, out)
		}
		if rep.Version != tc.version || (tc.commit != "" && rep.Commit != tc.commit) || rep.Commit == "" {
			t.Errorf("%s: version %q commit %q, want %q %q", filepath.Base(tc.bin), rep.Version, rep.Commit, tc.version, tc.commit)
		}
		if rep.GoVersion != runtime.Version() || rep.Docker != nil || rep.DockerError != "" {
			t.Errorf("%s: go %q, docker %+v %q; want %s and no engine asked with --client", filepath.Base(tc.bin), rep.GoVersion, rep.Docker, rep.DockerError, runtime.Version())
		}
		text, err := exec.Command(tc.bin, "version", "--client").Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(text), "reconciler "+tc.version+"\n") {
			t.Errorf("%s: text output %q", filepath.Base(tc.bin), text)
		}
	}
}

// TestVersionAsksTheEngine runs version against the local Docker Engine:
// it reports the engine's version and the API version the client
// negotiated, which lies within the range the engine serves; against an
// address where nothing answers it still prints the build and exits 0.
func TestVersionAsksTheEngine(t *testing.T) {
	if _, err := os.Stat("/var/run/docker.sock"); err != nil && os.Getenv("DOCKER_HOST") == "" {
		t.Skip("no Docker Engine: /var/run/docker.sock is absent and DOCKER_HOST is unset")
	}
	code, out, errOut := run(t, "", "", "version", "-o", "json")
	if code != 0 {
		t.Fatalf("version: exit %d: %s", code, errOut)
	}
	var rep versionReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("version -o json: %v\n%s", err, out)
	}
	if rep.Docker == nil {
		t.Fatalf("no engine version: %s", rep.DockerError)
	}
	d := rep.Docker
	semver := regexp.MustCompile(`^\d+\.\d+`)
	if !semver.MatchString(d.Engine) || !semver.MatchString(d.API) || !semver.MatchString(d.MaxAPI) {
		t.Fatalf("engine %+v: want version numbers", d)
	}
	if apiLess(d.MaxAPI, d.API) || apiLess(d.API, d.MinAPI) {
		t.Errorf("negotiated API %s outside the engine's %s..%s", d.API, d.MinAPI, d.MaxAPI)
	}
	code, out, errOut = run(t, "", "", "version")
	if code != 0 || !strings.Contains(out, "docker:  Engine "+d.Engine+" (API "+d.API+" negotiated") {
		t.Errorf("version: exit %d, output:\n%s%s", code, out, errOut)
	}

	code, out, errOut = run(t, "", "", "version", "--docker-host", "unix://"+filepath.Join(t.TempDir(), "none.sock"))
	if code != 0 || !strings.HasPrefix(out, "reconciler ") || !strings.Contains(out, "docker:  not answering (") {
		t.Errorf("version without an engine: exit %d, output:\n%s%s", code, out, errOut)
	}
}

// apiLess compares API versions such as 1.41 and 1.9 by their numbers.
func apiLess(a, b string) bool {
	num := func(s string) (int, int) {
		var x, y int
		for i, p := range strings.SplitN(s, ".", 2) {
			n := 0
			for _, r := range p {
				if r < '0' || r > '9' {
					break
				}
				n = n*10 + int(r-'0')
			}
			if i == 0 {
				x = n
			} else {
				y = n
			}
		}
		return x, y
	}
	ax, ay := num(a)
	bx, by := num(b)
	return ax < bx || (ax == bx && ay < by)
}
