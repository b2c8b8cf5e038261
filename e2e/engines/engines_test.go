package engines

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
)

// ReportEnv names the environment variable of a file the matrix's table
// is written to as well (make test prints it).
const ReportEnv = "SWARMVLAN_ENGINE_REPORT"

// leaderKillServices is how many services the leader is killed among; 20
// on a cluster of its own in e2e/failover, fewer here, where the cluster
// already runs web.
const leaderKillServices = 10

// steps run one after the other on each Engine's cluster; each needs what
// the ones before it left (web seeded and back on every host).
var steps = []struct {
	name string
	run  func(t *testing.T, b *bed.Bed)
}{
	{"walkthrough", func(_ *testing.T, b *bed.Bed) { b.CheckWalkthrough(b.Seed()) }},
	{"host-bits", checkHostBits},
	{"shared-parent", checkSharedParent},
	{"config-from", checkConfigFrom},
	{"dockerd-restart", func(_ *testing.T, b *bed.Bed) { b.RestartDocker(b.Cluster.Host(2)) }},
	{"reboot", func(_ *testing.T, b *bed.Bed) { b.Reboot(b.Cluster.Host(3)) }},
	{"leader-kill", func(_ *testing.T, b *bed.Bed) { b.KillLeaderMidReconcile(leaderKillServices) }},
}

// engineResult is one Engine's part of the matrix's table.
type engineResult struct {
	name, version string
	// problem is why the steps did not run, if they did not.
	problem       string
	bringUp, took time.Duration
	steps         []stepResult
}

type stepResult struct {
	name, outcome, note string
	took                time.Duration
}

type report struct {
	mu      sync.Mutex
	engines map[string]*engineResult
}

func (r *report) add(e *engineResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.engines[e.name] = e
}

// atOnce is how many Engines' clusters run at the same time. The steps
// mostly wait (on Swarm, Consul, the reconcilers), so on the 2-core lab
// machines all four at once took 1m24s and two at a time 2m43s, every
// step passing either way.
const atOnce = 4

// TestEngines runs the steps on every Engine, atOnce Engines' clusters at
// a time, and logs a table of each step's outcome and time per Engine.
func TestEngines(t *testing.T) {
	rep := &report{engines: map[string]*engineResult{}}
	begin := time.Now()
	t.Run("matrix", func(t *testing.T) {
		// Subtests run from goroutines of their own rather than with
		// t.Parallel, so that go test's -parallel (GOMAXPROCS, 2 here)
		// does not set how many run at once.
		var wg sync.WaitGroup
		slots := make(chan struct{}, atOnce)
		for _, name := range lab.MatrixEngines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				slots <- struct{}{}
				defer func() { <-slots }()
				t.Run("Engine"+name, func(t *testing.T) { runEngine(t, name, rep) })
			}()
		}
		wg.Wait()
	})
	table := rep.table(time.Since(begin))
	t.Logf("Engine matrix:\n%s", table)
	if path := os.Getenv(ReportEnv); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Errorf("write the matrix report: %v", err)
		}
	}
}

func runEngine(t *testing.T, name string, rep *report) {
	begin := time.Now()
	res := &engineResult{name: name, problem: "bring-up failed"}
	defer func() {
		res.took = time.Since(begin)
		rep.add(res)
	}()
	engine, err := lab.EngineByName(name)
	if err != nil {
		res.problem = "NOT RUN: " + err.Error()
		t.Fatalf("Engine %s NOT RUN: %v", name, err)
	}
	b := bed.NewWith(t, lab.ClusterOptions{Hosts: 3, Managers: 3, ConsulServers: 3, Engine: engine})
	res.problem, res.bringUp, res.version = "", b.Cluster.StartupTime, serverVersion(b)
	t.Logf("%s: every host runs Engine %s (bring-up %s)", engine, res.version, res.bringUp.Round(10*time.Millisecond))
	failed := ""
	for _, s := range steps {
		r := stepResult{name: s.name}
		t.Run(s.name, func(t *testing.T) {
			begin := time.Now()
			defer func() {
				r.took = time.Since(begin)
				switch {
				case t.Failed():
					r.outcome = "FAIL"
				case t.Skipped():
					r.outcome = "NOT RUN"
				default:
					r.outcome = "PASS"
				}
			}()
			if failed != "" {
				r.note = failed + " failed before it on this cluster"
				t.Skipf("not run: %s", r.note)
			}
			s.run(t, b.For(t))
		})
		res.steps = append(res.steps, r)
		if r.outcome == "FAIL" && failed == "" {
			failed = s.name
		}
	}
}

// serverVersion is the Engine version every host's daemon reports, or the
// list when they differ.
func serverVersion(b *bed.Bed) string {
	ctx, cancel := context.WithTimeout(b.Ctx, 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	var out []string
	for _, h := range b.Cluster.Hosts() {
		v, err := b.Docker(h).ServerVersion(ctx)
		s := v.Version + " (API " + v.APIVersion + ")"
		if err != nil {
			s = "? (" + err.Error() + ")"
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return strings.Join(out, ", ")
}

func (r *report) table(whole time.Duration) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, name := range lab.MatrixEngines {
		e := r.engines[name]
		if e == nil {
			continue // left out by -run
		}
		if e.problem != "" {
			fmt.Fprintf(&b, "  Engine%-6s %s (after %s)\n", e.name, e.problem, e.took.Round(time.Second))
			for _, s := range steps {
				fmt.Fprintf(&b, "    %-16s %-8s\n", s.name, "NOT RUN")
			}
			continue
		}
		fmt.Fprintf(&b, "  Engine%-6s %s: bring-up %s, all steps %s\n", e.name, e.version,
			e.bringUp.Round(time.Second), e.took.Round(time.Second))
		for _, s := range e.steps {
			fmt.Fprintf(&b, "    %-16s %-8s %8s%s\n", s.name, s.outcome, s.took.Round(time.Second), note(s.note))
		}
	}
	fmt.Fprintf(&b, "  matrix wall time (%d Engines at a time): %s\n", atOnce, whole.Round(time.Second))
	return b.String()
}

func note(s string) string {
	if s == "" {
		return ""
	}
	return "  (" + s + ")"
}
