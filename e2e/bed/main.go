package bed

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"swarmvlan/lab"
)

// reconcilerBin is the reconciler binary Main builds once per test binary;
// each test copies it into its cluster.
var reconcilerBin string

// Main is the TestMain of every e2e package: it skips the package in -short
// mode (every test takes a cluster and a minute or more), builds the
// reconciler once, runs the tests and exits with their result. Skipping
// without root, the test image and the sweep of crashed earlier runs are
// lab.StartCluster's, so they apply to every test of every package.
func Main(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "swarmvlan-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bin, err := buildReconciler(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		reconcilerBin = bin
		return m.Run()
	}()
	os.Exit(code)
}

// ReconcilerBinary is the reconciler binary Main built, for tests that run
// it outside a lab cluster.
func ReconcilerBinary() string { return reconcilerBin }

// buildReconciler builds cmd/reconciler into dir.
func buildReconciler(dir string) (string, error) {
	root, err := lab.ModuleRoot()
	if err != nil {
		return "", err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		// sudo often drops the PATH entry of Go; the toolchain that built
		// this test binary is the one to use.
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, "reconciler")
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/reconciler")
	cmd.Dir = root
	// Static, like the binary a user installs on a host.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build reconciler: %w\n%s", err, b)
	}
	return out, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
