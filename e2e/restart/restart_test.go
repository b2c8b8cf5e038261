package restart

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"swarmvlan/e2e/bed"
)

// TestDockerRestartAndReboot restarts dockerd on h2 (a crash: SIGKILL, then
// start), then crashes and boots h3 (its links and exec root gone, its
// reconciler started again): the config networks, trunk0's promiscuous
// mode and the shim must come back, and each host must run its web tasks
// again, from its own chunk, passing in Consul.
func TestDockerRestartAndReboot(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.Seed()
	b.RestartDocker(b.Cluster.Host(2))
	b.Reboot(b.Cluster.Host(3))
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
