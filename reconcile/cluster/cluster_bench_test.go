package cluster_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// BenchmarkKVPutToDocker measures the time from `consul kv put` of a
// changed Service document to Docker having accepted the update (the
// service's spec carries the new value), over 100 changes, beside the same
// update made directly through the Docker API in the same run. It reports
// p50/p99 of both and the ratio of the medians. Changes are 100 ms apart.
func BenchmarkKVPutToDocker(b *testing.B) {
	suffix := enginetest.Suffix(b)
	bed := startLeaderTestBed(b)
	ctx := context.Background()
	vlan, _, _ := leaderTestReadyVLAN(b, bed, suffix)
	svcName, direct := "lat"+suffix, "dir"+suffix
	b.Cleanup(func() {
		bed.stop()
		cluster.RemoveService(ctx, bed.docker, svcName)
	})
	const changes = 100
	bed.put(b, spec.KindService, svcName, leaderTestService(svcName, vlan, 0, "v0"))
	waitEnv := func(name, want string, deadline time.Duration) time.Time {
		end := time.Now().Add(deadline)
		for time.Now().Before(end) {
			s, err := bed.docker.ServiceInspect(ctx, name)
			if err == nil && contains(s.Spec.TaskTemplate.ContainerSpec.Env, want) {
				return time.Now()
			}
			time.Sleep(time.Millisecond)
		}
		b.Fatalf("service %s never got %s", name, want)
		return time.Time{}
	}
	waitEnv(svcName, "LOG_LEVEL=v0", time.Minute)

	// The same service made directly and without the ownership label (the
	// leader removes managed services that have no document), the baseline.
	docs, err := reconcile.ParseDocuments([]byte(leaderTestService(direct, vlan, 0, "d0")))
	if err != nil {
		b.Fatal(err)
	}
	ss, err := cluster.BuildServiceSpec(cluster.ServiceInput{Service: docs[0].Object.(*spec.Service), Replicas: 0})
	if err != nil {
		b.Fatal(err)
	}
	delete(ss.Labels, spec.LabelManaged)
	if _, err := bed.docker.ServiceCreate(ctx, ss); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		bed.stop()
		if s, err := bed.docker.ServiceInspect(ctx, direct); err == nil {
			bed.docker.ServiceRemove(ctx, s.ID)
		}
	})

	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		var viaKV, viaAPI []time.Duration
		for i := 1; i <= changes; i++ {
			val := fmt.Sprintf("n%di%d", n, i)
			// A change arriving after a quiet spell, as an edit does: back
			// to back, changes would measure the watch's 50 ms floor
			// between queries (a rate limit), not the latency.
			time.Sleep(100 * time.Millisecond)
			start := time.Now()
			bed.put(b, spec.KindService, svcName, leaderTestService(svcName, vlan, 0, val))
			viaKV = append(viaKV, waitEnv(svcName, "LOG_LEVEL="+val, 30*time.Second).Sub(start))

			cur, err := bed.docker.ServiceInspect(ctx, direct)
			if err != nil {
				b.Fatal(err)
			}
			upd := cur.Spec
			upd.TaskTemplate.ContainerSpec.Env = []string{"LOG_LEVEL=" + val}
			start = time.Now()
			if err := bed.docker.ServiceUpdate(ctx, cur.ID, cur.Version, upd); err != nil {
				b.Fatal(err)
			}
			viaAPI = append(viaAPI, time.Since(start))
		}
		kv50, kv99 := percentiles(viaKV)
		api50, api99 := percentiles(viaAPI)
		b.ReportMetric(ms(kv50), "kv-p50-ms")
		b.ReportMetric(ms(kv99), "kv-p99-ms")
		b.ReportMetric(ms(api50), "api-p50-ms")
		b.ReportMetric(ms(api99), "api-p99-ms")
		b.ReportMetric(float64(kv50)/float64(api50), "p50-ratio")
	}
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[(len(s)*99+99)/100-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkLeaderNoopResync1000 puts 1,000 Service documents (replicas 0)
// in Consul, lets the leader create them, then times the leader's periodic
// resync pass when nothing changed, and reports the Docker calls it made:
// no ServiceUpdate at all, and one ServiceList.
func BenchmarkLeaderNoopResync1000(b *testing.B) {
	const n = 1000
	suffix := enginetest.Suffix(b)
	bed := startLeaderTestBed(b, func(c *cluster.Config) { c.Resync = time.Hour; c.Sweep = time.Hour })
	ctx := context.Background()
	vlan, _, _ := leaderTestReadyVLAN(b, bed, suffix)
	prefix := "nr" + suffix + "x"
	var docs []state.SpecDoc
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s%04d", prefix, i)
		docs = append(docs, state.SpecDoc{Key: bed.store.SpecKey(spec.KindService, name), Value: []byte(leaderTestService(name, vlan, 0, "x"))})
	}
	b.Cleanup(func() {
		bed.stop()
		svcs, _ := cluster.ListManagedServices(ctx, bed.docker)
		for name, s := range svcs {
			if strings.HasPrefix(name, prefix) {
				bed.docker.ServiceRemove(ctx, s.ID)
			}
		}
	})
	start := time.Now()
	if _, err := bed.store.Apply(ctx, docs, state.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	enginetest.Poll(b, 10*time.Minute, "the leader to create 1,000 services", func() (bool, string) {
		svcs, err := cluster.ListManagedServices(ctx, bed.docker)
		if err != nil {
			return false, err.Error()
		}
		made := 0
		for name := range svcs {
			if strings.HasPrefix(name, prefix) {
				made++
			}
		}
		return made == n, fmt.Sprintf("%d made", made)
	})
	b.Logf("applied and created %d services in %v", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // let the per-service status reconciles settle

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		before := bed.docker.Calls()
		t0 := time.Now()
		out := cluster.ResyncServicesForTest(ctx, bed.cluster)
		took := time.Since(t0)
		if out.Err() != nil {
			b.Fatal(out.Err())
		}
		after := bed.docker.Calls()
		b.ReportMetric(ms(took), "pass-ms")
		b.ReportMetric(float64(after["ServiceUpdate"]-before["ServiceUpdate"]), "ServiceUpdate")
		b.ReportMetric(float64(after["ServiceList"]-before["ServiceList"]), "ServiceList")
		b.ReportMetric(float64(after["ServiceCreate"]-before["ServiceCreate"]), "ServiceCreate")
	}
}
