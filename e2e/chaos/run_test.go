package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
)

// Environment of `make chaos`.
const (
	seedEnv     = "SWARMVLAN_CHAOS_SEED"
	durationEnv = "SWARMVLAN_CHAOS_DURATION"
	// defaultSeed and defaultDuration are the short run of `go test`.
	defaultSeed     = 18
	defaultDuration = 100 * time.Second
)

// runConfig reads the seed and the duration from the environment.
func runConfig(t *testing.T) (int64, time.Duration) {
	seed, dur := int64(defaultSeed), defaultDuration
	if v := os.Getenv(seedEnv); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("$%s=%q: %v", seedEnv, v, err)
		}
		seed = n
	}
	if v := os.Getenv(durationEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("$%s=%q: %v", durationEnv, v, err)
		}
		dur = d
	}
	return seed, dur
}

// run is one chaos run: the bed, the seeded source of every random choice,
// the schedule so far, what each host has lost, and the violations.
type run struct {
	t     *testing.T
	b     *bed.Bed
	seed  int64
	rng   *rand.Rand
	start time.Time

	mu       sync.Mutex
	schedule []string
	faults   map[string]int
	// dockerDown: hosts whose dockerd is killed or that are crashed;
	// isolated: hosts cut off the others; consulDown: hosts whose agent
	// is stopped.
	dockerDown, isolated, consulDown map[string]bool
	crashed                          map[string]bool
	// dockerLost is when each host last lost its dockerd or crashed,
	// for the bound of entries that stay passing.
	dockerLost map[string]time.Time
	// restored is when a snapshot was last restored.
	restored time.Time
	// outage is set while Consul has no quorum.
	outage     bool
	violations []string
	stop       context.CancelFunc
	// hostIDs are the swarm node IDs each host has had (a host that
	// leaves and joins again is a new node); report fails the test with a
	// violation's text.
	hostIDs map[string][]string
	report  func(string)
}

// wasNode reports whether node is, or was, host's swarm node.
func (r *run) wasNode(host, node string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.hostIDs[host], node)
}

func newRun(t *testing.T, b *bed.Bed, seed int64) *run {
	r := &run{
		t: t, b: b, seed: seed, rng: rand.New(rand.NewSource(seed)), start: time.Now(),
		faults:     map[string]int{},
		dockerDown: map[string]bool{}, isolated: map[string]bool{}, consulDown: map[string]bool{},
		crashed: map[string]bool{}, dockerLost: map[string]time.Time{},
		hostIDs: map[string][]string{},
		report:  func(s string) { t.Error(s) },
	}
	if b != nil {
		for _, h := range b.Cluster.Hosts() {
			r.hostIDs[h.Name] = []string{h.ID}
		}
	}
	return r
}

// logf adds a line to the schedule and prints it.
func (r *run) logf(kind, target, format string, args ...any) {
	r.mu.Lock()
	line := fmt.Sprintf("%7.1fs %-16s %-6s %s", time.Since(r.start).Seconds(), kind, target, fmt.Sprintf(format, args...))
	r.schedule = append(r.schedule, line)
	r.mu.Unlock()
	if r.t != nil {
		r.t.Log("SCHEDULE " + line)
	}
}

// fault counts a fault of kind and logs it.
func (r *run) fault(kind, target, format string, args ...any) {
	r.mu.Lock()
	r.faults[kind]++
	r.mu.Unlock()
	r.logf(kind, target, format, args...)
}

// violation fails the test with the seed, the schedule so far and the
// state that broke rule, and ends the run.
func (r *run) violation(rule, state string) {
	r.mu.Lock()
	r.violations = append(r.violations, rule)
	sched := strings.Join(r.schedule, "\n")
	stop := r.stop
	at := time.Since(r.start)
	r.mu.Unlock()
	r.report(fmt.Sprintf("VIOLATION of %q at %.1fs, seed %d\nstate: %s\nschedule so far:\n%s",
		rule, at.Seconds(), r.seed, state, sched))
	if stop != nil {
		stop()
	}
}

func (r *run) failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.violations) > 0
}

func (r *run) set(m map[string]bool, h *lab.Host, v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v {
		m[h.Name] = true
	} else {
		delete(m, h.Name)
	}
}

func (r *run) is(m map[string]bool, h *lab.Host) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m[h.Name]
}

// dockerUp reports whether h's Engine can be read: neither killed nor
// crashed.
func (r *run) dockerUp(h *lab.Host) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.dockerDown[h.Name] && !r.crashed[h.Name]
}

// reachable reports whether h is up and talks to the others.
func (r *run) reachable(h *lab.Host) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.crashed[h.Name] && !r.isolated[h.Name]
}

// quiet reports whether no fault lasts on any host.
func (r *run) quiet() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.dockerDown)+len(r.isolated)+len(r.consulDown)+len(r.crashed) == 0 && !r.outage
}

// managerClient reads the swarm through the first manager that answers.
type managerClient struct {
	r *run
}

func (m *managerClient) get(ctx context.Context) (*client.Client, error) {
	var errs []error
	for _, h := range m.r.b.Cluster.Managers() {
		if !m.r.dockerUp(h) || !m.r.reachable(h) {
			continue
		}
		d := m.r.b.Docker(h)
		if _, err := d.SwarmInspect(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
			continue
		}
		return d, nil
	}
	return nil, fmt.Errorf("no manager answers: %w", errors.Join(errs...))
}

// consul returns the KV and health API of an agent that is up and
// reachable, the client agents first.
func (r *run) consul() (*api.Client, *lab.Host) {
	hosts := r.b.Cluster.Hosts()
	for i := len(hosts) - 1; i >= 0; i-- {
		h := hosts[i]
		if r.reachable(h) && !r.is(r.consulDown, h) {
			return r.b.Consul(h), h
		}
	}
	return nil, nil
}
