package lab

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
)

// ImageTestApp is the test workload image (lab/testapp). The binary is at
// /app, so the Service example in SPEC.md (command ["/app"], healthcheck
// ["CMD", "/app", "-health"]) runs on it unchanged.
const ImageTestApp = "swarmvlan-testapp:dev"

// imageHashLabel carries the SHA-256 of the binary in the image, so an
// unchanged binary is not rebuilt.
const imageHashLabel = "io.swarmvlan.testapp.sha256"

// imageDockerfile packages the static binary alone: no registry is
// reachable, so the image cannot start from anything but scratch.
const imageDockerfile = `FROM scratch
COPY app /app
ENTRYPOINT ["/app"]
`

// BuildTestImage builds lab/testapp as a static binary (CGO_ENABLED=0) and
// the image ImageTestApp around it on the engine at dockerHost ("" = the
// environment's default). It returns the image reference. When the image
// already holds a binary with the same hash, nothing is built.
func BuildTestImage(ctx context.Context, dockerHost string) (string, error) {
	root, err := imageModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "swarmvlan-testapp-")
	if err != nil {
		return "", fmt.Errorf("testapp image: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	bin := filepath.Join(dir, "app")
	// -trimpath keeps the binary, and so its hash, independent of where the
	// module is checked out.
	cmd := exec.CommandContext(ctx, imageGoTool(), "build", "-trimpath", "-o", bin, "./lab/testapp")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testapp image: go build: %w: %s", err, bytes.TrimSpace(out))
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("testapp image: read binary: %w", err)
	}
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])

	cli, err := imageClient(dockerHost)
	if err != nil {
		return "", err
	}
	defer cli.Close()
	if have, err := imageHash(ctx, cli); err == nil && have == hash {
		return ImageTestApp, nil
	}

	tarball, err := imageContext(data)
	if err != nil {
		return "", err
	}
	resp, err := cli.ImageBuild(ctx, tarball, build.ImageBuildOptions{
		Tags:        []string{ImageTestApp},
		Labels:      map[string]string{imageHashLabel: hash},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		// The classic builder needs no BuildKit session and pulls nothing
		// for FROM scratch.
		Version: build.BuilderV1,
	})
	if err != nil {
		return "", fmt.Errorf("testapp image: build: %w", err)
	}
	defer resp.Body.Close()
	if err := imageBuildResult(resp.Body); err != nil {
		return "", fmt.Errorf("testapp image: build: %w", err)
	}
	if have, err := imageHash(ctx, cli); err != nil || have != hash {
		return "", fmt.Errorf("testapp image: built image carries hash %q, want %q (inspect: %v)", have, hash, err)
	}
	return ImageTestApp, nil
}

// imageModuleRoot finds the swarmvlan module's directory: from the go tool
// when run inside the module (tests run in their package's directory),
// else from this file's path.
func imageModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, imageGoTool(), "env", "GOMOD").Output()
	if err == nil {
		if mod := strings.TrimSpace(string(out)); mod != "" && mod != os.DevNull {
			if b, err := os.ReadFile(mod); err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module swarmvlan\n")) {
				return filepath.Dir(mod), nil
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		return filepath.Dir(filepath.Dir(file)), nil
	}
	return "", errors.New("testapp image: cannot find the swarmvlan module (run inside it)")
}

// imageGoTool is the go command: from PATH, else the toolchain this binary
// was built with.
func imageGoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func imageClient(host string) (*client.Client, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", host, err)
	}
	return cli, nil
}

// imageHash returns the binary hash label of the current test image.
func imageHash(ctx context.Context, cli *client.Client) (string, error) {
	img, err := cli.ImageInspect(ctx, ImageTestApp)
	if err != nil {
		return "", err
	}
	if img.Config == nil {
		return "", nil
	}
	return img.Config.Labels[imageHashLabel], nil
}

// imageContext is the build context: the Dockerfile and the binary.
func imageContext(bin []byte) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, []byte(imageDockerfile)},
		{"app", 0o755, bin},
	}
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("testapp image: build context: %w", err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("testapp image: build context: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("testapp image: build context: %w", err)
	}
	return &buf, nil
}

// imageBuildResult reads the build's JSON message stream to its end: the
// HTTP status is 200 even when a step fails, the failure is in the stream.
func imageBuildResult(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read build output: %w", err)
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
		if msg.ErrorDetail.Message != "" {
			return errors.New(msg.ErrorDetail.Message)
		}
	}
}

// EnsureSwarm returns a version-negotiating client for the local Docker
// Engine (DOCKER_HOST or /var/run/docker.sock), closed when the test ends,
// after making sure the engine is a swarm manager: an engine outside any
// swarm is initialised with advertise address 127.0.0.1. The test is
// skipped when there is no engine.
//
// The swarm is deliberately left in place afterwards: leaving a swarm
// deletes every service on it, which other test packages running at the
// same time may be using.
func EnsureSwarm(t testing.TB) *client.Client {
	t.Helper()
	if os.Getenv("DOCKER_HOST") == "" {
		if _, err := os.Stat("/var/run/docker.sock"); err != nil {
			t.Skip("no Docker Engine: /var/run/docker.sock is absent and DOCKER_HOST is unset")
		}
	}
	cli, err := imageClient("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	info, err := cli.Info(ctx)
	if err != nil {
		t.Skipf("no Docker Engine reachable: %v", err)
	}
	if info.Swarm.LocalNodeState == swarm.LocalNodeStateInactive {
		_, err := cli.SwarmInit(ctx, swarm.InitRequest{ListenAddr: "127.0.0.1:2377", AdvertiseAddr: "127.0.0.1"})
		// Another test package may have initialised it meanwhile.
		if err != nil && !strings.Contains(err.Error(), "already part of a swarm") {
			t.Fatalf("swarm init: %v", err)
		}
	}
	// Poll: a fresh manager takes a moment to elect itself leader.
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err = cli.Info(ctx)
		if err != nil {
			t.Fatalf("docker info: %v", err)
		}
		if info.Swarm.LocalNodeState == swarm.LocalNodeStateActive && info.Swarm.ControlAvailable {
			if _, err := cli.NodeList(ctx, swarm.NodeListOptions{}); err == nil {
				return cli
			}
		}
		if info.Swarm.LocalNodeState == swarm.LocalNodeStateActive && !info.Swarm.ControlAvailable {
			t.Skip("the local engine is a swarm worker; these tests need a manager")
		}
		if time.Now().After(deadline) {
			t.Fatalf("engine is not a ready swarm manager after 30s: state %q, error %q", info.Swarm.LocalNodeState, info.Swarm.Error)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
