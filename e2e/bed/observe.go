package bed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/errdefs"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// Task is one running task container as its host's engine reports it.
type Task struct {
	Host      string
	TaskID    string
	Container string
	Addr      netip.Addr
}

// Running lists the running task containers of service on every host that
// is up, with their address on the VLAN.
func (b *Bed) Running(ctx context.Context, service string) ([]Task, error) {
	var out []Task
	for _, h := range b.Up() {
		ctrs, err := b.Docker(h).ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
			filters.Arg("label", "com.docker.swarm.service.name="+service),
			filters.Arg("status", "running"),
		)})
		if err != nil {
			return nil, fmt.Errorf("%s: list containers: %w", h.Name, err)
		}
		for _, c := range ctrs {
			t := Task{Host: h.Name, TaskID: c.Labels["com.docker.swarm.task.id"], Container: c.ID}
			if c.NetworkSettings != nil {
				if ep := c.NetworkSettings.Networks[SwarmNetwork]; ep != nil {
					t.Addr, _ = netip.ParseAddr(ep.IPAddress)
				}
			}
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Container < out[j].Container })
	return out, nil
}

// Chunk returns h's chunk as its config network holds it. Engine 29
// reports a config-only network's IPAM as null although it is in force;
// there the chunk is the ip-range of the network's spec.LabelIPAM, and
// Converged's check that every task's address lies in its host's chunk
// is what shows the Engine applies it.
func (b *Bed) Chunk(ctx context.Context, h *lab.Host) (netip.Prefix, error) {
	n, err := b.Docker(h).NetworkInspect(ctx, ConfigNetwork, network.InspectOptions{})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: %w", h.Name, err)
	}
	if !n.ConfigOnly || len(n.IPAM.Config) > 1 {
		return netip.Prefix{}, fmt.Errorf("%s: %s: config-only %v, %d IPAM configs", h.Name, ConfigNetwork, n.ConfigOnly, len(n.IPAM.Config))
	}
	ipRange, from := "", "IPAM"
	if len(n.IPAM.Config) == 1 {
		ipRange = n.IPAM.Config[0].IPRange
	} else {
		from = "label " + spec.LabelIPAM + "=" + n.Labels[spec.LabelIPAM]
		for _, part := range strings.Split(n.Labels[spec.LabelIPAM], ",") {
			if v, ok := strings.CutPrefix(part, "ip-range="); ok {
				ipRange = v
			}
		}
	}
	p, err := netip.ParsePrefix(ipRange)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: %s: ip range %q (from %s): %w", h.Name, ConfigNetwork, ipRange, from, err)
	}
	return p, nil
}

// Chunks returns the chunk of every host that is up.
func (b *Bed) Chunks(ctx context.Context) (map[string]netip.Prefix, error) {
	out := map[string]netip.Prefix{}
	for _, h := range b.Up() {
		p, err := b.Chunk(ctx, h)
		if err != nil {
			return nil, err
		}
		out[h.Name] = p
	}
	return out, nil
}

// Passing returns the addresses Consul reports passing for service, asking
// h's agent.
func (b *Bed) Passing(ctx context.Context, h *lab.Host, service string) (map[netip.Addr]bool, error) {
	entries, _, err := b.Consul(h).Health().Service(service, "", true, (&api.QueryOptions{}).WithContext(ctx))
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

// Want describes the converged state of one service.
type Want struct {
	Service    string
	Replicas   int
	MaxPerNode int
	// Consul asks for every task's address to pass in Consul, and nothing
	// else to.
	Consul bool
}

// Converged checks one service's end state: Swarm runs exactly w.Replicas
// tasks, every host that is up runs its share with an address from its own
// chunk, no address twice, at most w.MaxPerNode per host, and (with
// w.Consul) exactly those addresses pass in Consul.
func (b *Bed) Converged(ctx context.Context, w Want) ([]Task, error) {
	tasks, err := b.Running(ctx, w.Service)
	if err != nil {
		return nil, err
	}
	if len(tasks) != w.Replicas {
		return tasks, fmt.Errorf("%s: %d task containers running, want %d: %v", w.Service, len(tasks), w.Replicas, tasks)
	}
	chunks, err := b.Chunks(ctx)
	if err != nil {
		return tasks, err
	}
	perHost := map[string]int{}
	seen := map[netip.Addr]string{}
	for _, t := range tasks {
		perHost[t.Host]++
		if !t.Addr.IsValid() {
			return tasks, fmt.Errorf("%s: task %s on %s has no address on %s", w.Service, t.TaskID, t.Host, SwarmNetwork)
		}
		if !chunks[t.Host].Contains(t.Addr) {
			return tasks, fmt.Errorf("%s: task %s on %s has %s, outside its host's chunk %s", w.Service, t.TaskID, t.Host, t.Addr, chunks[t.Host])
		}
		if other, dup := seen[t.Addr]; dup {
			return tasks, fmt.Errorf("%s: address %s held by tasks %s and %s", w.Service, t.Addr, other, t.TaskID)
		}
		seen[t.Addr] = t.TaskID
	}
	if w.MaxPerNode > 0 {
		for h, n := range perHost {
			if n > w.MaxPerNode {
				return tasks, fmt.Errorf("%s: %d tasks on %s, max %d per node", w.Service, n, h, w.MaxPerNode)
			}
		}
	}
	swarmTasks, err := b.Mgr.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(
		filters.Arg("service", w.Service), filters.Arg("desired-state", "running"))})
	if err != nil {
		return tasks, err
	}
	runningInSwarm := 0
	for _, st := range swarmTasks {
		if st.Status.State == swarm.TaskStateRunning {
			runningInSwarm++
		}
	}
	if runningInSwarm != w.Replicas || len(swarmTasks) != w.Replicas {
		return tasks, fmt.Errorf("%s: swarm has %d tasks desired running, %d running, want %d", w.Service, len(swarmTasks), runningInSwarm, w.Replicas)
	}
	if w.Consul {
		pass, err := b.Passing(ctx, b.H1, w.Service)
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
			return tasks, fmt.Errorf("%s: consul: not passing %v, passing but no such task %v", w.Service, missing, extra)
		}
	}
	return tasks, nil
}

// WaitConverged waits for Converged and returns the tasks and how long it
// took.
func (b *Bed) WaitConverged(w Want, timeout time.Duration) ([]Task, time.Duration) {
	b.t.Helper()
	var tasks []Task
	took := b.WaitFor(w.Service+" converged", timeout, func(ctx context.Context) error {
		var err error
		tasks, err = b.Converged(ctx, w)
		return err
	})
	return tasks, took
}

// Status reads status/<section>/<name>; ok is false when there is none.
func (b *Bed) Status(ctx context.Context, section, name string) (st state.Status, ok bool, err error) {
	p, _, err := b.Consul(b.H1).KV().Get(KVPrefix+"status/"+section+"/"+name, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil || p == nil {
		return st, false, err
	}
	if err := json.Unmarshal(p.Value, &st); err != nil {
		return st, true, fmt.Errorf("status/%s/%s: %w", section, name, err)
	}
	return st, true, nil
}

// Condition returns the condition of type typ, if the status has one.
func Condition(st state.Status, typ string) (state.Condition, bool) {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return state.Condition{}, false
}

// ManagedServices lists the services carrying the managed label, by name,
// as the manager h1 sees them.
func (b *Bed) ManagedServices(ctx context.Context) (map[string][]swarm.Service, error) {
	svcs, err := b.Mgr.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(
		filters.Arg("label", spec.LabelManaged+"=true"))})
	if err != nil {
		return nil, err
	}
	out := map[string][]swarm.Service{}
	for _, s := range svcs {
		out[s.Spec.Name] = append(out[s.Spec.Name], s)
	}
	return out, nil
}

// ServiceAbsent checks that no Docker service named name exists.
func (b *Bed) ServiceAbsent(ctx context.Context, name string) error {
	svcs, err := b.ManagedServices(ctx)
	if err != nil {
		return err
	}
	if len(svcs[name]) > 0 {
		return fmt.Errorf("service %s still exists", name)
	}
	return nil
}

// HostNet is the kernel state the host role keeps for the VLAN on a host.
type HostNet struct {
	Promisc  bool
	Shim     bool
	ShimAddr netip.Addr
	Route    bool
}

// Kernel reads trunk0's flags, the shim, its address and the route to the
// host's chunk inside h.
func (b *Bed) Kernel(ctx context.Context, h *lab.Host, chunk netip.Prefix) (HostNet, error) {
	var n HostNet
	out, err := h.Exec(ctx, "ip", "-o", "link", "show", "dev", lab.TrunkInterface).Output()
	if err != nil {
		return n, fmt.Errorf("%s: ip link show %s: %w", h.Name, lab.TrunkInterface, err)
	}
	n.Promisc = strings.Contains(string(out), "PROMISC")
	out, err = h.Exec(ctx, "ip", "-o", "-4", "addr", "show", "dev", ShimLink).Output()
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
		n.Route = strings.Contains(string(out), "dev "+ShimLink)
	}
	return n, nil
}

// HostNetReady checks the kernel state of every host that is up: trunk0
// promiscuous, the shim holding the last address of the host's chunk, the
// chunk routed through it.
func (b *Bed) HostNetReady(ctx context.Context) error {
	chunks, err := b.Chunks(ctx)
	if err != nil {
		return err
	}
	subnet := netip.MustParsePrefix(VLANSubnet)
	for _, h := range b.Up() {
		n, err := b.Kernel(ctx, h, chunks[h.Name])
		if err != nil {
			return err
		}
		wantShim := spec.ShimAddress(subnet, chunks[h.Name])
		switch {
		case !n.Promisc:
			return fmt.Errorf("%s: %s not promiscuous", h.Name, lab.TrunkInterface)
		case !n.Shim:
			return fmt.Errorf("%s: no shim %s", h.Name, ShimLink)
		case n.ShimAddr != wantShim:
			return fmt.Errorf("%s: shim address %v, want %s", h.Name, n.ShimAddr, wantShim)
		case !n.Route:
			return fmt.Errorf("%s: no route to %s through %s", h.Name, chunks[h.Name], ShimLink)
		}
	}
	return nil
}

// World is what must not change while a fault lasts: the managed services,
// the networks on every host, the shims, the running task containers.
type World struct {
	Services   map[string]string // name -> service ID
	Networks   map[string]string // host/network -> network ID
	Shims      map[string]bool   // host -> shim present
	Containers []string          // running task containers, host/ID
}

// World reads the world as it is now, with the running task containers of
// services.
func (b *Bed) World(ctx context.Context, services ...string) (World, error) {
	w := World{Services: map[string]string{}, Networks: map[string]string{}, Shims: map[string]bool{}}
	svcs, err := b.ManagedServices(ctx)
	if err != nil {
		return w, err
	}
	for n, s := range svcs {
		w.Services[n] = s[0].ID
	}
	for _, h := range b.Up() {
		for _, name := range []string{ConfigNetwork, SwarmNetwork} {
			n, err := b.Docker(h).NetworkInspect(ctx, name, network.InspectOptions{})
			switch {
			case err == nil:
				w.Networks[h.Name+"/"+name] = n.ID
			case errdefs.IsNotFound(err):
				// Absent: Same says so when it was there. (A worker
				// knows a swarm network only while it runs a task on
				// it.)
			default:
				return w, fmt.Errorf("%s: network %s: %w", h.Name, name, err)
			}
		}
		err := h.Exec(ctx, "ip", "link", "show", "dev", ShimLink).Run()
		w.Shims[h.Name] = err == nil
	}
	for _, s := range services {
		tasks, err := b.Running(ctx, s)
		if err != nil {
			return w, err
		}
		for _, tk := range tasks {
			w.Containers = append(w.Containers, tk.Host+"/"+tk.Container[:12])
		}
	}
	sort.Strings(w.Containers)
	return w, nil
}

// Same reports how now differs from was, or nil.
func (was World) Same(now World) error {
	var diffs []string
	if !slices.Equal(was.Containers, now.Containers) {
		diffs = append(diffs, fmt.Sprintf("running task containers: %v -> %v", was.Containers, now.Containers))
	}
	for k, v := range was.Services {
		if now.Services[k] != v {
			diffs = append(diffs, fmt.Sprintf("service %s: %s -> %q", k, v, now.Services[k]))
		}
	}
	for k, v := range was.Networks {
		if now.Networks[k] != v {
			diffs = append(diffs, fmt.Sprintf("network %s: %s -> %q", k, v, now.Networks[k]))
		}
	}
	for k, v := range was.Shims {
		if now.Shims[k] != v {
			diffs = append(diffs, fmt.Sprintf("shim on %s: %v -> %v", k, v, now.Shims[k]))
		}
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

// Leader returns the manager whose reconciler leads: the holder named in
// the leader key, whose log's last leadership line is "leading".
func (b *Bed) Leader(ctx context.Context) (*lab.Host, error) {
	p, _, err := b.Consul(b.H1).KV().Get(KVPrefix+"leader", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	if p == nil || p.Session == "" {
		return nil, errors.New("leader key not held")
	}
	var leading []*lab.Host
	for _, h := range b.Cluster.Managers() {
		proc := b.Proc(h)
		if proc == nil || !proc.Running() {
			continue
		}
		log := proc.Logs()
		lead := LogLines(log, "leading")
		lost := LogLines(log, "leadership lost")
		if len(lead) > 0 && (len(lost) == 0 || strings.Index(log, lost[len(lost)-1]) < strings.Index(log, lead[len(lead)-1])) {
			leading = append(leading, h)
		}
	}
	if len(leading) != 1 {
		return nil, fmt.Errorf("%d reconcilers say they lead", len(leading))
	}
	if string(p.Value) != leading[0].Name {
		return nil, fmt.Errorf("leader key names %q, the logs %s", p.Value, leading[0].Name)
	}
	return leading[0], nil
}
