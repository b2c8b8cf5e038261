package chaos

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/spec"
)

// TestChaos brings up five hosts (three managers and Consul servers, in
// mount namespaces of their own for mode cluster's IPAM plugin), the
// workload and the foreign objects, then runs the nemesis for the
// configured time while the monitor checks the invariants every second,
// and waits for everything to converge at the end.
func TestChaos(t *testing.T) {
	seed, dur := runConfig(t)
	t.Logf("chaos run: seed %d, faults for %s (%s=%d %s=%s to repeat it)", seed, dur, seedEnv, seed, durationEnv, dur)
	t.Setenv("SWARMVLAN_API_TOKENS", apiToken)
	setupStart := time.Now()
	b := bed.NewCluster(t, lab.ClusterOptions{Hosts: 5, Managers: 3, ConsulServers: 3, MountNamespace: true})
	ctx, cancel := context.WithTimeout(context.Background(), dur+20*time.Minute)
	t.Cleanup(cancel)
	b = b.WithContext(ctx)
	for _, h := range b.Cluster.Hosts() {
		if err := addTrunk(ctx, h); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unisolate(h, b.Cluster.Gateway) })
		b.StartReconciler(h)
	}
	b.Apply(bed.VLANDoc(), poolVLANDoc())
	b.WaitFor("every node ready for both VLANs", 3*time.Minute, func(ctx context.Context) error {
		nodes, err := b.Mgr.NodeList(ctx, swarm.NodeListOptions{})
		if err != nil {
			return err
		}
		var missing []string
		for _, n := range nodes {
			for _, v := range []string{chunksVLAN, poolVLAN} {
				if n.Spec.Labels[spec.NodeLabelPrefix+v] != spec.NodeLabelReady {
					missing = append(missing, n.Description.Hostname+"/"+v)
				}
			}
		}
		if len(missing) > 0 || len(nodes) != 5 {
			return fmt.Errorf("%d nodes, not ready: %v", len(nodes), missing)
		}
		return nil
	})
	var docs []string
	replicas := map[string]int{}
	for _, s := range workload {
		docs = append(docs, serviceDoc(s, s.replicas, 0))
		replicas[s.name] = s.replicas
	}
	b.Apply(docs...)

	r := newRun(t, b, seed)
	runCtx, stop := context.WithCancel(ctx)
	r.stop = stop
	want := map[string]bool{"vlans": true, "services": true}
	var o *obs
	b.WaitFor("the workload converged", 4*time.Minute, func(ctx context.Context) error {
		o = r.observe(ctx)
		return o.converged(want)
	})
	if _, err := makeForeign(ctx, b); err != nil {
		t.Fatal(err)
	}
	var f foreign
	b.WaitFor("the foreign objects read", time.Minute, func(ctx context.Context) (err error) {
		c, _ := r.consul()
		f, err = readForeign(ctx, b, &managerClient{r: r}, c.KV())
		return err
	})
	setup := time.Since(setupStart)
	t.Logf("set up in %s (cluster %s): %d tasks", setup.Round(time.Second), b.Cluster.StartupTime.Round(time.Second), len(o.tasks))

	// The monitor: every second, every rule.
	chk := newChecker(r, f)
	var lastMu sync.Mutex
	var last *obs
	var polls int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for runCtx.Err() == nil {
			began := time.Now()
			pc, cancel := context.WithTimeout(runCtx, 20*time.Second)
			o := r.observe(pc)
			cancel()
			if runCtx.Err() != nil {
				return
			}
			chk.check(o)
			lastMu.Lock()
			last, polls = o, polls+1
			lastMu.Unlock()
			select {
			case <-runCtx.Done():
			case <-time.After(time.Second - time.Since(began)):
			}
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	n := &nemesis{r: r, c: chk, ctx: ctx, stopped: runCtx.Done(), replicas: replicas, last: func() *obs {
		lastMu.Lock()
		defer lastMu.Unlock()
		return last
	}}
	began := time.Now()
	r.mu.Lock()
	r.start = began
	r.mu.Unlock()
	n.run(dur)
	stop()
	<-done
	ran := time.Since(began)

	r.mu.Lock()
	faults := maps.Clone(r.faults)
	violations := len(r.violations)
	r.mu.Unlock()
	var byKind []string
	total := 0
	for _, k := range slices.Sorted(maps.Keys(faults)) {
		byKind = append(byKind, fmt.Sprintf("%s=%d", k, faults[k]))
		total += faults[k]
	}
	t.Logf("seed %d: %d faults in %s (%d polls), %d settles", seed, total, ran.Round(time.Second), polls, n.settles)
	lab.Figure(t, "chaos seed", fmt.Sprint(seed))
	lab.Figure(t, "chaos faults by kind", fmt.Sprintf("%d: %s", total, strings.Join(byKind, " ")))
	lab.Figure(t, "chaos violations", fmt.Sprint(violations))
	bed.Figure(t, "chaos longest convergence after healing", n.longest)
	bed.Figure(t, "chaos run, faults and settles", ran)
	bed.Figure(t, "chaos set-up", setup)
}
