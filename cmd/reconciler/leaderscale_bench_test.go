package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// The leader at scale: many managed services (replicas 0) and simulated
// nodes, on the built daemon against a real Consul agent, through a proxy
// that counts the daemon's requests, and the machine's Engine.

// scaleFigures measures the leader with services managed services and
// nodes simulated node reports in KV: how long creating them takes, the
// daemon's memory, a no-op resync pass, the Consul requests of an idle
// leader, and the cold start of a new leader over them.
func scaleFigures(tb testing.TB, services, nodes int, idleWindow time.Duration) {
	var reqs atomic.Int64
	var proxyAddr string
	b := startSwarmBedWith(tb, 1, 1, 2, swarmBedOptions{
		consulAddr: func(agent string) string {
			proxyAddr = countingConsulProxy(tb, agent, &reqs)
			return proxyAddr
		},
		// The periodic pass is what is timed; 20 s keeps it in view.
		args: []string{"--resync", "20s"},
	})
	ctx := context.Background()
	suffix := b.service[len("scweb"):]
	prefix := "at" + suffix + "x"
	tb.Cleanup(func() { removeByPrefix(tb, b, prefix) })

	// Simulated nodes: reports of ready hosts, held by one session as the
	// host roles' sessions would hold them (not through the proxy: they
	// are other processes' requests).
	cli := b.agent.Client(tb)
	sess, _, err := cli.Session().Create(&api.SessionEntry{TTL: "3600s", Behavior: api.SessionBehaviorDelete}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Session().Destroy(sess, nil) })
	for i := 0; i < nodes; i++ {
		node := fmt.Sprintf("sim%s%03d", suffix, i)
		report, _ := json.Marshal(map[string]any{"hostname": node, "vlans": map[string]any{b.vlan: map[string]any{"ready": true}}})
		if ok, _, err := cli.KV().Acquire(&api.KVPair{Key: b.store.NodeKey(node), Value: report, Session: sess}, nil); err != nil || !ok {
			tb.Fatalf("node report %s: %v %v", node, ok, err)
		}
	}

	docs := make([]state.SpecDoc, services)
	for i := range docs {
		name := fmt.Sprintf("%s%05d", prefix, i)
		docs[i] = state.SpecDoc{Key: b.store.SpecKey(spec.KindService, name), Value: []byte(latencyDoc(name, b.vlan, "x"))}
	}
	start := time.Now()
	if _, err := b.store.Apply(ctx, docs, state.ApplyOptions{}); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("put %d Service documents in %v", services, time.Since(start).Round(time.Millisecond))
	waitFor(tb, 2*time.Hour, fmt.Sprintf("the leader to create %d services", services), func() bool {
		return countByPrefix(tb, b, prefix) == services
	})
	created := time.Since(start)
	figure(tb, fmt.Sprintf("leader at %d services, put and create them all (Engine 20.10)", services), created)
	lab.Figure(tb, fmt.Sprintf("leader at %d services, services created per second", services), fmt.Sprintf("%.1f", float64(services)/created.Seconds()))

	// Settled: the per-service statuses written, the queue empty.
	metrics := b.base + "/metrics"
	waitFor(tb, 10*time.Minute, "the leader's queue to drain", func() bool {
		m := sample(scrape(tb, metrics), "swarmvlan_queue_depth", "controller", "leader")
		return m != nil && m.GetGauge().GetValue() == 0
	})
	time.Sleep(5 * time.Second)

	// A no-op resync pass: the next periodic ServiceResync, from the
	// daemon's own histogram.
	count, sum := resyncHistogram(tb, metrics)
	// A profile over the next pass (one every 20 s).
	waitProfile := cpuProfile(tb, b.base, fmt.Sprintf("scale%d-resync", services), 21)
	waitFor(tb, time.Minute, "a periodic resync pass", func() bool {
		c, _ := resyncHistogram(tb, metrics)
		return c > count
	})
	waitProfile()
	c2, s2 := resyncHistogram(tb, metrics)
	pass := time.Duration((s2 - sum) / float64(c2-count) * float64(time.Second))
	figure(tb, fmt.Sprintf("leader at %d services and %d nodes, no-op resync pass", services, nodes), pass)
	// Its baseline: the one call the pass cannot do without, the list of
	// the managed services, made by a client (the median of three).
	var lists []time.Duration
	for range 3 {
		t0 := time.Now()
		if _, err := b.docker.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("label", spec.LabelManaged+"=true"))}); err != nil {
			tb.Fatal(err)
		}
		lists = append(lists, time.Since(t0))
	}
	slices.Sort(lists)
	figure(tb, fmt.Sprintf("leader at %d services, the managed services' ServiceList by a client (baseline, median of 3)", services), lists[1])
	lab.Figure(tb, fmt.Sprintf("leader at %d services, no-op resync pass / that list", services), fmt.Sprintf("%.2f", pass.Seconds()/lists[1].Seconds()))

	// Idle: between two resync passes nothing should go to Consul but the
	// blocking queries' renewals.
	before, at := reqs.Load(), time.Now()
	time.Sleep(idleWindow)
	rate := float64(reqs.Load()-before) / time.Since(at).Seconds()
	lab.Figure(tb, fmt.Sprintf("leader at %d services and %d nodes, Consul requests per second while idle (a resync every 20 s included)", services, nodes), fmt.Sprintf("%.3f", rate))
	rss, hwm := procMemory(tb, b.daemon.cmd.Process.Pid)
	heapProfile(tb, b.base, fmt.Sprintf("scale%d-idle", services))
	lab.Figure(tb, fmt.Sprintf("leader at %d services and %d nodes, RSS", services, nodes), fmt.Sprintf("%.1f MB (peak %.1f MB)", float64(rss)/(1<<20), float64(hwm)/(1<<20)))

	// Cold start: the leader stops (its lock released), a new process
	// starts and takes over; from its start to its first full pass done
	// (the batch pass over every service, and each one it handed to its
	// own reconcile).
	b.daemon.cmd.Process.Signal(syscall.SIGTERM)
	b.daemon.cmd.Wait()
	began := time.Now()
	next, addr := startRunHTTP(tb, proxyAddr, "next", append([]string{tokenFile(tb, testToken), "--docker-host", "", "--log-level", "info", "--resync", "1h"}, pprofArgs()...)...)
	nextMetrics := "http://" + addr + "/metrics"
	waitProfile = cpuProfile(tb, "http://"+addr, fmt.Sprintf("scale%d-coldstart", services), 30)
	waitFor(tb, 30*time.Minute, "the new leader's first pass over every service", func() bool {
		if !next.leading() {
			return false
		}
		fams := scrape(tb, nextMetrics)
		done := sample(fams, "swarmvlan_reconcile_duration_seconds", "kind", "ServiceResync")
		q := sample(fams, "swarmvlan_queue_depth", "controller", "leader")
		return done != nil && q != nil && done.GetHistogram().GetSampleCount() >= 1 && q.GetGauge().GetValue() == 0
	})
	cold := time.Since(began)
	figure(tb, fmt.Sprintf("leader at %d services, cold start of a new leader to its first pass done", services), cold)
	waitProfile()
	heapProfile(tb, "http://"+addr, fmt.Sprintf("scale%d-coldstart", services))
	rss, hwm = procMemory(tb, next.cmd.Process.Pid)
	lab.Figure(tb, fmt.Sprintf("leader at %d services and %d nodes, the new leader's RSS after its first pass", services, nodes), fmt.Sprintf("%.1f MB (peak %.1f MB)", float64(rss)/(1<<20), float64(hwm)/(1<<20)))
	if n := countByPrefix(tb, b, prefix); n != services {
		tb.Errorf("%d services after the new leader's pass, want %d", n, services)
	}
}

// countingConsulProxy serves a reverse proxy to agent that counts every
// request, and returns its host:port.
func countingConsulProxy(tb testing.TB, agent string, n *atomic.Int64) string {
	u, _ := url.Parse("http://" + agent)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// resyncHistogram is the count and sum of the ServiceResync passes.
func resyncHistogram(tb testing.TB, url string) (uint64, float64) {
	m := sample(scrape(tb, url), "swarmvlan_reconcile_duration_seconds", "kind", "ServiceResync")
	if m == nil {
		return 0, 0
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// procMemory reads VmRSS and VmHWM of pid, in bytes.
func procMemory(tb testing.TB, pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

func listByPrefix(tb testing.TB, b *swarmBed, prefix string) []swarm.Service {
	svcs, err := b.docker.ServiceList(context.Background(), swarm.ServiceListOptions{Filters: filters.NewArgs(
		filters.Arg("label", spec.LabelManaged+"=true"), filters.Arg("name", prefix))})
	if err != nil {
		tb.Fatal(err)
	}
	return svcs
}

func countByPrefix(tb testing.TB, b *swarmBed, prefix string) int {
	n := 0
	for _, s := range listByPrefix(tb, b, prefix) {
		if strings.HasPrefix(s.Spec.Name, prefix) {
			n++
		}
	}
	return n
}

// removeByPrefix removes the services named prefix..., eight at a time,
// after the daemons are stopped (cleanups run last first).
func removeByPrefix(tb testing.TB, b *swarmBed, prefix string) {
	start := time.Now()
	svcs := listByPrefix(tb, b, prefix)
	work := make(chan string)
	done := make(chan struct{})
	for range 8 {
		go func() {
			for id := range work {
				b.docker.ServiceRemove(context.Background(), id)
			}
			done <- struct{}{}
		}()
	}
	for _, s := range svcs {
		if strings.HasPrefix(s.Spec.Name, prefix) {
			work <- s.ID
		}
	}
	close(work)
	for range 8 {
		<-done
	}
	tb.Logf("removed %d services in %v", len(svcs), time.Since(start).Round(time.Millisecond))
}

// TestLeaderAtScaleFigures runs scaleFigures at a size CI affords (500
// services, 200 nodes; SWARMVLAN_SCALE_SERVICES changes it) and prints
// the figures; `make bench-scale` runs BenchmarkLeaderAtScale at 10,000.
// Asserted: every service is created, and none is lost by the new leader.
func TestLeaderAtScaleFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Consul and the machine's Engine")
	}
	n := 500
	if v := os.Getenv("SWARMVLAN_SCALE_SERVICES"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	scaleFigures(t, n, 200, 30*time.Second)
}

// BenchmarkLeaderAtScale is scaleFigures at 10,000 services and 200
// nodes (SWARMVLAN_SCALE_SERVICES changes the count).
func BenchmarkLeaderAtScale(b *testing.B) {
	n := 10000
	if v := os.Getenv("SWARMVLAN_SCALE_SERVICES"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	for i := 0; i < b.N; i++ {
		scaleFigures(b, n, 200, 60*time.Second)
	}
}
