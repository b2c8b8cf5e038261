// Package bed is the harness of swarmvlan's end-to-end tests, shared by the
// packages under e2e/ (walkthrough, kv, failover, restart), each a test
// binary of its own so its time shows on its own. A test brings up a
// multi-host lab cluster (lab.StartCluster: hosts in network namespaces,
// each with its own dockerd and Consul agent, forming one swarm and one
// Consul cluster) with New, which runs `reconciler run` on every host as in
// production; it writes documents with `reconciler apply` (Apply) or
// straight into Consul KV, and checks the end state of Docker, the kernel
// and Consul's catalog (Converged, HostNetReady, World), before and after
// the faults a real cluster sees.
//
// Every e2e package's TestMain is Main, which builds the reconciler once.
package bed

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/spec"
)

// Settings of the reconcilers the tests run.
const (
	// reconcilerListen is each reconciler's HTTP address inside its host.
	reconcilerListen = "127.0.0.1:8480"
	// nodeDownGrace is how long the leader waits before it removes a lost
	// node's entries from the catalog (production default 1m).
	nodeDownGrace = 10 * time.Second
	// KVPrefix is the reconcilers' default prefix.
	KVPrefix = "swarmvlan/"
	// testTimeout bounds one test, bring-up and faults included.
	testTimeout = 10 * time.Minute
)

// Bed is one test's cluster with a reconciler on every host: `run --role
// all` on managers, `run --role host` on workers, each with the host's own
// Docker Engine and Consul agent.
type Bed struct {
	// t is the test that fails when a check does; owner is the test the
	// cluster, the reconcilers and the clients live as long as (t, or the
	// parent of the subtests that share the bed, see For).
	t, owner testing.TB
	// Cluster is the lab cluster under the reconcilers.
	Cluster *lab.Cluster
	// Ctx ends when the test does or after testTimeout.
	Ctx context.Context
	// bin is the reconciler binary inside the cluster's run directory.
	bin string
	// H1 is the first host, a manager that every test keeps up.
	H1 *lab.Host
	// Mgr is H1's engine.
	Mgr *client.Client

	mu      *sync.Mutex
	procs   map[string]*lab.Process // host name -> its current reconciler
	crashed map[string]bool         // hosts the test crashed and did not boot
	dockers map[string]*client.Client
	consuls map[string]*api.Client
}

// New starts a cluster of hosts (the first managers of them Swarm
// managers, the first three Consul servers) with the test image loaded, and
// a reconciler on every host. Everything is torn down when the test ends;
// if it failed, the reconcilers' last log lines are printed first.
func New(t testing.TB, hosts, managers int) *Bed {
	t.Helper()
	return NewWith(t, lab.ClusterOptions{Hosts: hosts, Managers: managers, ConsulServers: min(3, hosts)})
}

// NewWith is New on a cluster of any shape and Engine (opts.Engine).
func NewWith(t testing.TB, opts lab.ClusterOptions) *Bed {
	t.Helper()
	b := NewCluster(t, opts)
	for _, h := range b.Cluster.Hosts() {
		b.StartReconciler(h)
	}
	return b
}

// NewCluster starts a cluster of the given shape with the test image
// loaded and no reconciler on it: the test runs swarmvlan itself (as Swarm
// services, e2e/stack). The reconciler binary is there for the operator
// commands (Apply, ReconcilerCmd).
func NewCluster(t testing.TB, opts lab.ClusterOptions) *Bed {
	t.Helper()
	if reconcilerBin == "" {
		t.Fatal("bed: no reconciler binary: the package's TestMain must call bed.Main")
	}
	opts.Image = true
	c := lab.StartCluster(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	b := &Bed{
		t: t, owner: t, Cluster: c, Ctx: ctx,
		H1:      c.Host(1),
		mu:      &sync.Mutex{},
		procs:   map[string]*lab.Process{},
		crashed: map[string]bool{},
		dockers: map[string]*client.Client{},
		consuls: map[string]*api.Client{},
	}
	b.Mgr = b.Docker(b.H1)
	// Inside the run directory, so the cluster's teardown removes it and a
	// crashed run's sweep recognises the processes by their command line.
	b.bin = filepath.Join(c.Dir, "reconciler")
	if err := copyFile(reconcilerBin, b.bin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		b.mu.Lock()
		procs := maps.Clone(b.procs)
		b.mu.Unlock()
		for _, name := range slices.Sorted(maps.Keys(procs)) {
			t.Logf("reconciler on %s (last 60 lines):\n%s", name, LastLines(procs[name].Logs(), 60))
		}
		t.Logf("swarm as h1 sees it:\n%s", b.swarmReport())
	})
	return b
}

// For returns the bed for subtest t of the bed's test, so that subtests
// can share one cluster one after the other: checks fail t, which gets a
// Ctx of its own (testTimeout), while the cluster, the reconcilers and the
// clients stay with the bed's test.
func (b *Bed) For(t testing.TB) *Bed {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	sub := *b
	sub.t, sub.Ctx = t, ctx
	return &sub
}

// swarmReport describes the nodes (state, readiness labels) and the tasks
// of every managed service (node, desired and current state, error), for
// the log of a failed test.
func (b *Bed) swarmReport() string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out strings.Builder
	nodes, err := b.Mgr.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return err.Error()
	}
	names := map[string]string{}
	for _, n := range nodes {
		names[n.ID] = n.Description.Hostname
		fmt.Fprintf(&out, "node %s %s ready-label=%q\n", n.Description.Hostname, n.Status.State,
			n.Spec.Labels[spec.NodeLabelPrefix+VLANName])
	}
	svcs, err := b.ManagedServices(ctx)
	if err != nil {
		return out.String() + err.Error()
	}
	for _, name := range slices.Sorted(maps.Keys(svcs)) {
		tasks, err := b.Mgr.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", name))})
		if err != nil {
			fmt.Fprintf(&out, "service %s: %v\n", name, err)
			continue
		}
		sort.Slice(tasks, func(i, j int) bool { return tasks[i].Meta.CreatedAt.Before(tasks[j].Meta.CreatedAt) })
		for _, tk := range tasks {
			fmt.Fprintf(&out, "task %s.%d on %s: desired %s, %s %q %s\n", name, tk.Slot, names[tk.NodeID],
				tk.DesiredState, tk.Status.State, tk.Status.Message, tk.Status.Err)
		}
	}
	return out.String()
}

// StartReconciler starts (or starts again) the reconciler of h.
func (b *Bed) StartReconciler(h *lab.Host) *lab.Process {
	b.t.Helper()
	return b.StartReconcilerWith(h)
}

// StartReconcilerWith starts (or starts again) the reconciler of h with
// extra run flags after the bed's own.
func (b *Bed) StartReconcilerWith(h *lab.Host, extra ...string) *lab.Process {
	b.t.Helper()
	role := "host"
	if h.Manager {
		role = "all"
	}
	args := append([]string{"run", "--role", role, "--listen", reconcilerListen,
		"--node-down-grace", nodeDownGrace.String()}, extra...)
	var p *lab.Process
	if ns := h.MountNamespace(); ns != "" {
		// In the host's mount namespace, so the IPAM plugin's socket is
		// under the /run of this host's dockerd alone.
		p = h.StartProcess(b.owner, "nsenter", append([]string{"--mount=" + ns, "--", b.bin}, args...)...)
	} else {
		p = h.StartProcess(b.owner, b.bin, args...)
	}
	b.mu.Lock()
	b.procs[h.Name] = p
	b.mu.Unlock()
	return p
}

// Proc returns the current reconciler of h.
func (b *Bed) Proc(h *lab.Host) *lab.Process {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.procs[h.Name]
}

// Crash kills h and records that it is down until BootOnly.
func (b *Bed) Crash(h *lab.Host) {
	b.mu.Lock()
	b.crashed[h.Name] = true
	b.mu.Unlock()
	h.Kill()
}

// BootOnly starts a crashed host again, as a reboot, without its
// reconciler (StartReconciler starts it).
func (b *Bed) BootOnly(h *lab.Host) {
	b.t.Helper()
	if err := h.Boot(b.Ctx); err != nil {
		b.t.Fatalf("boot %s: %v", h.Name, err)
	}
	b.mu.Lock()
	delete(b.crashed, h.Name)
	b.mu.Unlock()
}

// Up returns the hosts the test has not crashed.
func (b *Bed) Up() []*lab.Host {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*lab.Host
	for _, h := range b.Cluster.Hosts() {
		if !b.crashed[h.Name] {
			out = append(out, h)
		}
	}
	return out
}

// Docker returns a client of h's engine, made once per host.
func (b *Bed) Docker(h *lab.Host) *client.Client {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.dockers[h.Name]; ok {
		return c
	}
	c := h.Docker(b.owner)
	b.dockers[h.Name] = c
	return c
}

// Consul returns a client of h's Consul agent, made once per host.
func (b *Bed) Consul(h *lab.Host) *api.Client {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.consuls[h.Name]; ok {
		return c
	}
	c := h.Consul(b.owner)
	b.consuls[h.Name] = c
	return c
}

// Apply writes docs to files and runs `reconciler apply -f DIR` inside h1,
// as an operator would.
func (b *Bed) Apply(docs ...string) {
	b.t.Helper()
	dir, err := os.MkdirTemp(b.t.TempDir(), "docs-")
	if err != nil {
		b.t.Fatal(err)
	}
	for i, d := range docs {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d.yaml", i)), []byte(d), 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.ReconcilerCmd("apply", "-f", dir)
}

// ReconcilerCmd runs a reconciler subcommand inside h1 and returns its
// output, failing the test if it fails.
func (b *Bed) ReconcilerCmd(args ...string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, time.Minute)
	defer cancel()
	out, err := b.H1.Exec(ctx, b.bin, args...).CombinedOutput()
	if err != nil {
		b.t.Fatalf("reconciler %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// WaitFor polls f every half second until it returns nil and returns how
// long that took; after timeout the test fails with f's last error.
func (b *Bed) WaitFor(what string, timeout time.Duration, f func(ctx context.Context) error) time.Duration {
	b.t.Helper()
	begin := time.Now()
	deadline := begin.Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(b.Ctx, 20*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return time.Since(begin)
		}
		if time.Now().After(deadline) || b.Ctx.Err() != nil {
			b.t.Fatalf("%s: not reached after %s: %v", what, timeout, err)
		}
		select {
		case <-b.Ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Holds checks f every interval for d and fails the test the first time it
// returns an error.
func (b *Bed) Holds(what string, d, interval time.Duration, f func(ctx context.Context) error) {
	b.t.Helper()
	end := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(b.Ctx, 20*time.Second)
		err := f(ctx)
		cancel()
		if err != nil {
			b.t.Fatalf("%s: broken: %v", what, err)
		}
		if time.Now().After(end) {
			return
		}
		select {
		case <-b.Ctx.Done():
			b.t.Fatalf("%s: %v", what, b.Ctx.Err())
		case <-time.After(interval):
		}
	}
}

// NodesReady waits until the leader has labelled every host that is up
// ready for the VLAN, which takes the host role's config network and the
// leader's chunk and swarm network. Services applied after it spread over
// every host.
func (b *Bed) NodesReady(timeout time.Duration) {
	b.t.Helper()
	want := map[string]bool{}
	for _, h := range b.Up() {
		want[h.Name] = true
	}
	b.WaitFor("every node labelled ready for "+VLANName, timeout, func(ctx context.Context) error {
		nodes, err := b.Mgr.NodeList(ctx, swarm.NodeListOptions{})
		if err != nil {
			return err
		}
		var missing []string
		for _, n := range nodes {
			if want[n.Description.Hostname] && n.Spec.Labels[spec.NodeLabelPrefix+VLANName] != "ready" {
				missing = append(missing, n.Description.Hostname)
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return fmt.Errorf("not labelled ready: %v", missing)
		}
		return nil
	})
}

// Seed applies the VLAN, waits until every host is ready for it, then
// applies web with 6 replicas and waits until it converged; it returns
// web's tasks.
func (b *Bed) Seed() []Task {
	b.t.Helper()
	b.Apply(VLANDoc())
	b.NodesReady(3 * time.Minute)
	b.Apply(WebDoc(6))
	tasks, took := b.WaitConverged(WebWant(6), 4*time.Minute)
	b.t.Logf("web: 6 tasks running and passing in Consul %s after apply", took.Round(10*time.Millisecond))
	return tasks
}

// SetHeartbeat sets Swarm's dispatcher heartbeat, which decides how soon a
// silent node is marked down (default 5 s).
func (b *Bed) SetHeartbeat(d time.Duration) {
	b.t.Helper()
	sw, err := b.Mgr.SwarmInspect(b.Ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	sw.Spec.Dispatcher.HeartbeatPeriod = d
	if err := b.Mgr.SwarmUpdate(b.Ctx, sw.Version, sw.Spec, swarm.UpdateFlags{}); err != nil {
		b.t.Fatal(err)
	}
}

// ReconcilerTry runs a reconciler subcommand inside h1 and returns its
// standard output and error apart, and its error, without failing the
// test: for commands expected to fail.
func (b *Bed) ReconcilerTry(args ...string) (stdout, stderr string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, time.Minute)
	defer cancel()
	cmd := b.H1.Exec(ctx, b.bin, args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}
