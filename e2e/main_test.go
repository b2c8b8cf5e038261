package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"swarmvlan/lab"
)

// reconcilerBin is the reconciler binary TestMain builds once; each test
// copies it into its cluster.
var reconcilerBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test here takes a cluster and a minute or more.
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
