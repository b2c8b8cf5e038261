package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/errdefs"
	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// Liveness bounds of an entry that passes in Consul with no running task
// at its address: the check's interval and timeout and the catalog's
// propagation, with a margin for a poll; for a host whose dockerd was
// killed (or that crashed) within the longer bound, one check interval
// plus deregisterAfter, with the same margin. A snapshot restore puts back
// the catalog of its time, entries of tasks ended since then included,
// passing; only their agent's anti-entropy removes them (a full sync every
// ae_interval, 1m, plus a random stagger of up to as much), so within two
// intervals and a check interval of the restore, with the same margin.
const (
	staleBound        = 20 * time.Second
	staleBoundDockerd = checkInterval + deregisterAfter + 10*time.Second
	aeInterval        = time.Minute
	staleBoundRestore = 2*aeInterval + checkInterval + 10*time.Second
	// convergeBound is how long everything may take to converge after the
	// last fault of a settle healed.
	convergeBound = 4 * time.Minute
)

// task is one running task container on a VLAN.
type task struct {
	host, service, taskID, container, vlan string
	addr                                   netip.Addr
}

func (t task) String() string {
	return fmt.Sprintf("%s/%s task %.10s ctr %.10s %s=%s", t.host, t.service, t.taskID, t.container, t.vlan, t.addr)
}

// entry is one passing Consul entry of a managed service.
type entry struct {
	id, service, node, task string
	addr                    netip.Addr
}

// obs is one reading of the whole cluster.
type obs struct {
	at       time.Time
	tasks    []task
	unread   map[string]bool         // hosts whose Engine was not read
	chunks   map[string]netip.Prefix // host -> chunk of chunksVLAN's config network
	config   map[string]string       // host/network -> ID of the VLANs' config networks
	services map[string]swarmService // managed services by name
	swarmOK  bool

	consulOK bool
	allocs   map[string]state.Allocation // node ID -> allocation of chunksVLAN
	leases   map[netip.Addr]state.Lease
	scale    map[string]state.ScaleIntent
	passing  []entry
	statuses map[string]state.Status // section/name -> status
	foreign  foreign
	errs     []string
}

type swarmService struct {
	id       string
	replicas int
	// update is the rolling update's state ("" without one); tasks are
	// Swarm's tasks of the service as `docker service ps` shows them,
	// for the report of a violation.
	update string
	tasks  []string
}

// observe reads every Engine that is up, the swarm through a manager and
// Consul through an agent; what cannot be read is left out and said in
// errs.
func (r *run) observe(ctx context.Context) *obs {
	o := &obs{at: time.Now(), unread: map[string]bool{}, chunks: map[string]netip.Prefix{}, config: map[string]string{},
		services: map[string]swarmService{}}
	for _, h := range r.b.Cluster.Hosts() {
		if !r.dockerUp(h) {
			o.unread[h.Name] = true
			continue
		}
		d := r.b.Docker(h)
		ctrs, err := d.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
			filters.Arg("label", spec.LabelManaged+"=true"), filters.Arg("status", "running"))})
		if err != nil {
			o.unread[h.Name] = true
			o.errs = append(o.errs, fmt.Sprintf("%s: containers: %v", h.Name, err))
			continue
		}
		for _, c := range ctrs {
			if c.NetworkSettings == nil {
				continue
			}
			for _, v := range []string{chunksVLAN, poolVLAN} {
				ep := c.NetworkSettings.Networks[v]
				if ep == nil {
					continue
				}
				a, _ := netip.ParseAddr(ep.IPAddress)
				o.tasks = append(o.tasks, task{host: h.Name, service: c.Labels["com.docker.swarm.service.name"],
					taskID: c.Labels["com.docker.swarm.task.id"], container: c.ID, vlan: v, addr: a})
			}
		}
		for _, v := range []string{chunksVLAN, poolVLAN} {
			n, err := d.NetworkInspect(ctx, v+"-config", network.InspectOptions{})
			switch {
			case err == nil:
				o.config[h.Name+"/"+n.Name] = n.ID
				if v == chunksVLAN && len(n.IPAM.Config) == 1 {
					if p, err := netip.ParsePrefix(n.IPAM.Config[0].IPRange); err == nil {
						o.chunks[h.Name] = p
					}
				}
			case errdefs.IsNotFound(err):
			default:
				o.unread[h.Name] = true
				o.errs = append(o.errs, fmt.Sprintf("%s: network %s-config: %v", h.Name, v, err))
			}
		}
	}
	mgr := &managerClient{r: r}
	if d, err := mgr.get(ctx); err == nil {
		svcs, err := d.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("label", spec.LabelManaged+"=true"))})
		if err == nil {
			o.swarmOK = true
			for _, s := range svcs {
				n := 0
				if s.Spec.Mode.Replicated != nil && s.Spec.Mode.Replicated.Replicas != nil {
					n = int(*s.Spec.Mode.Replicated.Replicas)
				}
				sv := swarmService{id: s.ID, replicas: n}
				if s.UpdateStatus != nil {
					sv.update = string(s.UpdateStatus.State)
				}
				if ts, err := d.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", s.ID))}); err == nil {
					for _, t := range ts {
						if t.DesiredState == swarm.TaskStateRunning || t.Status.State == swarm.TaskStateRunning {
							sv.tasks = append(sv.tasks, fmt.Sprintf("%.10s slot %d node %.10s desired %s state %s", t.ID, t.Slot, t.NodeID, t.DesiredState, t.Status.State))
						}
					}
					slices.Sort(sv.tasks)
				}
				o.services[s.Spec.Name] = sv
			}
		} else {
			o.errs = append(o.errs, "swarm: "+err.Error())
		}
	} else {
		o.errs = append(o.errs, "swarm: "+err.Error())
	}
	c, _ := r.consul()
	if c == nil {
		o.errs = append(o.errs, "consul: no agent up")
		return o
	}
	if err := o.readConsul(ctx, c); err != nil {
		o.errs = append(o.errs, "consul: "+err.Error())
		o.consulOK = false
	}
	if o.swarmOK {
		f, err := readForeign(ctx, r.b, mgr, c.KV())
		if err != nil {
			o.errs = append(o.errs, "foreign: "+err.Error())
		}
		o.foreign = f
	}
	return o
}

func (o *obs) readConsul(ctx context.Context, c *api.Client) error {
	q := (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
	o.allocs = map[string]state.Allocation{}
	pairs, _, err := c.KV().List(bed.KVPrefix+"state/allocations/"+chunksVLAN+"/", q)
	if err != nil {
		return err
	}
	for _, p := range pairs {
		var al state.Allocation
		if err := json.Unmarshal(p.Value, &al); err != nil {
			return fmt.Errorf("%s: %w", p.Key, err)
		}
		o.allocs[p.Key[strings.LastIndex(p.Key, "/")+1:]] = al
	}
	o.leases = map[netip.Addr]state.Lease{}
	prefix := bed.KVPrefix + "state/leases/" + poolVLAN + "/"
	if pairs, _, err = c.KV().List(prefix, q); err != nil {
		return err
	}
	for _, p := range pairs {
		a, err := netip.ParseAddr(strings.TrimPrefix(p.Key, prefix))
		if err != nil {
			return fmt.Errorf("lease key %q", p.Key)
		}
		var l state.Lease
		if err := json.Unmarshal(p.Value, &l); err != nil {
			return fmt.Errorf("%s: %w", p.Key, err)
		}
		o.leases[a] = l
	}
	o.scale = map[string]state.ScaleIntent{}
	if pairs, _, err = c.KV().List(bed.KVPrefix+"state/scale/", q); err != nil {
		return err
	}
	for _, p := range pairs {
		var si state.ScaleIntent
		if err := json.Unmarshal(p.Value, &si); err != nil {
			return fmt.Errorf("%s: %w", p.Key, err)
		}
		o.scale[p.Key[strings.LastIndex(p.Key, "/")+1:]] = si
	}
	o.statuses = map[string]state.Status{}
	if pairs, _, err = c.KV().List(bed.KVPrefix+"status/", q); err != nil {
		return err
	}
	for _, p := range pairs {
		var st state.Status
		if err := json.Unmarshal(p.Value, &st); err != nil {
			continue // not a status document
		}
		o.statuses[strings.TrimPrefix(p.Key, bed.KVPrefix+"status/")] = st
	}
	for _, s := range workload {
		es, _, err := c.Health().Service(s.name, "", true, q)
		if err != nil {
			return err
		}
		for _, e := range es {
			a, _ := netip.ParseAddr(e.Service.Address)
			o.passing = append(o.passing, entry{id: e.Service.ID, service: s.name, node: e.Node.Node, task: e.Service.Meta[state.MetaTask], addr: a})
		}
	}
	o.consulOK = true
	return nil
}

// checker holds what the checks remember from one poll to the next.
type checker struct {
	r  *run
	mu sync.Mutex
	// suspect are the racy findings of the last poll (Docker and Consul
	// are read one after the other): a finding is a violation when the
	// next poll finds it again.
	suspect map[string]string
	// stale is when each passing entry was first seen with no running task
	// at its address.
	stale map[string]time.Time
	// frozen is what was there when Consul became unreadable for a host
	// (host -> config network -> ID), or for every host ("" -> services).
	frozen         map[string]map[string]string
	frozenServices map[string]string
	foreign        foreign
}

func newChecker(r *run, f foreign) *checker {
	return &checker{r: r, suspect: map[string]string{}, stale: map[string]time.Time{}, frozen: map[string]map[string]string{}, foreign: f}
}

// check applies every rule to o.
func (c *checker) check(o *obs) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.r
	found := map[string]string{}
	// No two running tasks hold one address.
	byAddr := map[netip.Addr]task{}
	for _, t := range o.tasks {
		if !t.addr.IsValid() {
			continue
		}
		if u, dup := byAddr[t.addr]; dup && u.container != t.container {
			found["dup "+t.addr.String()+" "+u.container+" "+t.container] = fmt.Sprintf("address %s held by %v and %v", t.addr, u, t)
		}
		byAddr[t.addr] = t
	}
	// Mode chunks: every task inside its host's chunk; no two hosts' chunks
	// overlap, in Docker or in Consul.
	for _, t := range o.tasks {
		if t.vlan != chunksVLAN || !t.addr.IsValid() {
			continue
		}
		ch, ok := o.chunks[t.host]
		if !ok || !ch.Contains(t.addr) {
			found["chunk "+t.container] = fmt.Sprintf("%v outside its host's chunk %v (config network present %v)", t, ch, ok)
		}
	}
	hosts := slices.Sorted(maps.Keys(o.chunks))
	for i, a := range hosts {
		for _, b := range hosts[i+1:] {
			if o.chunks[a].Overlaps(o.chunks[b]) {
				found["chunks "+a+" "+b] = fmt.Sprintf("config networks of %s (%s) and %s (%s) overlap", a, o.chunks[a], b, o.chunks[b])
			}
		}
	}
	if o.consulOK {
		nodes := slices.Sorted(maps.Keys(o.allocs))
		for i, a := range nodes {
			pa, err := netip.ParsePrefix(o.allocs[a].Chunk)
			if err != nil {
				found["alloc "+a] = fmt.Sprintf("allocation of %s: %+v", a, o.allocs[a])
				continue
			}
			for _, b := range nodes[i+1:] {
				if pb, err := netip.ParsePrefix(o.allocs[b].Chunk); err == nil && pa.Overlaps(pb) {
					found["allocs "+a+" "+b] = fmt.Sprintf("allocations overlap: %+v and %+v", o.allocs[a], o.allocs[b])
				}
			}
		}
		// A chunk in use on a host (its config network) is never
		// allocated, even in part, to a node that host never was.
		for h, ch := range o.chunks {
			for node, al := range o.allocs {
				p, err := netip.ParsePrefix(al.Chunk)
				if err == nil && p.Overlaps(ch) && !r.wasNode(h, node) {
					found["taken "+h+" "+node] = fmt.Sprintf("%s holds chunk %s in Docker, allocated in Consul to node %s: %+v", h, ch, node, al)
				}
			}
		}
		// Mode cluster: every task's address in the pool and leased, in
		// force, to its own node.
		for _, t := range o.tasks {
			if t.vlan != poolVLAN {
				continue
			}
			l, ok := o.leases[t.addr]
			switch {
			case !poolAddrOK(t.addr):
				found["pool "+t.container] = fmt.Sprintf("%v outside the pool %s", t, poolSubnet)
			case !ok || l.Released != nil || l.Kind != state.LeaseTask || !r.wasNode(t.host, l.Node):
				found["lease "+t.container+" "+t.addr.String()] = fmt.Sprintf("%v: lease %+v (present %v), want one in force of the host's node", t, l, ok)
			}
		}
		for s, si := range o.scale {
			if m, ok := managedByName(s); ok && (si.Replicas < m.min || si.Replicas > m.max) {
				found["intent "+s] = fmt.Sprintf("scale intent of %s: %d replicas, bounds %d..%d", s, si.Replicas, m.min, m.max)
			}
		}
		for k, idx := range o.foreign.keys {
			if want := c.foreign.keys[k]; idx != want {
				found["foreign key "+k] = fmt.Sprintf("foreign key %s: index %d, was %d", k, idx, want)
			}
		}
	}
	// Replicas in force within the bounds.
	for name, s := range o.services {
		if m, ok := managedByName(name); ok && (s.replicas < m.min || s.replicas > m.max) {
			found["replicas "+name] = fmt.Sprintf("service %s runs with %d replicas, bounds %d..%d", name, s.replicas, m.min, m.max)
		}
	}
	// Foreign objects untouched.
	if o.swarmOK {
		f := o.foreign
		if f.serviceID != c.foreign.serviceID || f.serviceSpec != c.foreign.serviceSpec || f.overlayID != c.foreign.overlayID {
			found["foreign swarm"] = fmt.Sprintf("foreign swarm objects: %+v, were %+v", f, c.foreign)
		}
		if f.configID != "" && f.configID != c.foreign.configID {
			found["foreign config"] = fmt.Sprintf("foreign config network on %s: %s, was %s", f.configHost, f.configID, c.foreign.configID)
		}
	}
	// Nothing removed while Consul was unreadable.
	for h, nets := range c.frozen {
		if o.unread[h] {
			continue
		}
		for n, id := range nets {
			if o.config[h+"/"+n] != id {
				found["removed "+h+"/"+n] = fmt.Sprintf("%s: network %s was %s when Consul became unreadable there, now %q", h, n, id, o.config[h+"/"+n])
			}
		}
	}
	if c.frozenServices != nil && o.swarmOK {
		for n, id := range c.frozenServices {
			if o.services[n].id != id {
				found["removed service "+n] = fmt.Sprintf("service %s was %s when Consul became unreadable, now %q", n, id, o.services[n].id)
			}
		}
	}
	var rules, states []string
	for _, k := range slices.Sorted(maps.Keys(found)) {
		if _, again := c.suspect[k]; again {
			if rule := "safety: " + strings.Fields(k)[0]; !slices.Contains(rules, rule) {
				rules = append(rules, rule)
			}
			states = append(states, found[k])
		}
	}
	c.suspect = found
	if len(rules) > 0 {
		r.violation(strings.Join(rules, ", "), strings.Join(states, "\n")+"\n"+o.describe())
		return
	}

	// Liveness: a passing entry points at a running task of its service at
	// its address, within the bound.
	if !o.consulOK {
		return
	}
	running := map[string]bool{}
	for _, t := range o.tasks {
		running[t.host+" "+t.service+" "+t.addr.String()] = true
	}
	now := map[string]bool{}
	for _, e := range o.passing {
		if o.unread[e.node] || running[e.node+" "+e.service+" "+e.addr.String()] {
			continue
		}
		now[e.id] = true
		first, ok := c.stale[e.id]
		if !ok {
			c.stale[e.id] = o.at
			continue
		}
		bound := staleBound
		r.mu.Lock()
		if lost, ok := r.dockerLost[e.node]; ok && o.at.Sub(lost) < staleBoundDockerd+staleBound {
			bound = staleBoundDockerd
		}
		if !r.restored.IsZero() && first.Sub(r.restored) < staleBoundRestore {
			bound = max(bound, staleBoundRestore-first.Sub(r.restored))
		}
		r.mu.Unlock()
		if o.at.Sub(first) > bound {
			r.violation("liveness: passing entry without its task", fmt.Sprintf("entry %s (%s on %s, %s, task %s) passing for %s with no running task there (bound %s)\n%s",
				e.id, e.service, e.node, e.addr, e.task, o.at.Sub(first).Round(time.Second), bound, o.describe()))
			return
		}
	}
	for id := range c.stale {
		if !now[id] {
			delete(c.stale, id)
		}
	}
}

// freeze records, before a fault makes Consul unreadable for hosts (all
// of them when all is set), what must not be removed meanwhile.
func (c *checker) freezeNow(ctx context.Context, all bool, hosts ...string) {
	oc, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	o := c.r.observe(oc)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.freeze(o, all, hosts...)
}

func (c *checker) freeze(o *obs, all bool, hosts ...string) {
	for _, h := range hosts {
		if o.unread[h] {
			continue
		}
		m := map[string]string{}
		for k, id := range o.config {
			if hh, n, _ := strings.Cut(k, "/"); hh == h {
				m[n] = id
			}
		}
		c.frozen[h] = m
	}
	if all && o.swarmOK {
		c.frozenServices = map[string]string{}
		for n, s := range o.services {
			c.frozenServices[n] = s.id
		}
	}
}

// thaw ends the freeze of hosts (and of the services, with all).
func (c *checker) thaw(all bool, hosts ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range hosts {
		delete(c.frozen, h)
	}
	if all {
		c.frozenServices = nil
	}
}

func managedByName(name string) (managed, bool) {
	for _, s := range workload {
		if s.name == name {
			return s, true
		}
	}
	return managed{}, false
}

// converged reports what keeps o from the converged state: every host
// read, every status ready, every service running its replicas in force,
// each task passing in Consul and nothing else passing.
func (o *obs) converged(want map[string]bool) error {
	var probs []string
	if len(o.unread) > 0 || !o.consulOK || !o.swarmOK {
		probs = append(probs, fmt.Sprintf("not all read: hosts %v, consul %v, swarm %v: %v", slices.Sorted(maps.Keys(o.unread)), o.consulOK, o.swarmOK, o.errs))
	}
	for k, st := range o.statuses {
		if !want[strings.Split(k, "/")[0]] {
			continue
		}
		if c, _ := bed.Condition(st, "Ready"); c.Status != "True" || st.LastError != "" {
			probs = append(probs, fmt.Sprintf("status/%s: Ready %q %s, last error %q", k, c.Status, c.Message, st.LastError))
		}
	}
	for _, s := range workload {
		if _, ok := o.statuses["services/"+s.name]; o.consulOK && !ok {
			probs = append(probs, "no status of "+s.name)
		}
		sv, ok := o.services[s.name]
		if !ok {
			probs = append(probs, "no service "+s.name)
			continue
		}
		var addrs []string
		for _, t := range o.tasks {
			if t.service == s.name {
				addrs = append(addrs, t.addr.String())
			}
		}
		var pass []string
		for _, e := range o.passing {
			if e.service == s.name {
				pass = append(pass, e.addr.String())
			}
		}
		sort.Strings(addrs)
		sort.Strings(pass)
		if len(addrs) != sv.replicas || !slices.Equal(addrs, pass) {
			probs = append(probs, fmt.Sprintf("%s: %d replicas in force, running at %v, passing %v", s.name, sv.replicas, addrs, pass))
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("%s", strings.Join(probs, "; "))
	}
	return nil
}

// describe prints the observation for a violation's report.
func (o *obs) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "observed %s; hosts not read %v; consul read %v; swarm read %v\n", o.at.Format(time.StampMilli), slices.Sorted(maps.Keys(o.unread)), o.consulOK, o.swarmOK)
	for _, t := range o.tasks {
		fmt.Fprintf(&b, "  %v\n", t)
	}
	fmt.Fprintf(&b, "  chunks %v\n", o.chunks)
	for _, n := range slices.Sorted(maps.Keys(o.allocs)) {
		fmt.Fprintf(&b, "  allocation %s: %s (%s) left %v\n", n, o.allocs[n].Chunk, o.allocs[n].Hostname, o.allocs[n].Left)
	}
	for _, a := range slices.SortedFunc(maps.Keys(o.leases), func(x, y netip.Addr) int { return x.Compare(y) }) {
		l := o.leases[a]
		fmt.Fprintf(&b, "  lease %s: %s %s (%s) released %v\n", a, l.Kind, l.Node, l.Hostname, l.Released)
	}
	for n, s := range o.services {
		fmt.Fprintf(&b, "  service %s %s replicas %d, update %q, intent %+v\n", n, s.id, s.replicas, s.update, o.scale[n])
		for _, t := range s.tasks {
			fmt.Fprintf(&b, "    task %s\n", t)
		}
	}
	for _, e := range o.passing {
		fmt.Fprintf(&b, "  passing %s %s on %s at %s\n", e.id, e.service, e.node, e.addr)
	}
	for _, e := range o.errs {
		fmt.Fprintf(&b, "  read error: %s\n", e)
	}
	return b.String()
}
