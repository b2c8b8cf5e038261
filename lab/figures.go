package lab

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// FiguresEnv names the file that Figure appends every figure to, so that
// `make test`, whose passing packages print nothing, shows them at the end.
const FiguresEnv = "SWARMVLAN_FIGURES"

var figuresMu sync.Mutex

// Figure logs a measured figure as "FIGURE name: value" and, when
// $SWARMVLAN_FIGURES names a file, appends the line (with the test's
// name) to it.
func Figure(tb testing.TB, name, value string) {
	tb.Helper()
	line := fmt.Sprintf("FIGURE %s: %s", name, value)
	tb.Log(line)
	path := os.Getenv(FiguresEnv)
	if path == "" {
		return
	}
	figuresMu.Lock()
	defer figuresMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tb.Logf("figures file %s: %v", path, err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%-40s %s\n", tb.Name(), line)
}
