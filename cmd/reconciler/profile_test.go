package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// Profiles of the daemon under a benchmark: with SWARMVLAN_PPROF_DIR set,
// the latency and scale runs start their daemons with --pprof and write
// CPU and heap profiles of each phase there (go tool pprof -top FILE).

// pprofDir is where daemon profiles go; "" takes none.
func pprofDir() string { return os.Getenv("SWARMVLAN_PPROF_DIR") }

// pprofArgs are the daemon flags that serve its profiles, when taken.
func pprofArgs() []string {
	if pprofDir() == "" {
		return nil
	}
	return []string{"--pprof"}
}

// cpuProfile starts a CPU profile of the daemon at base over the next
// seconds and returns a function that waits for it and writes it to
// <dir>/<name>.cpu.pprof.
func cpuProfile(tb testing.TB, base, name string, seconds int) (wait func()) {
	if pprofDir() == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		saveProfile(tb, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds), name+".cpu.pprof")
	}()
	return func() { <-done }
}

// heapProfile writes the daemon's heap profile to <dir>/<name>.heap.pprof.
func heapProfile(tb testing.TB, base, name string) {
	if pprofDir() != "" {
		saveProfile(tb, base+"/debug/pprof/heap?gc=1", name+".heap.pprof")
	}
}

func saveProfile(tb testing.TB, url, file string) {
	resp, err := http.Get(url)
	if err != nil {
		tb.Logf("profile %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		tb.Logf("profile %s: %d %v", url, resp.StatusCode, err)
		return
	}
	path := filepath.Join(pprofDir(), file)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Logf("profile %s: %v", path, err)
		return
	}
	tb.Logf("profile written: %s", path)
}
