package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
)

// apiToken is the scale API's bearer token in every reconciler's
// environment.
const apiToken = "chaos-token"

// Fault kinds, with how often the nemesis picks each.
var kinds = []struct {
	name   string
	weight int
}{
	{"reconciler-kill", 5},
	{"dockerd-kill", 3},
	{"isolate", 3},
	{"doc-burst", 3},
	{"scale-burst", 2},
	{"consul-server", 2},
	{"consul-majority", 1},
	{"host-reboot", 2},
	{"snapshot-restore", 1},
	{"vlan-delete", 1},
	{"node-rejoin", 1},
}

// background kinds can run beside another fault.
var background = map[string]bool{"doc-burst": true, "scale-burst": true}

// nemesis injects faults, one kind at a time, at random (from the run's
// seed) for dur, each healed before the next; a third of them with a
// document or scale burst beside; every few faults it waits until
// everything converged and records how long that took after the heal.
type nemesis struct {
	r *run
	c *checker
	// ctx is for the faults and their heals; stopped ends the waits when a
	// rule broke.
	ctx     context.Context
	stopped <-chan struct{}
	// rev is the last revision of each service's document; docs the
	// counts of the last valid ones.
	rev      int
	replicas map[string]int
	// longest is the longest convergence after a heal; settles counts them.
	longest time.Duration
	settles int
	last    func() *obs
}

func (n *nemesis) pick() string {
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	x := n.r.rng.Intn(total)
	for _, k := range kinds {
		if x < k.weight {
			return k.name
		}
		x -= k.weight
	}
	panic("unreachable")
}

func (n *nemesis) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(n.r.rng.Int63n(int64(hi-lo)+1))
}

func (n *nemesis) sleep(d time.Duration) {
	select {
	case <-n.stopped:
	case <-n.ctx.Done():
	case <-time.After(d):
	}
}

// hostOf picks a host among those ok accepts.
func (n *nemesis) hostOf(hosts []*lab.Host, ok func(*lab.Host) bool) *lab.Host {
	var c []*lab.Host
	for _, h := range hosts {
		if ok(h) {
			c = append(c, h)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[n.r.rng.Intn(len(c))]
}

func (n *nemesis) up(h *lab.Host) bool { return !n.r.is(n.r.crashed, h) }

// firstRound is the order of the first faults: every kind once, the four
// that matter most first (each group shuffled), so that a short run
// covers them; then kinds are drawn by weight.
func (n *nemesis) firstRound() []string {
	var first, rest []string
	for i, k := range kinds {
		if i < 4 {
			first = append(first, k.name)
		} else {
			rest = append(rest, k.name)
		}
	}
	n.r.rng.Shuffle(len(first), func(i, j int) { first[i], first[j] = first[j], first[i] })
	n.r.rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	return append(first, rest...)
}

// run injects faults until dur has passed or a rule broke.
func (n *nemesis) run(dur time.Duration) {
	end := time.Now().Add(dur)
	step := 0
	round := n.firstRound()
	for time.Now().Before(end) && !n.r.failed() && n.ctx.Err() == nil {
		step++
		var kind string
		if step <= len(round) {
			kind = round[step-1]
		} else {
			kind = n.pick()
		}
		var side string
		if !background[kind] && n.r.rng.Intn(3) == 0 {
			side = []string{"doc-burst", "scale-burst"}[n.r.rng.Intn(2)]
		}
		n.inject(kind, side)
		if n.r.failed() {
			return
		}
		if step%4 == 0 {
			n.settle()
		}
		n.sleep(n.between(time.Second, 3*time.Second))
	}
	if !n.r.failed() {
		n.settle()
	}
}

// inject applies one fault (with side beside it) and heals it.
func (n *nemesis) inject(kind, side string) {
	r, b := n.r, n.r.b
	hold := n.between(3*time.Second, 10*time.Second)
	var wg sync.WaitGroup
	sideFn := func() {}
	if side != "" {
		// Drawn now, so the schedule follows from the seed.
		f := n.prepare(side)
		sideFn = func() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(hold / 3)
				f()
			}()
		}
	}
	switch kind {
	case "reconciler-kill":
		var h *lab.Host
		how := "leader"
		if r.rng.Intn(3) < 2 {
			if l, err := b.Leader(n.ctx); err == nil {
				h = l
			}
		}
		if h == nil {
			how = "random"
			h = n.hostOf(b.Cluster.Hosts(), n.up)
		}
		hold = n.between(0, 5*time.Second)
		r.fault(kind, h.Name, "SIGKILL (%s), restart after %s", how, hold.Round(100*time.Millisecond))
		b.Proc(h).Kill()
		sideFn()
		n.sleep(hold)
		b.StartReconciler(h)
		r.logf("heal", h.Name, "reconciler started")
	case "dockerd-kill":
		h := n.hostOf(b.Cluster.Hosts(), n.up)
		r.fault(kind, h.Name, "SIGKILL dockerd and containerd, start after %s", hold.Round(100*time.Millisecond))
		r.mu.Lock()
		r.dockerDown[h.Name] = true
		r.dockerLost[h.Name] = time.Now()
		r.mu.Unlock()
		h.KillDocker()
		sideFn()
		n.sleep(hold)
		if err := h.StartDocker(n.ctx); err != nil {
			r.t.Fatalf("start %s's dockerd: %v", h.Name, err)
		}
		r.mu.Lock()
		delete(r.dockerDown, h.Name)
		r.dockerLost[h.Name] = time.Now()
		r.mu.Unlock()
		r.logf("heal", h.Name, "dockerd started")
	case "isolate":
		h := n.hostOf(b.Cluster.Hosts(), n.up)
		hold = n.between(5*time.Second, 15*time.Second)
		r.fault(kind, h.Name, "cut off the other hosts (iptables), heal after %s", hold.Round(100*time.Millisecond))
		n.c.freezeNow(n.ctx, false, h.Name)
		if err := isolate(h, b.Cluster.Gateway); err != nil {
			r.t.Fatal(err)
		}
		r.set(r.isolated, h, true)
		sideFn()
		n.sleep(hold)
		if err := unisolate(h, b.Cluster.Gateway); err != nil {
			r.t.Fatal(err)
		}
		r.set(r.isolated, h, false)
		n.c.thaw(false, h.Name)
		r.logf("heal", h.Name, "rules removed")
	case "doc-burst", "scale-burst":
		f := n.prepare(kind)
		f()
	case "consul-server":
		h := n.hostOf(b.Cluster.Hosts(), func(h *lab.Host) bool { return h.ConsulServer && n.up(h) })
		r.fault(kind, h.Name, "SIGKILL the Consul server, start after %s", hold.Round(100*time.Millisecond))
		n.c.freezeNow(n.ctx, false, h.Name)
		r.set(r.consulDown, h, true)
		h.KillConsul()
		sideFn()
		n.sleep(hold)
		if err := h.StartConsul(n.ctx); err != nil {
			r.t.Fatalf("start %s's Consul agent: %v", h.Name, err)
		}
		r.set(r.consulDown, h, false)
		n.c.thaw(false, h.Name)
		r.logf("heal", h.Name, "Consul server started")
	case "consul-majority":
		var servers []*lab.Host
		for _, h := range b.Cluster.Hosts() {
			if h.ConsulServer {
				servers = append(servers, h)
			}
		}
		n.r.rng.Shuffle(len(servers), func(i, j int) { servers[i], servers[j] = servers[j], servers[i] })
		down := servers[:2]
		r.fault(kind, down[0].Name+","+down[1].Name, "SIGKILL two of three Consul servers (no quorum), start after %s", hold.Round(100*time.Millisecond))
		var names []string
		for _, h := range b.Cluster.Hosts() {
			names = append(names, h.Name)
		}
		n.c.freezeNow(n.ctx, true, names...)
		r.mu.Lock()
		r.outage = true
		r.mu.Unlock()
		for _, h := range down {
			r.set(r.consulDown, h, true)
			h.KillConsul()
		}
		sideFn()
		n.sleep(hold)
		errs := make([]error, len(down))
		var swg sync.WaitGroup
		for i, h := range down {
			swg.Add(1)
			go func() {
				defer swg.Done()
				errs[i] = h.StartConsul(n.ctx)
			}()
		}
		swg.Wait()
		if err := errors.Join(errs...); err != nil {
			r.t.Fatalf("start the Consul servers: %v", err)
		}
		for _, h := range down {
			r.set(r.consulDown, h, false)
		}
		r.mu.Lock()
		r.outage = false
		r.mu.Unlock()
		n.c.thaw(true, names...)
		r.logf("heal", down[0].Name+","+down[1].Name, "Consul servers started")
	case "host-reboot":
		// h1 stays: the operator commands run there.
		h := n.hostOf(b.Cluster.Hosts()[1:], n.up)
		hold = n.between(5*time.Second, 15*time.Second)
		r.fault(kind, h.Name, "crash the host, boot after %s", hold.Round(100*time.Millisecond))
		r.mu.Lock()
		r.crashed[h.Name] = true
		r.dockerLost[h.Name] = time.Now()
		r.mu.Unlock()
		b.Crash(h)
		sideFn()
		n.sleep(hold)
		b.BootOnly(h)
		if err := addTrunk(n.ctx, h); err != nil {
			r.t.Fatal(err)
		}
		b.StartReconciler(h)
		r.mu.Lock()
		delete(r.crashed, h.Name)
		r.dockerLost[h.Name] = time.Now()
		r.mu.Unlock()
		r.logf("heal", h.Name, "booted, reconciler started")
	case "snapshot-restore":
		c, via := r.consul()
		snap, _, err := c.Snapshot().Save((&api.QueryOptions{}).WithContext(n.ctx))
		if err != nil {
			r.logf(kind, via.Name, "snapshot save failed: %v", err)
			return
		}
		data, err := readAll(snap)
		if err != nil {
			r.t.Fatal(err)
		}
		r.fault(kind, via.Name, "snapshot saved (%d bytes), restore after %s", len(data), hold.Round(100*time.Millisecond))
		sideFn()
		n.sleep(hold)
		if err := c.Snapshot().Restore((&api.WriteOptions{}).WithContext(n.ctx), bytes.NewReader(data)); err != nil {
			r.t.Fatalf("snapshot restore: %v", err)
		}
		r.mu.Lock()
		r.restored = time.Now()
		r.mu.Unlock()
		r.logf("heal", via.Name, "snapshot restored")
	case "node-rejoin":
		// A worker leaves the swarm (its reconciler stopped first, as an
		// operator would), is removed, and joins again: a new node.
		h := n.hostOf(b.Cluster.Hosts(), func(h *lab.Host) bool { return !h.Manager && n.up(h) })
		hold = n.between(5*time.Second, 15*time.Second)
		r.fault(kind, h.Name, "leave the swarm, node removed, join again as a new node after %s", hold.Round(100*time.Millisecond))
		b.Proc(h).Stop()
		// The Engine can answer a leave with its own deadline exceeded
		// while its swarm node is still stopping (seen after the host was
		// cut off and its dockerd busy): asked again until it says it is
		// out of the swarm.
		b.WaitFor(h.Name+" out of the swarm", 2*time.Minute, func(ctx context.Context) error {
			info, err := b.Docker(h).Info(ctx)
			if err != nil {
				return err
			}
			if info.Swarm.LocalNodeState == swarm.LocalNodeStateInactive {
				return nil
			}
			if err := b.Docker(h).SwarmLeave(ctx, true); err != nil {
				return fmt.Errorf("swarm leave: %w", err)
			}
			return fmt.Errorf("left; checking that the Engine says so")
		})
		mgr := &managerClient{r: r}
		b.WaitFor(h.Name+" removed from the swarm", 2*time.Minute, func(ctx context.Context) error {
			d, err := mgr.get(ctx)
			if err != nil {
				return err
			}
			return d.NodeRemove(ctx, h.ID, swarm.NodeRemoveOptions{Force: true})
		})
		sideFn()
		n.sleep(hold)
		var remotes []string
		for _, m := range b.Cluster.Managers() {
			remotes = append(remotes, m.Addr+":2377")
		}
		b.WaitFor(h.Name+" joined again", 2*time.Minute, func(ctx context.Context) error {
			d, err := mgr.get(ctx)
			if err != nil {
				return err
			}
			sw, err := d.SwarmInspect(ctx)
			if err != nil {
				return err
			}
			return b.Docker(h).SwarmJoin(ctx, swarm.JoinRequest{ListenAddr: h.Addr + ":2377", AdvertiseAddr: h.Addr,
				RemoteAddrs: remotes, JoinToken: sw.JoinTokens.Worker})
		})
		info, err := b.Docker(h).Info(n.ctx)
		if err != nil {
			r.t.Fatal(err)
		}
		r.mu.Lock()
		h.ID = info.Swarm.NodeID
		r.hostIDs[h.Name] = append(r.hostIDs[h.Name], h.ID)
		r.mu.Unlock()
		b.StartReconciler(h)
		r.logf("heal", h.Name, "joined as node %.12s, reconciler started", h.ID)
	case "vlan-delete":
		r.fault(kind, poolVLAN, "delete the VLAN while api runs on it, put it back after %s", hold.Round(100*time.Millisecond))
		b.ReconcilerCmd("delete", "vlan", poolVLAN)
		sideFn()
		n.sleep(hold)
		n.put("spec/vlans/"+poolVLAN, poolVLANDoc())
		r.logf("heal", poolVLAN, "VLAN document put back")
	}
	wg.Wait()
}

// prepare draws a document or scale burst and returns the function that
// sends it.
func (n *nemesis) prepare(kind string) func() {
	r := n.r
	switch kind {
	case "doc-burst":
		type put struct {
			key, doc, what string
		}
		var puts []put
		touched := map[string]bool{}
		for i := 0; i < 3+r.rng.Intn(6); i++ {
			s := workload[r.rng.Intn(len(workload))]
			touched[s.name] = true
			if r.rng.Intn(5) < 3 {
				n.rev++
				reps := s.min + r.rng.Intn(s.max-s.min+1)
				n.replicas[s.name] = reps
				puts = append(puts, put{"spec/services/" + s.name, serviceDoc(s, reps, n.rev), fmt.Sprintf("%s valid rev %d replicas %d", s.name, n.rev, reps)})
			} else {
				bad := invalidDocs(s)
				j := r.rng.Intn(len(bad))
				puts = append(puts, put{"spec/services/" + s.name, bad[j], fmt.Sprintf("%s invalid #%d", s.name, j)})
			}
		}
		if r.rng.Intn(2) == 0 {
			puts = append(puts, put{"spec/services/chaos-bad", invalidDocs(workload[0])[r.rng.Intn(5)], "chaos-bad invalid"})
			puts = append(puts, put{"spec/services/chaos-bad", "", "chaos-bad deleted"})
		}
		// The burst ends valid, so the statuses can be ready again.
		for _, name := range slices.Sorted(maps.Keys(touched)) {
			s := serviceByName(name)
			n.rev++
			puts = append(puts, put{"spec/services/" + name, serviceDoc(s, n.replicas[name], n.rev), fmt.Sprintf("%s valid rev %d replicas %d", name, n.rev, n.replicas[name])})
		}
		var what []string
		for _, p := range puts {
			what = append(what, p.what)
		}
		return func() {
			r.fault(kind, "kv", "%d puts: %s", len(puts), strings.Join(what, ", "))
			for _, p := range puts {
				if p.doc == "" {
					n.del(p.key)
				} else {
					n.put(p.key, p.doc)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	case "scale-burst":
		type req struct {
			host    *lab.Host
			service string
			body    string
		}
		var reqs []req
		for i := 0; i < 4+r.rng.Intn(7); i++ {
			s := workload[r.rng.Intn(len(workload))]
			h := n.r.b.Cluster.Managers()[r.rng.Intn(len(n.r.b.Cluster.Managers()))]
			body := []string{`{"direction":"up"}`, `{"direction":"down"}`,
				fmt.Sprintf(`{"replicas":%d}`, s.min), fmt.Sprintf(`{"replicas":%d}`, s.max),
				fmt.Sprintf(`{"replicas":%d}`, s.min-1), fmt.Sprintf(`{"replicas":%d}`, s.max+1)}[r.rng.Intn(6)]
			reqs = append(reqs, req{h, s.name, body})
		}
		return func() {
			codes := make([]string, len(reqs))
			var wg sync.WaitGroup
			for i, q := range reqs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					codes[i] = n.scale(q.host, q.service, q.body)
				}()
			}
			wg.Wait()
			var desc []string
			for i, q := range reqs {
				desc = append(desc, fmt.Sprintf("%s %s %s -> %s", q.host.Name, q.service, q.body, codes[i]))
			}
			r.fault(kind, "api", "%d concurrent requests: %s", len(reqs), strings.Join(desc, "; "))
		}
	}
	panic("no such burst " + kind)
}

// scale sends one scale request to h's API and returns the HTTP status.
func (n *nemesis) scale(h *lab.Host, service, body string) string {
	if !n.r.reachable(h) {
		return "host down"
	}
	ctx, cancel := context.WithTimeout(n.ctx, 15*time.Second)
	defer cancel()
	out, err := h.Exec(ctx, "curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}",
		"-H", "Authorization: Bearer "+apiToken, "-d", body,
		"http://127.0.0.1:8480/v1/services/"+service+"/scale").CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		return "error " + lines[len(lines)-1]
	}
	return lines[len(lines)-1]
}

// put writes a document straight into KV through an agent that is up.
func (n *nemesis) put(key, doc string) {
	c, via := n.r.consul()
	if c == nil {
		return
	}
	if _, err := c.KV().Put(&api.KVPair{Key: bed.KVPrefix + key, Value: []byte(doc)}, (&api.WriteOptions{}).WithContext(n.ctx)); err != nil {
		n.r.logf("kv-put", via.Name, "%s: %v", key, err)
	}
}

func (n *nemesis) del(key string) {
	c, via := n.r.consul()
	if c == nil {
		return
	}
	if _, err := c.KV().Delete(bed.KVPrefix+key, (&api.WriteOptions{}).WithContext(n.ctx)); err != nil {
		n.r.logf("kv-delete", via.Name, "%s: %v", key, err)
	}
}

// settle waits until the monitor sees everything converged after the
// last heal, and records how long that took; past convergeBound it is a
// violation.
func (n *nemesis) settle() {
	healed := time.Now()
	want := map[string]bool{"vlans": true, "services": true}
	var last error
	for {
		if n.r.failed() || n.ctx.Err() != nil {
			return
		}
		if o := n.last(); o != nil && o.at.After(healed) {
			if last = o.converged(want); last == nil {
				took := o.at.Sub(healed)
				n.settles++
				n.longest = max(n.longest, took)
				n.r.logf("converged", "-", "%s after the last heal", took.Round(100*time.Millisecond))
				return
			}
			if time.Since(healed) > convergeBound {
				n.r.violation("liveness: convergence after healing", fmt.Sprintf("not converged %s after the last heal: %v\n%s", convergeBound, last, o.describe()))
				return
			}
		}
		n.sleep(500 * time.Millisecond)
	}
}
