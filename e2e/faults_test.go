package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/errdefs"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
)

// leader returns the manager whose reconciler leads: the holder named in
// the leader key, whose log's last leadership line is "leading".
func (b *bed) leader(ctx context.Context) (*lab.Host, error) {
	p, _, err := b.consul(b.h1).KV().Get(kvPrefix+"leader", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	if p == nil || p.Session == "" {
		return nil, errors.New("leader key not held")
	}
	var leading []*lab.Host
	for _, h := range b.c.Managers() {
		proc := b.proc(h)
		if proc == nil || !proc.Running() {
			continue
		}
		log := proc.Logs()
		lead := logLines(log, "leading")
		lost := logLines(log, "leadership lost")
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

// TestLeaderKilledMidReconcile applies 20 services and at once SIGKILLs the
// leading reconciler, in the middle of creating them. Another manager must
// take over, and every service must exist exactly once and run.
func TestLeaderKilledMidReconcile(t *testing.T) {
	b := newBed(t, 3, 3)
	b.apply(vlanDoc())
	b.nodesReady(3 * time.Minute)
	var old *lab.Host
	b.waitFor("one leader", time.Minute, func(ctx context.Context) (err error) {
		old, err = b.leader(ctx)
		return err
	})

	var docs []string
	var names []string
	for i := 1; i <= 20; i++ {
		name := fmt.Sprintf("svc-%02d", i)
		names = append(names, name)
		docs = append(docs, serviceDoc(serviceOpts{name: name, replicas: 1}))
	}
	b.apply(docs...)
	// Kill it as soon as it has created the first service, with the rest
	// in its queue or in flight.
	var before int
	b.waitFor("the leader creates the first service", time.Minute, func(ctx context.Context) error {
		svcs, err := b.managedServices(ctx)
		if before = len(svcs); err == nil && before == 0 {
			err = errors.New("no service yet")
		}
		return err
	})
	killed := time.Now()
	b.proc(old).Kill()
	after := -1
	if svcs, err := b.managedServices(b.ctx); err == nil {
		after = len(svcs)
	}
	t.Logf("killed the leader on %s while it created %d services: %d existed just before the kill, %d just after",
		old.Name, len(docs), before, after)

	// The first reconcile of a manager that leads after the kill.
	var next *lab.Host
	var first time.Time
	b.waitFor("another manager leads and reconciles", 2*time.Minute, func(ctx context.Context) error {
		for _, h := range b.c.Managers() {
			if h == old {
				continue
			}
			for _, l := range logLines(b.proc(h).Logs(), "first reconcile as leader") {
				if at, ok := logTime(l); ok && at.After(killed) {
					next, first = h, at
					return nil
				}
			}
		}
		return errors.New("no first reconcile as leader logged since the kill")
	})
	var won time.Time
	for _, l := range logLines(b.proc(next).Logs(), "leading") {
		if at, ok := logTime(l); ok && at.After(killed) {
			won = at
			break
		}
	}
	t.Logf("%s leads after %s: lock taken %s after the kill, first reconcile %s after that",
		next.Name, old.Name, won.Sub(killed).Round(10*time.Millisecond), first.Sub(won).Round(time.Millisecond))
	figure(t, "leader failover, SIGKILL to the new leader's first reconcile", first.Sub(killed))
	if got, err := b.leader(b.ctx); err != nil || got != next {
		t.Errorf("leader after failover: %v, %v; want %s", got, err, next.Name)
	}

	took := b.waitFor("all 20 services converged", 5*time.Minute, func(ctx context.Context) error {
		for _, n := range names {
			if _, err := b.converged(ctx, want{service: n, replicas: 1}); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("all services converged %s after the new leader took over", took.Round(10*time.Millisecond))

	// Exactly one Docker service per document, nothing else managed, and
	// each with one task ever desired running (converged checked it).
	svcs, err := b.managedServices(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if len(svcs[n]) != 1 {
			t.Errorf("service %s exists %d times", n, len(svcs[n]))
		}
		if got := svcs[n][0].Spec.Labels[reconcile.DockerLabelName]; len(svcs[n]) == 1 && got != n {
			t.Errorf("service %s labelled %s=%q", n, reconcile.DockerLabelName, got)
		}
	}
	for n := range svcs {
		if !slices.Contains(names, n) {
			t.Errorf("unexpected managed service %s", n)
		}
	}
	b.waitFor("every service's status ready", time.Minute, func(ctx context.Context) error {
		for _, n := range names {
			st, ok, err := b.status(ctx, "services", n)
			if err != nil || !ok {
				return fmt.Errorf("status of %s: %v (present %v)", n, err, ok)
			}
			if c, _ := condition(st, "Ready"); c.Status != "True" {
				return fmt.Errorf("status of %s: %+v", n, c)
			}
		}
		return nil
	})
}

// setHeartbeat sets Swarm's dispatcher heartbeat, which decides how soon a
// silent node is marked down (default 5 s).
func (b *bed) setHeartbeat(d time.Duration) {
	b.t.Helper()
	sw, err := b.mgr.SwarmInspect(b.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	sw.Spec.Dispatcher.HeartbeatPeriod = d
	if err := b.mgr.SwarmUpdate(b.ctx, sw.Version, sw.Spec, swarm.UpdateFlags{}); err != nil {
		b.t.Fatal(err)
	}
}

// TestWorkerLost crashes the worker of a 4-host cluster (3 managers, 1
// worker): Swarm must run its tasks elsewhere, their new addresses must
// pass in Consul, the lost ones must stop passing and then leave the
// catalog (the leader's discovery GC after --node-down-grace).
func TestWorkerLost(t *testing.T) {
	b := newBed(t, 4, 3)
	b.setHeartbeat(2 * time.Second)
	tasks := b.seed()
	h4 := b.c.Host(4)
	var lost []netip.Addr
	for _, tk := range tasks {
		if tk.Host == h4.Name {
			lost = append(lost, tk.Addr)
		}
	}
	if len(lost) == 0 {
		t.Fatalf("no web task on %s to lose: %v", h4.Name, tasks)
	}

	killed := time.Now()
	b.crash(h4)
	t.Logf("crashed %s, which ran %v", h4.Name, lost)
	after, _ := b.waitConverged(webWant(6), 4*time.Minute)
	figure(t, "worker lost, crash to every desired task running and passing again", time.Since(killed))
	for _, tk := range after {
		if tk.Host == h4.Name {
			t.Errorf("task %s still counted on crashed %s", tk.TaskID, h4.Name)
		}
	}
	// converged compared the passing set with the running tasks; the lost
	// addresses may only come back if Swarm handed them out again here.
	pass, err := b.passing(b.ctx, b.h1, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range lost {
		if pass[a] && !slices.ContainsFunc(after, func(tk task) bool { return tk.Addr == a }) {
			t.Errorf("lost task's %s still passing", a)
		}
	}

	b.waitFor("the lost node's entries gone from the catalog", 3*time.Minute, func(ctx context.Context) error {
		entries, _, err := b.consul(b.h1).Catalog().Service("web", "", (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		var left []string
		for _, e := range entries {
			if e.ServiceMeta[reconcile.RegistrationMetaNode] == h4.ID || e.Node == h4.Name {
				left = append(left, e.ServiceID)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("still in the catalog: %v", left)
		}
		return nil
	})
	figure(t, "worker lost, crash to its catalog entries removed", time.Since(killed))
}

// TestDockerRestartAndReboot restarts dockerd on h2 (a crash: SIGKILL, then
// start), then crashes and boots h3 (its links and exec root gone, its
// reconciler started again): the config networks, trunk0's promiscuous
// mode and the shim must come back, and each host must run its web tasks
// again, from its own chunk, passing in Consul.
func TestDockerRestartAndReboot(t *testing.T) {
	b := newBed(t, 3, 3)
	b.seed()
	if err := b.hostNetReady(b.ctx); err != nil {
		t.Fatal(err)
	}
	before, err := b.chunks(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	// back checks that every host has its chunk, kernel state and two web
	// tasks again.
	back := func(ctx context.Context) error {
		chunks, err := b.chunks(ctx)
		if err != nil {
			return err
		}
		for h, c := range before {
			if chunks[h] != c {
				return fmt.Errorf("%s: chunk %s, was %s", h, chunks[h], c)
			}
		}
		if err := b.hostNetReady(ctx); err != nil {
			return err
		}
		tasks, err := b.converged(ctx, webWant(6))
		if err != nil {
			return err
		}
		per := map[string]int{}
		for _, tk := range tasks {
			per[tk.Host]++
		}
		for _, h := range b.c.Hosts() {
			if per[h.Name] != 2 {
				return fmt.Errorf("%s runs %d web tasks, want 2", h.Name, per[h.Name])
			}
		}
		return nil
	}

	running := func(h *lab.Host) map[string]bool {
		tasks, err := b.running(b.ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, tk := range tasks {
			if tk.Host == h.Name {
				out[tk.Container] = true
			}
		}
		return out
	}

	h2 := b.c.Host(2)
	was := running(h2)
	h2.KillDocker()
	begin := time.Now()
	if err := h2.StartDocker(b.ctx); err != nil {
		t.Fatal(err)
	}
	b.waitFor("h2 back after a dockerd restart", 4*time.Minute, back)
	kept := 0
	for id := range running(h2) {
		if was[id] {
			kept++
		}
	}
	t.Logf("dockerd restart on h2: everything back %s after the daemon started (%d of its 2 task containers survived the restart)",
		time.Since(begin).Round(10*time.Millisecond), kept)
	if p := b.proc(h2); !p.Running() {
		t.Fatalf("reconciler on h2 exited during the dockerd restart: %v", p.Err())
	}

	h3 := b.c.Host(3)
	b.crash(h3)
	begin = time.Now()
	b.bootOnly(h3)
	// Boot took the shim and promiscuous mode: only the host role can
	// put them back.
	gone, err := b.kernel(b.ctx, h3, before[h3.Name])
	if err != nil {
		t.Fatal(err)
	}
	if gone.Promisc || gone.Shim || gone.Route {
		t.Fatalf("h3's kernel state survived the reboot: %+v", gone)
	}
	b.startReconciler(h3)
	b.waitFor("h3 back after a reboot", 4*time.Minute, back)
	t.Logf("reboot of h3: everything back %s after boot", time.Since(begin).Round(10*time.Millisecond))
}

// world is what must not change while Consul is away: the managed services,
// the networks on every host, the shims, the running task containers.
type world struct {
	Services   map[string]string // name -> service ID
	Networks   map[string]string // host/network -> network ID
	Shims      map[string]bool   // host -> shim present
	Containers []string          // running task containers, host/ID
}

func (b *bed) world(ctx context.Context, services ...string) (world, error) {
	w := world{Services: map[string]string{}, Networks: map[string]string{}, Shims: map[string]bool{}}
	svcs, err := b.managedServices(ctx)
	if err != nil {
		return w, err
	}
	for n, s := range svcs {
		w.Services[n] = s[0].ID
	}
	for _, h := range b.up() {
		for _, name := range []string{configNetwork, swarmNetwork} {
			n, err := b.docker(h).NetworkInspect(ctx, name, network.InspectOptions{})
			switch {
			case err == nil:
				w.Networks[h.Name+"/"+name] = n.ID
			case errdefs.IsNotFound(err):
				// Absent: same says so when it was there. (A worker
				// knows a swarm network only while it runs a task on
				// it.)
			default:
				return w, fmt.Errorf("%s: network %s: %w", h.Name, name, err)
			}
		}
		err := h.Exec(ctx, "ip", "link", "show", "dev", shimLink).Run()
		w.Shims[h.Name] = err == nil
	}
	for _, s := range services {
		tasks, err := b.running(ctx, s)
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

// same reports how now differs from was, or nil.
func (was world) same(now world) error {
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

// TestConsulServersDown kills the Consul agents of all three servers for
// 60 s. Nothing may be removed meanwhile (services, networks, links stay,
// tasks keep running) and no reconciler may exit; once Consul is back, a
// document change (web scaled from 6 to 4) converges.
func TestConsulServersDown(t *testing.T) {
	b := newBed(t, 3, 3)
	b.seed()
	was, err := b.world(b.ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range b.c.Hosts() {
		if !was.Shims[h.Name] {
			t.Fatalf("no shim on %s before the outage", h.Name)
		}
	}

	for _, h := range b.c.Hosts() {
		h.KillConsul()
	}
	t.Log("killed the Consul agent of every server")
	b.holds("nothing removed, no reconciler exits while Consul is down", 60*time.Second, 5*time.Second, func(ctx context.Context) error {
		for _, h := range b.c.Hosts() {
			if p := b.proc(h); !p.Running() {
				return fmt.Errorf("reconciler on %s exited: %v\n%s", h.Name, p.Err(), lastLines(p.Logs(), 20))
			}
		}
		now, err := b.world(ctx, "web")
		if err != nil {
			return err
		}
		return was.same(now)
	})

	// The servers need each other for a quorum: start them together.
	var wg sync.WaitGroup
	errs := make([]error, len(b.c.Hosts()))
	for i, h := range b.c.Hosts() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.StartConsul(b.ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	b.apply(webDoc(4))
	_, took := b.waitConverged(webWant(4), 4*time.Minute)
	t.Logf("after the outage, web scaled to 4 and passing %s after apply (%s after Consul was back)",
		took.Round(10*time.Millisecond), time.Since(begin).Round(10*time.Millisecond))
}
