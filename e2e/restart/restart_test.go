package restart

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
)

// TestDockerRestartAndReboot restarts dockerd on h2 (a crash: SIGKILL, then
// start), then crashes and boots h3 (its links and exec root gone, its
// reconciler started again): the config networks, trunk0's promiscuous
// mode and the shim must come back, and each host must run its web tasks
// again, from its own chunk, passing in Consul.
func TestDockerRestartAndReboot(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.Seed()
	if err := b.HostNetReady(b.Ctx); err != nil {
		t.Fatal(err)
	}
	before, err := b.Chunks(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	// back checks that every host has its chunk, kernel state and two web
	// tasks again.
	back := func(ctx context.Context) error {
		chunks, err := b.Chunks(ctx)
		if err != nil {
			return err
		}
		for h, c := range before {
			if chunks[h] != c {
				return fmt.Errorf("%s: chunk %s, was %s", h, chunks[h], c)
			}
		}
		if err := b.HostNetReady(ctx); err != nil {
			return err
		}
		tasks, err := b.Converged(ctx, bed.WebWant(6))
		if err != nil {
			return err
		}
		per := map[string]int{}
		for _, tk := range tasks {
			per[tk.Host]++
		}
		for _, h := range b.Cluster.Hosts() {
			if per[h.Name] != 2 {
				return fmt.Errorf("%s runs %d web tasks, want 2", h.Name, per[h.Name])
			}
		}
		return nil
	}

	running := func(h *lab.Host) map[string]bool {
		tasks, err := b.Running(b.Ctx, "web")
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

	h2 := b.Cluster.Host(2)
	was := running(h2)
	h2.KillDocker()
	begin := time.Now()
	if err := h2.StartDocker(b.Ctx); err != nil {
		t.Fatal(err)
	}
	b.WaitFor("h2 back after a dockerd restart", 4*time.Minute, back)
	kept := 0
	for id := range running(h2) {
		if was[id] {
			kept++
		}
	}
	t.Logf("dockerd restart on h2: everything back %s after the daemon started (%d of its 2 task containers survived the restart)",
		time.Since(begin).Round(10*time.Millisecond), kept)
	if p := b.Proc(h2); !p.Running() {
		t.Fatalf("reconciler on h2 exited during the dockerd restart: %v", p.Err())
	}

	h3 := b.Cluster.Host(3)
	b.Crash(h3)
	begin = time.Now()
	b.BootOnly(h3)
	// Boot took the shim and promiscuous mode: only the host role can
	// put them back.
	gone, err := b.Kernel(b.Ctx, h3, before[h3.Name])
	if err != nil {
		t.Fatal(err)
	}
	if gone.Promisc || gone.Shim || gone.Route {
		t.Fatalf("h3's kernel state survived the reboot: %+v", gone)
	}
	b.StartReconciler(h3)
	b.WaitFor("h3 back after a reboot", 4*time.Minute, back)
	t.Logf("reboot of h3: everything back %s after boot", time.Since(begin).Round(10*time.Millisecond))
}

// TestConsulServersDown kills the Consul agents of all three servers for
// 60 s. Nothing may be removed meanwhile (services, networks, links stay,
// tasks keep running) and no reconciler may exit; once Consul is back, a
// document change (web scaled from 6 to 4) converges.
func TestConsulServersDown(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.Seed()
	was, err := b.World(b.Ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range b.Cluster.Hosts() {
		if !was.Shims[h.Name] {
			t.Fatalf("no shim on %s before the outage", h.Name)
		}
	}

	for _, h := range b.Cluster.Hosts() {
		h.KillConsul()
	}
	t.Log("killed the Consul agent of every server")
	b.Holds("nothing removed, no reconciler exits while Consul is down", 60*time.Second, 5*time.Second, func(ctx context.Context) error {
		for _, h := range b.Cluster.Hosts() {
			if p := b.Proc(h); !p.Running() {
				return fmt.Errorf("reconciler on %s exited: %v\n%s", h.Name, p.Err(), bed.LastLines(p.Logs(), 20))
			}
		}
		now, err := b.World(ctx, "web")
		if err != nil {
			return err
		}
		return was.Same(now)
	})

	// The servers need each other for a quorum: start them together.
	var wg sync.WaitGroup
	errs := make([]error, len(b.Cluster.Hosts()))
	for i, h := range b.Cluster.Hosts() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.StartConsul(b.Ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	b.Apply(bed.WebDoc(4))
	_, took := b.WaitConverged(bed.WebWant(4), 4*time.Minute)
	t.Logf("after the outage, web scaled to 4 and passing %s after apply (%s after Consul was back)",
		took.Round(10*time.Millisecond), time.Since(begin).Round(10*time.Millisecond))
}
