package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/spec"
)

// The leader's latency from a change to Docker accepting it, measured on
// the built daemon (its watches, decoding, queue, fence and Docker calls,
// as in production) against a real Consul agent and the machine's Engine,
// beside the least any client must do for the same change: inspect the
// service, then update it. "Accepted" is the Engine's own service update
// event (its timestamp), for both, so no polling client competes with
// the daemon for the Engine. Each change follows a quiet spell of 100 ms,
// as edits and scale requests do.

// latencyDoc is a Service of replicas 0 (no task churn) whose env is
// changed.
func latencyDoc(name, vlan, value string) string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata:
  name: %s
spec:
  image: %s
  args: ["-listen", ":8080"]
  env: {LOG_LEVEL: %s}
  networks: [%s]
  replicas: 0
`, name, lab.ImageTestApp, value, vlan)
}

// updateEvents delivers the time of every update event of the services
// ids (by ID), from now until the test ends; buf bounds what is kept.
func updateEvents(tb testing.TB, b *swarmBed, buf int, ids ...string) map[string]chan time.Time {
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	routes := map[string]chan time.Time{}
	for _, id := range ids {
		routes[id] = make(chan time.Time, buf)
	}
	msgs, errs := b.docker.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ServiceEventType)), filters.Arg("event", "update"))})
	go func() {
		for {
			select {
			case m := <-msgs:
				if ch, ok := routes[m.Actor.ID]; ok {
					select {
					case ch <- time.Unix(0, m.TimeNano):
					default:
					}
				}
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return routes
}

// dockerWriteLine is a "docker write" line of the daemon's log.
type dockerWriteLine struct {
	verb, object string
	sent         time.Time
	took         time.Duration
}

var logFieldRe = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// daemonWrites parses the daemon's "docker write" lines.
func daemonWrites(log string) []dockerWriteLine {
	var out []dockerWriteLine
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `msg="docker write"`) {
			continue
		}
		f := map[string]string{}
		for _, m := range logFieldRe.FindAllStringSubmatch(l, -1) {
			v := m[2]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			f[m[1]] = v
		}
		sent, err1 := time.Parse(time.RFC3339Nano, f["sent"])
		took, err2 := time.ParseDuration(f["took"])
		if err1 == nil && err2 == nil {
			out = append(out, dockerWriteLine{verb: f["verb"], object: f["object"], sent: sent, took: took})
		}
	}
	return out
}

// latencyResult holds one path's samples and its baseline's.
type latencyResult struct {
	path, direct []time.Duration
	// before is, per change, the time from the change to the daemon
	// sending its update to the Engine; took how long that call took
	// (both from the daemon's "docker write" lines).
	before, took []time.Duration
	// extra counts update events beyond one per change.
	extra int
}

// latencyRun makes changes changes of each path (KV put of a Service,
// scale request) and as many direct inspect+update calls beside them.
func latencyRun(tb testing.TB, changes int) (kv, scale latencyResult) {
	b := startSwarmBed(tb, 1, 1, 2)
	ctx := context.Background()
	suffix := b.service[len("scweb"):]
	kvName, kvDirect, scDirect := "kvl"+suffix, "kvd"+suffix, "scd"+suffix

	tb.Cleanup(func() {
		// The daemon first, or it makes the managed one again.
		b.daemon.cmd.Process.Kill()
		b.daemon.cmd.Wait()
		for _, n := range []string{kvName, kvDirect, scDirect} {
			if s, _, err := b.docker.ServiceInspectWithRaw(ctx, n, swarm.ServiceInspectOptions{}); err == nil {
				b.docker.ServiceRemove(ctx, s.ID)
			}
		}
	})
	put := func(value string) time.Time {
		at := time.Now()
		if _, err := b.kv.Put(&api.KVPair{Key: b.store.SpecKey(spec.KindService, kvName), Value: []byte(latencyDoc(kvName, b.vlan, value))}, nil); err != nil {
			tb.Fatal(err)
		}
		return at
	}
	put("v0")
	var kvID string
	waitFor(tb, time.Minute, "the KV service in Docker", func() bool {
		s, _, err := b.docker.ServiceInspectWithRaw(ctx, kvName, swarm.ServiceInspectOptions{})
		kvID = s.ID
		return err == nil && slices.Contains(s.Spec.TaskTemplate.ContainerSpec.Env, "LOG_LEVEL=v0")
	})
	// The baselines: copies of the managed services' specs (their network
	// attachment, placement constraints and update policy, which the
	// Engine evaluates on every update), made directly and without the
	// ownership labels (the leader leaves them alone).
	zero, one := uint64(0), uint64(1)
	mk := func(from, name string, replicas *uint64) string {
		s, _, err := b.docker.ServiceInspectWithRaw(ctx, from, swarm.ServiceInspectOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		sp := s.Spec
		sp.Annotations = swarm.Annotations{Name: name}
		cs := *sp.TaskTemplate.ContainerSpec
		cs.Labels = nil
		cs.Env = []string{"LOG_LEVEL=d0"}
		sp.TaskTemplate.ContainerSpec = &cs
		sp.Mode = swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: replicas}}
		r, err := b.docker.ServiceCreate(ctx, sp, swarm.ServiceCreateOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		return r.ID
	}
	kvDirectID, scDirectID := mk(kvName, kvDirect, &zero), mk(b.service, scDirect, &one)
	scID := ""
	if s, _, err := b.docker.ServiceInspectWithRaw(ctx, b.service, swarm.ServiceInspectOptions{}); err == nil {
		scID = s.ID
	} else {
		tb.Fatal(err)
	}

	routes := updateEvents(tb, b, 2*changes+10, kvID, kvDirectID, scID, scDirectID)
	// Let the stream start before the first change.
	time.Sleep(300 * time.Millisecond)
	accepted := func(id, what string) time.Time {
		select {
		case at := <-routes[id]:
			return at
		case <-time.After(30 * time.Second):
			tb.Fatalf("%s: no service update event in 30 s", what)
			return time.Time{}
		}
	}
	direct := func(id string, change func(*swarm.ServiceSpec)) time.Duration {
		start := time.Now()
		s, _, err := b.docker.ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		change(&s.Spec)
		if _, err := b.docker.ServiceUpdate(ctx, id, s.Version, s.Spec, swarm.ServiceUpdateOptions{}); err != nil {
			tb.Fatal(err)
		}
		return accepted(id, "direct update").Sub(start)
	}

	kvSent := map[string]time.Time{}
	// Each change of either path takes about 250 ms with its baseline.
	profSeconds := max(1, changes/4)
	waitProfile := cpuProfile(tb, b.base, "latency-kv", profSeconds)
	for i := 1; i <= changes; i++ {
		val := fmt.Sprintf("v%d", i)
		time.Sleep(100 * time.Millisecond)
		at := put(val)
		kvSent[kvName+"="+val] = at
		kv.path = append(kv.path, accepted(kvID, "KV put "+val).Sub(at))
		time.Sleep(100 * time.Millisecond)
		kv.direct = append(kv.direct, direct(kvDirectID, func(s *swarm.ServiceSpec) {
			s.TaskTemplate.ContainerSpec.Env = []string{"LOG_LEVEL=" + val}
		}))
	}
	waitProfile()
	heapProfile(tb, b.base, "latency-kv")
	waitProfile = cpuProfile(tb, b.base, "latency-scale", profSeconds)
	url := b.base + "/v1/services/" + b.service + "/scale"
	var scaleAt []time.Time
	for i := 0; i < changes; i++ {
		dir, want := "up", uint64(2)
		if i%2 == 1 {
			dir, want = "down", 1
		}
		time.Sleep(100 * time.Millisecond)
		at := time.Now()
		if a := post(tb, url, testToken, `{"direction":"`+dir+`"}`); a.code != 200 {
			tb.Fatalf("scale %s: %s", dir, a)
		}
		scaleAt = append(scaleAt, at)
		scale.path = append(scale.path, accepted(scID, "scale "+dir).Sub(at))
		time.Sleep(100 * time.Millisecond)
		scale.direct = append(scale.direct, direct(scDirectID, func(s *swarm.ServiceSpec) {
			s.Mode.Replicated.Replicas = &want
		}))
	}
	waitProfile()
	heapProfile(tb, b.base, "latency-scale")
	// Anything else the daemon updated shows up within a second.
	time.Sleep(time.Second)
	kv.extra, scale.extra = len(routes[kvID]), len(routes[scID])

	// The daemon's side: when it sent each update, and how long it took.
	var kvWrites, scWrites []dockerWriteLine
	for _, w := range daemonWrites(b.daemon.Logs()) {
		if w.verb != "service update" {
			continue
		}
		switch w.object {
		case kvName:
			kvWrites = append(kvWrites, w)
		case b.service:
			scWrites = append(scWrites, w)
		}
	}
	pair := func(r *latencyResult, starts []time.Time, writes []dockerWriteLine) {
		for _, at := range starts {
			i := slices.IndexFunc(writes, func(w dockerWriteLine) bool { return w.sent.After(at) })
			if i < 0 {
				continue
			}
			r.before = append(r.before, writes[i].sent.Sub(at))
			r.took = append(r.took, writes[i].took)
		}
	}
	var kvStarts []time.Time
	for i := 1; i <= changes; i++ {
		kvStarts = append(kvStarts, kvSent[kvName+"="+fmt.Sprintf("v%d", i)])
	}
	pair(&kv, kvStarts, kvWrites)
	pair(&scale, scaleAt, scWrites)
	return kv, scale
}

// reportLatency prints the figures of one path beside its baseline.
func reportLatency(tb testing.TB, name string, r latencyResult) {
	tb.Helper()
	p50, p99 := percentile(r.path, 50), percentile(r.path, 99)
	d50, d99 := percentile(r.direct, 50), percentile(r.direct, 99)
	figure(tb, name+" to Docker accepted, p50", p50)
	figure(tb, name+" to Docker accepted, p99", p99)
	figure(tb, name+" baseline, direct inspect+update to Docker accepted, p50", d50)
	figure(tb, name+" baseline, direct inspect+update to Docker accepted, p99", d99)
	lab.Figure(tb, name+" to Docker accepted, p50 ratio to the direct inspect+update", fmt.Sprintf("%.2f", ms(p50)/ms(d50)))
	if len(r.before) > 0 {
		figure(tb, name+", the daemon's part before its update call, p50", percentile(r.before, 50))
		figure(tb, name+", the daemon's update call, p50", percentile(r.took, 50))
	}
	tb.Logf("%s: %d changes, %d update events beyond one per change", name, len(r.path), r.extra)
	if r.extra != 0 {
		tb.Errorf("%s: %d service update events beyond one per change", name, r.extra)
	}
}

func figure(tb testing.TB, name string, d time.Duration) {
	tb.Helper()
	lab.Figure(tb, name, d.Round(10*time.Microsecond).String())
}

// TestLeaderLatencyFigures prints the latency figures of 40 changes of
// each path, so that every test run shows them. The goals (KV put p50 at
// most 1.3× the direct inspect+update, scale 1.5×, scale p99 at most
// 100 ms) are figures to read, not assertions: the machine is shared.
// What is asserted: every change reached Docker, once.
func TestLeaderLatencyFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Consul and the machine's Engine")
	}
	n := 40
	if v := os.Getenv("SWARMVLAN_LATENCY_CHANGES"); v != "" {
		fmt.Sscan(v, &n)
	}
	kv, scale := latencyRun(t, n)
	reportLatency(t, "KV put of a Service change", kv)
	reportLatency(t, "scale request", scale)
}

// BenchmarkLeaderLatency is TestLeaderLatencyFigures over 200 changes of
// each path per iteration.
func BenchmarkLeaderLatency(b *testing.B) {
	for i := 0; i < b.N; i++ {
		kv, scale := latencyRun(b, 200)
		reportLatency(b, "KV put of a Service change", kv)
		reportLatency(b, "scale request", scale)
		b.ReportMetric(ms(percentile(kv.path, 50))/ms(percentile(kv.direct, 50)), "kv-p50-ratio")
		b.ReportMetric(ms(percentile(scale.path, 50))/ms(percentile(scale.direct, 50)), "scale-p50-ratio")
		b.ReportMetric(ms(percentile(scale.path, 99)), "scale-p99-ms")
	}
}
