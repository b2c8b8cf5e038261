package secure

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

// reconciler is the binary TestMain builds, run by every test as users run
// it: as a process configured by flags and the CONSUL_* variables.
var reconciler string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e/secure: skipped in -short mode")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "swarmvlan-secure-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		root, err := lab.ModuleRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		reconciler = filepath.Join(dir, "reconciler")
		cmd := exec.Command(goTool, "build", "-o", reconciler, "./cmd/reconciler")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build reconciler: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}
