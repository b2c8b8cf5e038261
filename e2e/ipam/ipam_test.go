package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/state"
)

const (
	subnet  = "172.80.0.0/26"
	gateway = "172.80.0.1"
)

// vlanDoc is the VLAN on a /26, in mode cluster or (chunkPrefix 28: a /28
// per host) in mode chunks.
func vlanDoc(mode string) string { return vlanDocOn(subnet, mode) }

// vlanDocOn is vlanDoc on another subnet.
func vlanDocOn(subnet, mode string) string {
	plan := "mode: cluster"
	if mode == "chunks" {
		plan = "mode: chunks\n    chunkPrefix: 28"
	}
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: %s
spec:
  trunk: %s
  subnet: %s
  gateway: %s
  rangePlan:
    %s
    quarantine: 15s
`, bed.VLANName, lab.TrunkInterface, subnet, gateway, plan)
}

// serviceDoc is a service of the test image on the VLAN, constrained to
// one host when onHost is set, registered in Consul when consul is.
func serviceDoc(name string, replicas int, onHost string, consul bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: swarmvlan/v1
kind: Service
metadata:
  name: %s
spec:
  image: %s
  args: ["-listen", ":8080"]
  networks: [%s]
  replicas: %d
  restart: {condition: any, delay: 1s}
`, name, lab.ImageTestApp, bed.VLANName, replicas)
	if onHost != "" {
		fmt.Fprintf(&b, "  placement: {constraints: [\"node.hostname==%s\"]}\n", onHost)
	}
	if consul {
		b.WriteString("  consul:\n    port: 8080\n    check: {http: /health, interval: 1s, timeout: 1s, deregisterAfter: 1m}\n")
	}
	return b.String()
}

func newBed(t *testing.T) *bed.Bed {
	b := bed.NewCluster(t, lab.ClusterOptions{Hosts: 3, Managers: 3, ConsulServers: 3, MountNamespace: true})
	for _, h := range b.Cluster.Hosts() {
		b.StartReconciler(h)
	}
	return b
}

// leases reads the VLAN's leases from Consul, consistently: right after
// the servers restart, a default read may come from a leader whose state
// has not caught up with its log yet.
func leases(ctx context.Context, b *bed.Bed) (map[netip.Addr]state.Lease, error) {
	prefix := bed.KVPrefix + "state/leases/" + bed.VLANName + "/"
	pairs, _, err := b.Consul(b.H1).KV().List(prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	out := map[netip.Addr]state.Lease{}
	for _, p := range pairs {
		a, err := netip.ParseAddr(strings.TrimPrefix(p.Key, prefix))
		if err != nil {
			return nil, fmt.Errorf("lease key %q", p.Key)
		}
		var l state.Lease
		if err := json.Unmarshal(p.Value, &l); err != nil {
			return nil, fmt.Errorf("lease %s: %w", a, err)
		}
		out[a] = l
	}
	return out, nil
}

// checkCluster checks a service in mode cluster: replicas tasks running
// in Docker, every address distinct, inside the /26, neither the gateway
// nor a host's shim address, each held in Consul by a lease of its own
// host's node, and (with consul) each passing in Consul's catalog.
func checkCluster(ctx context.Context, b *bed.Bed, service string, replicas int, consul bool) ([]bed.Task, error) {
	return checkClusterOn(ctx, b, subnet, service, replicas, consul)
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(a)
}

// checkClusterOn is checkCluster for a VLAN on poolSubnet.
func checkClusterOn(ctx context.Context, b *bed.Bed, poolSubnet, service string, replicas int, consul bool) ([]bed.Task, error) {
	tasks, err := b.Running(ctx, service)
	if err != nil {
		return nil, err
	}
	if len(tasks) != replicas {
		return tasks, fmt.Errorf("%s: %d task containers running, want %d", service, len(tasks), replicas)
	}
	ls, err := leases(ctx, b)
	if err != nil {
		return tasks, err
	}
	nodeOf := map[string]string{}
	for _, h := range b.Cluster.Hosts() {
		nodeOf[h.Name] = h.ID
	}
	shims := map[netip.Addr]string{}
	for a, l := range ls {
		if l.Kind == state.LeaseShim && l.Released == nil {
			shims[a] = l.Hostname
		}
	}
	pool := netip.MustParsePrefix(poolSubnet)
	seen := map[netip.Addr]string{}
	for _, t := range tasks {
		switch l, ok := ls[t.Addr]; {
		case !t.Addr.IsValid():
			return tasks, fmt.Errorf("task %s on %s: no address", t.TaskID, t.Host)
		case !pool.Contains(t.Addr) || t.Addr == pool.Addr() || t.Addr == lastAddr(pool):
			return tasks, fmt.Errorf("task %s on %s: %s outside the pool", t.TaskID, t.Host, t.Addr)
		case t.Addr == netip.MustParseAddr(gateway):
			return tasks, fmt.Errorf("task %s on %s: the gateway %s", t.TaskID, t.Host, t.Addr)
		case shims[t.Addr] != "":
			return tasks, fmt.Errorf("task %s on %s: %s is %s's shim address", t.TaskID, t.Host, t.Addr, shims[t.Addr])
		case seen[t.Addr] != "":
			return tasks, fmt.Errorf("address %s held by tasks %s and %s", t.Addr, seen[t.Addr], t.TaskID)
		case !ok || l.Released != nil || l.Kind != state.LeaseTask:
			return tasks, fmt.Errorf("task %s on %s: %s has no lease in force in Consul (%+v)", t.TaskID, t.Host, t.Addr, l)
		case l.Node != nodeOf[t.Host]:
			return tasks, fmt.Errorf("task %s on %s: %s leased to node %s (%s), not to %s", t.TaskID, t.Host, t.Addr, l.Node, l.Hostname, nodeOf[t.Host])
		}
		seen[t.Addr] = t.TaskID
	}
	if consul {
		pass, err := b.Passing(ctx, b.H1, service)
		if err != nil {
			return tasks, err
		}
		for a := range seen {
			if !pass[a] {
				return tasks, fmt.Errorf("%s: %s not passing in Consul", service, a)
			}
		}
		if len(pass) != len(seen) {
			return tasks, fmt.Errorf("%s: %d passing in Consul, %d tasks", service, len(pass), len(seen))
		}
	}
	return tasks, nil
}

// swarmTasks counts the service's tasks Swarm wants running, those
// running, and the distinct errors of those that are not.
func swarmTasks(ctx context.Context, b *bed.Bed, service string) (desired, running int, errs []string, err error) {
	ts, err := b.Mgr.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", service))})
	if err != nil {
		return 0, 0, nil, err
	}
	seen := map[string]bool{}
	for _, t := range ts {
		if t.DesiredState == swarm.TaskStateRunning {
			desired++
			if t.Status.State == swarm.TaskStateRunning {
				running++
			}
		}
		if t.Status.Err != "" && !seen[t.Status.Err] {
			seen[t.Status.Err] = true
			errs = append(errs, t.Status.Err)
		}
	}
	return desired, running, errs, nil
}

// deleteService deletes a service document and waits until its tasks are
// gone from every host.
func deleteService(b *bed.Bed, name string) {
	b.ReconcilerCmd("delete", "service", name)
	b.WaitFor(name+" gone", 3*time.Minute, func(ctx context.Context) error {
		if err := b.ServiceAbsent(ctx, name); err != nil {
			return err
		}
		tasks, err := b.Running(ctx, name)
		if err != nil {
			return err
		}
		if len(tasks) > 0 {
			return fmt.Errorf("%d containers still running", len(tasks))
		}
		return nil
	})
}

// TestClusterMode: on one /26, mode chunks cannot place 30 tasks on one
// host (its /28 holds 13), mode cluster can; then 45 tasks over the three
// hosts, each with an address of its own leased in Consul and registered.
func TestClusterMode(t *testing.T) {
	b := newBed(t)
	h2 := b.Cluster.Host(2)

	t.Run("chunks/30-on-one-host", func(t *testing.T) {
		s := b.For(t)
		s.Apply(vlanDoc("chunks"), serviceDoc("one", 30, h2.Name, false))
		// Wait until Swarm has tried to start more than the /28 holds and
		// reports the address pool's exhaustion.
		var running int
		var errs []string
		s.WaitFor("chunk exhausted on "+h2.Name, 4*time.Minute, func(ctx context.Context) error {
			var err error
			_, running, errs, err = swarmTasks(ctx, s, "one")
			if err != nil {
				return err
			}
			// A /28 holds 13 tasks (less the gateway or shim); wait until
			// the chunk is full and the rest are refused.
			for _, e := range errs {
				if strings.Contains(e, "no available IPv4 addresses") && running >= 12 {
					return nil
				}
			}
			return fmt.Errorf("%d running, errors %q", running, errs)
		})
		tasks, err := s.Running(s.Ctx, "one")
		if err != nil {
			t.Fatal(err)
		}
		if len(tasks) >= 30 {
			t.Fatalf("mode chunks placed %d tasks on %s's /28", len(tasks), h2.Name)
		}
		t.Logf("mode chunks: %d of 30 tasks running on %s; the others fail with %q", len(tasks), h2.Name, errs)
		lab.Figure(t, "ipam chunks_one_host_running", fmt.Sprintf("%d of 30 (a /28 per host)", len(tasks)))
		deleteService(s, "one")
	})

	t.Run("cluster/30-on-one-host", func(t *testing.T) {
		s := b.For(t)
		s.Apply(vlanDoc("cluster"))
		// The switch is accepted once no task uses the VLAN: every host's
		// config network moves to the plugin, the chunks are released.
		s.WaitFor("chunks released", 2*time.Minute, func(ctx context.Context) error {
			pairs, _, err := s.Consul(s.H1).KV().List(bed.KVPrefix+"state/allocations/"+bed.VLANName+"/", (&api.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return err
			}
			if len(pairs) > 0 {
				return fmt.Errorf("%d chunk allocations left", len(pairs))
			}
			return nil
		})
		s.Apply(vlanDoc("cluster"), serviceDoc("one", 30, h2.Name, false))
		var tasks []bed.Task
		took := s.WaitFor("30 tasks on "+h2.Name, 5*time.Minute, func(ctx context.Context) error {
			var err error
			tasks, err = checkCluster(ctx, s, "one", 30, false)
			return err
		})
		for _, tk := range tasks {
			if tk.Host != h2.Name {
				t.Fatalf("task %s on %s, constrained to %s", tk.TaskID, tk.Host, h2.Name)
			}
		}
		t.Logf("mode cluster: 30 of 30 tasks running on %s after %s", h2.Name, took.Round(time.Second))
		lab.Figure(t, "ipam cluster_one_host_running", fmt.Sprintf("30 of 30 in %s", took.Round(time.Second)))
		deleteService(s, "one")
	})

	t.Run("cluster/45-over-3-hosts", func(t *testing.T) {
		s := b.For(t)
		// The 30 addresses released above are in quarantine (15 s): 28 of
		// the 58 are free at once, the rest as it ends.
		s.Apply(vlanDoc("cluster"), serviceDoc("web", 45, "", true))
		var tasks []bed.Task
		took := s.WaitFor("45 tasks", 6*time.Minute, func(ctx context.Context) error {
			var err error
			tasks, err = checkCluster(ctx, s, "web", 45, true)
			return err
		})
		per := map[string]int{}
		for _, tk := range tasks {
			per[tk.Host]++
		}
		for _, h := range s.Cluster.Hosts() {
			if per[h.Name] == 0 {
				t.Errorf("no task on %s: %v", h.Name, per)
			}
		}
		t.Logf("45 tasks over the hosts %v, converged in %s", per, took.Round(time.Second))
		deleteService(s, "web")
	})

	t.Run("cluster/sticky", func(t *testing.T) { checkSticky(t, b.For(t)) })
	t.Run("figures", func(t *testing.T) { checkFigures(t, b.For(t)) })
}
