package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// Settings of the reconcilers the tests run.
const (
	// reconcilerListen is each reconciler's HTTP address inside its host.
	reconcilerListen = "127.0.0.1:8480"
	// nodeDownGrace is how long the leader waits before it removes a lost
	// node's entries from the catalog (production default 1m).
	nodeDownGrace = 10 * time.Second
	// kvPrefix is the reconcilers' default prefix.
	kvPrefix = "swarmvlan/"
	// testTimeout bounds one test, bring-up and faults included.
	testTimeout = 10 * time.Minute
)

// bed is one test's cluster with a reconciler on every host: `run --role
// all` on managers, `run --role host` on workers, each with the host's own
// Docker Engine and Consul agent.
type bed struct {
	t   *testing.T
	c   *lab.Cluster
	ctx context.Context
	// bin is the reconciler binary inside the cluster's run directory.
	bin string
	h1  *lab.Host
	// mgr is h1's engine, a manager that every test keeps up.
	mgr *client.Client

	mu      sync.Mutex
	procs   map[string]*lab.Process // host name -> its current reconciler
	crashed map[string]bool         // hosts the test crashed and did not boot
	dockers map[string]*client.Client
	consuls map[string]*api.Client
}

// newBed starts a cluster of hosts (the first managers of them Swarm
// managers, the first three Consul servers) with the test image loaded, and
// a reconciler on every host. Everything is torn down when the test ends;
// if it failed, the reconcilers' last log lines are printed first.
func newBed(t *testing.T, hosts, managers int) *bed {
	t.Helper()
	c := lab.StartCluster(t, lab.ClusterOptions{Hosts: hosts, Managers: managers, ConsulServers: min(3, hosts), Image: true})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	b := &bed{
		t: t, c: c, ctx: ctx,
		h1:      c.Host(1),
		procs:   map[string]*lab.Process{},
		crashed: map[string]bool{},
		dockers: map[string]*client.Client{},
		consuls: map[string]*api.Client{},
	}
	b.mgr = b.docker(b.h1)
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
			t.Logf("reconciler on %s (last 60 lines):\n%s", name, lastLines(procs[name].Logs(), 60))
		}
		t.Logf("swarm as h1 sees it:\n%s", b.swarmReport())
	})
	for _, h := range c.Hosts() {
		b.startReconciler(h)
	}
	return b
}

// swarmReport describes the nodes (state, readiness labels) and the tasks
// of every managed service (node, desired and current state, error), for
// the log of a failed test.
func (b *bed) swarmReport() string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out strings.Builder
	nodes, err := b.mgr.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return err.Error()
	}
	names := map[string]string{}
	for _, n := range nodes {
		names[n.ID] = n.Description.Hostname
		fmt.Fprintf(&out, "node %s %s ready-label=%q\n", n.Description.Hostname, n.Status.State,
			n.Spec.Labels[reconcile.NodeLabelPrefix+vlanName])
	}
	svcs, err := b.managedServices(ctx)
	if err != nil {
		return out.String() + err.Error()
	}
	for _, name := range slices.Sorted(maps.Keys(svcs)) {
		tasks, err := b.mgr.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", name))})
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

// startReconciler starts (or starts again) the reconciler of h.
func (b *bed) startReconciler(h *lab.Host) *lab.Process {
	b.t.Helper()
	role := "host"
	if h.Manager {
		role = "all"
	}
	p := h.StartProcess(b.t, b.bin, "run", "--role", role, "--listen", reconcilerListen,
		"--node-down-grace", nodeDownGrace.String())
	b.mu.Lock()
	b.procs[h.Name] = p
	b.mu.Unlock()
	return p
}

// proc returns the current reconciler of h.
func (b *bed) proc(h *lab.Host) *lab.Process {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.procs[h.Name]
}

// crash records that h is down until boot.
func (b *bed) crash(h *lab.Host) {
	b.mu.Lock()
	b.crashed[h.Name] = true
	b.mu.Unlock()
	h.Kill()
}

// bootOnly starts a crashed host again, as a reboot, without its
// reconciler (startReconciler starts it).
func (b *bed) bootOnly(h *lab.Host) {
	b.t.Helper()
	if err := h.Boot(b.ctx); err != nil {
		b.t.Fatalf("boot %s: %v", h.Name, err)
	}
	b.mu.Lock()
	delete(b.crashed, h.Name)
	b.mu.Unlock()
}

// up returns the hosts the test has not crashed.
func (b *bed) up() []*lab.Host {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*lab.Host
	for _, h := range b.c.Hosts() {
		if !b.crashed[h.Name] {
			out = append(out, h)
		}
	}
	return out
}

func (b *bed) docker(h *lab.Host) *client.Client {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.dockers[h.Name]; ok {
		return c
	}
	c := h.Docker(b.t)
	b.dockers[h.Name] = c
	return c
}

func (b *bed) consul(h *lab.Host) *api.Client {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.consuls[h.Name]; ok {
		return c
	}
	c := h.Consul(b.t)
	b.consuls[h.Name] = c
	return c
}

// apply writes docs to files and runs `reconciler apply -f DIR` inside h1,
// as an operator would.
func (b *bed) apply(docs ...string) {
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
	b.reconcilerCmd("apply", "-f", dir)
}

// reconcilerCmd runs a reconciler subcommand inside h1 and returns its
// output, failing the test if it fails.
func (b *bed) reconcilerCmd(args ...string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	out, err := b.h1.Exec(ctx, b.bin, args...).CombinedOutput()
	if err != nil {
		b.t.Fatalf("reconciler %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitFor polls f every half second until it returns nil and returns how
// long that took; after timeout the test fails with f's last error.
func (b *bed) waitFor(what string, timeout time.Duration, f func(ctx context.Context) error) time.Duration {
	b.t.Helper()
	begin := time.Now()
	deadline := begin.Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return time.Since(begin)
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			b.t.Fatalf("%s: not reached after %s: %v", what, timeout, err)
		}
		select {
		case <-b.ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// holds checks f every interval for d and fails the test the first time it
// returns an error.
func (b *bed) holds(what string, d, interval time.Duration, f func(ctx context.Context) error) {
	b.t.Helper()
	end := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		err := f(ctx)
		cancel()
		if err != nil {
			b.t.Fatalf("%s: broken: %v", what, err)
		}
		if time.Now().After(end) {
			return
		}
		select {
		case <-b.ctx.Done():
			b.t.Fatalf("%s: %v", what, b.ctx.Err())
		case <-time.After(interval):
		}
	}
}

// nodesReady waits until the leader has labelled every host that is up
// ready for the VLAN, which takes the host role's config network and the
// leader's chunk and swarm network. Services applied after it spread over
// every host.
func (b *bed) nodesReady(timeout time.Duration) {
	b.t.Helper()
	want := map[string]bool{}
	for _, h := range b.up() {
		want[h.Name] = true
	}
	b.waitFor("every node labelled ready for "+vlanName, timeout, func(ctx context.Context) error {
		nodes, err := b.mgr.NodeList(ctx, swarm.NodeListOptions{})
		if err != nil {
			return err
		}
		var missing []string
		for _, n := range nodes {
			if want[n.Description.Hostname] && n.Spec.Labels[reconcile.NodeLabelPrefix+vlanName] != "ready" {
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

// task is one running task container as its host's engine reports it.
type task struct {
	Host      string
	TaskID    string
	Container string
	Addr      netip.Addr
}

// running lists the running task containers of service on every host that
// is up, with their address on the VLAN.
func (b *bed) running(ctx context.Context, service string) ([]task, error) {
	var out []task
	for _, h := range b.up() {
		ctrs, err := b.docker(h).ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
			filters.Arg("label", "com.docker.swarm.service.name="+service),
			filters.Arg("status", "running"),
		)})
		if err != nil {
			return nil, fmt.Errorf("%s: list containers: %w", h.Name, err)
		}
		for _, c := range ctrs {
			t := task{Host: h.Name, TaskID: c.Labels["com.docker.swarm.task.id"], Container: c.ID}
			if c.NetworkSettings != nil {
				if ep := c.NetworkSettings.Networks[swarmNetwork]; ep != nil {
					t.Addr, _ = netip.ParseAddr(ep.IPAddress)
				}
			}
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Container < out[j].Container })
	return out, nil
}

// chunk returns h's chunk as its config network holds it.
func (b *bed) chunk(ctx context.Context, h *lab.Host) (netip.Prefix, error) {
	n, err := b.docker(h).NetworkInspect(ctx, configNetwork, network.InspectOptions{})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: %w", h.Name, err)
	}
	if !n.ConfigOnly || len(n.IPAM.Config) != 1 {
		return netip.Prefix{}, fmt.Errorf("%s: %s: config-only %v, %d IPAM configs", h.Name, configNetwork, n.ConfigOnly, len(n.IPAM.Config))
	}
	p, err := netip.ParsePrefix(n.IPAM.Config[0].IPRange)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: %s: ip range %q: %w", h.Name, configNetwork, n.IPAM.Config[0].IPRange, err)
	}
	return p, nil
}

// chunks returns the chunk of every host that is up.
func (b *bed) chunks(ctx context.Context) (map[string]netip.Prefix, error) {
	out := map[string]netip.Prefix{}
	for _, h := range b.up() {
		p, err := b.chunk(ctx, h)
		if err != nil {
			return nil, err
		}
		out[h.Name] = p
	}
	return out, nil
}

// passing returns the addresses Consul reports passing for service, asking
// h's agent.
func (b *bed) passing(ctx context.Context, h *lab.Host, service string) (map[netip.Addr]bool, error) {
	entries, _, err := b.consul(h).Health().Service(service, "", true, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul via %s: %w", h.Name, err)
	}
	out := map[netip.Addr]bool{}
	for _, e := range entries {
		a, err := netip.ParseAddr(e.Service.Address)
		if err != nil {
			return nil, fmt.Errorf("consul entry %s: address %q", e.Service.ID, e.Service.Address)
		}
		if out[a] {
			return nil, fmt.Errorf("consul: %s passing twice", a)
		}
		out[a] = true
	}
	return out, nil
}

// want describes the converged state of one service.
type want struct {
	service    string
	replicas   int
	maxPerNode int
	// consul asks for every task's address to pass in Consul, and nothing
	// else to.
	consul bool
}

// converged checks one service's end state: Swarm runs exactly replicas
// tasks, every host that is up runs its share with an address from its own
// chunk, no address twice, at most maxPerNode per host, and (with consul)
// exactly those addresses pass in Consul.
func (b *bed) converged(ctx context.Context, w want) ([]task, error) {
	tasks, err := b.running(ctx, w.service)
	if err != nil {
		return nil, err
	}
	if len(tasks) != w.replicas {
		return tasks, fmt.Errorf("%s: %d task containers running, want %d: %v", w.service, len(tasks), w.replicas, tasks)
	}
	chunks, err := b.chunks(ctx)
	if err != nil {
		return tasks, err
	}
	perHost := map[string]int{}
	seen := map[netip.Addr]string{}
	for _, t := range tasks {
		perHost[t.Host]++
		if !t.Addr.IsValid() {
			return tasks, fmt.Errorf("%s: task %s on %s has no address on %s", w.service, t.TaskID, t.Host, swarmNetwork)
		}
		if !chunks[t.Host].Contains(t.Addr) {
			return tasks, fmt.Errorf("%s: task %s on %s has %s, outside its host's chunk %s", w.service, t.TaskID, t.Host, t.Addr, chunks[t.Host])
		}
		if other, dup := seen[t.Addr]; dup {
			return tasks, fmt.Errorf("%s: address %s held by tasks %s and %s", w.service, t.Addr, other, t.TaskID)
		}
		seen[t.Addr] = t.TaskID
	}
	if w.maxPerNode > 0 {
		for h, n := range perHost {
			if n > w.maxPerNode {
				return tasks, fmt.Errorf("%s: %d tasks on %s, max %d per node", w.service, n, h, w.maxPerNode)
			}
		}
	}
	swarmTasks, err := b.mgr.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(
		filters.Arg("service", w.service), filters.Arg("desired-state", "running"))})
	if err != nil {
		return tasks, err
	}
	runningInSwarm := 0
	for _, st := range swarmTasks {
		if st.Status.State == swarm.TaskStateRunning {
			runningInSwarm++
		}
	}
	if runningInSwarm != w.replicas || len(swarmTasks) != w.replicas {
		return tasks, fmt.Errorf("%s: swarm has %d tasks desired running, %d running, want %d", w.service, len(swarmTasks), runningInSwarm, w.replicas)
	}
	if w.consul {
		pass, err := b.passing(ctx, b.h1, w.service)
		if err != nil {
			return tasks, err
		}
		var missing, extra []string
		for a := range seen {
			if !pass[a] {
				missing = append(missing, a.String())
			}
		}
		for a := range pass {
			if _, ok := seen[a]; !ok {
				extra = append(extra, a.String())
			}
		}
		if len(missing)+len(extra) > 0 {
			sort.Strings(missing)
			sort.Strings(extra)
			return tasks, fmt.Errorf("%s: consul: not passing %v, passing but no such task %v", w.service, missing, extra)
		}
	}
	return tasks, nil
}

// waitConverged waits for converged and returns the tasks and how long it
// took.
func (b *bed) waitConverged(w want, timeout time.Duration) ([]task, time.Duration) {
	b.t.Helper()
	var tasks []task
	took := b.waitFor(w.service+" converged", timeout, func(ctx context.Context) error {
		var err error
		tasks, err = b.converged(ctx, w)
		return err
	})
	return tasks, took
}

// status reads status/<section>/<name>; ok is false when there is none.
func (b *bed) status(ctx context.Context, section, name string) (st reconcile.ObjectStatus, ok bool, err error) {
	p, _, err := b.consul(b.h1).KV().Get(kvPrefix+"status/"+section+"/"+name, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil || p == nil {
		return st, false, err
	}
	if err := json.Unmarshal(p.Value, &st); err != nil {
		return st, true, fmt.Errorf("status/%s/%s: %w", section, name, err)
	}
	return st, true, nil
}

// condition returns the condition of type typ, if the status has one.
func condition(st reconcile.ObjectStatus, typ string) (state.Condition, bool) {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return state.Condition{}, false
}

// managedServices lists the services carrying the managed label, by name,
// as the manager h1 sees them.
func (b *bed) managedServices(ctx context.Context) (map[string][]swarm.Service, error) {
	svcs, err := b.mgr.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(
		filters.Arg("label", reconcile.DockerLabelManaged+"=true"))})
	if err != nil {
		return nil, err
	}
	out := map[string][]swarm.Service{}
	for _, s := range svcs {
		out[s.Spec.Name] = append(out[s.Spec.Name], s)
	}
	return out, nil
}

// hostNet is the kernel state the host role keeps for the VLAN on a host.
type hostNet struct {
	Promisc  bool
	Shim     bool
	ShimAddr netip.Addr
	Route    bool
}

// kernel reads trunk0's flags, the shim, its address and the route to the
// host's chunk inside h.
func (b *bed) kernel(ctx context.Context, h *lab.Host, chunk netip.Prefix) (hostNet, error) {
	var n hostNet
	out, err := h.Exec(ctx, "ip", "-o", "link", "show", "dev", lab.TrunkInterface).Output()
	if err != nil {
		return n, fmt.Errorf("%s: ip link show %s: %w", h.Name, lab.TrunkInterface, err)
	}
	n.Promisc = strings.Contains(string(out), "PROMISC")
	out, err = h.Exec(ctx, "ip", "-o", "-4", "addr", "show", "dev", shimLink).Output()
	if err != nil {
		return n, nil // no shim
	}
	n.Shim = true
	for _, f := range strings.Fields(string(out)) {
		if p, err := netip.ParsePrefix(f); err == nil && chunk.Contains(p.Addr()) {
			n.ShimAddr = p.Addr()
		}
	}
	out, err = h.Exec(ctx, "ip", "-o", "route", "show", chunk.String()).Output()
	if err == nil {
		n.Route = strings.Contains(string(out), "dev "+shimLink)
	}
	return n, nil
}

// hostNetReady checks the kernel state of every host that is up: trunk0
// promiscuous, the shim holding the last address of the host's chunk, the
// chunk routed through it.
func (b *bed) hostNetReady(ctx context.Context) error {
	chunks, err := b.chunks(ctx)
	if err != nil {
		return err
	}
	subnet := netip.MustParsePrefix(vlanSubnet)
	for _, h := range b.up() {
		n, err := b.kernel(ctx, h, chunks[h.Name])
		if err != nil {
			return err
		}
		wantShim := spec.ShimAddress(subnet, chunks[h.Name])
		switch {
		case !n.Promisc:
			return fmt.Errorf("%s: %s not promiscuous", h.Name, lab.TrunkInterface)
		case !n.Shim:
			return fmt.Errorf("%s: no shim %s", h.Name, shimLink)
		case n.ShimAddr != wantShim:
			return fmt.Errorf("%s: shim address %v, want %s", h.Name, n.ShimAddr, wantShim)
		case !n.Route:
			return fmt.Errorf("%s: no route to %s through %s", h.Name, chunks[h.Name], shimLink)
		}
	}
	return nil
}

// figure logs a measured figure in a form easy to grep from the test log.
func figure(t *testing.T, name string, d time.Duration) {
	t.Helper()
	t.Logf("FIGURE %s: %s", name, d.Round(10*time.Millisecond))
}

// logTime is the time= field of a reconciler log line (slog's text format).
func logTime(line string) (time.Time, bool) {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "time="); ok {
			t, err := time.Parse(time.RFC3339Nano, v)
			return t, err == nil
		}
	}
	return time.Time{}, false
}

// logLines returns the lines of log whose msg is msg.
func logLines(log, msg string) []string {
	var out []string
	quoted := fmt.Sprintf("msg=%q", msg)
	plain := "msg=" + msg + " "
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, quoted) || strings.Contains(l, plain) || strings.HasSuffix(l, "msg="+msg) {
			out = append(out, l)
		}
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
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
