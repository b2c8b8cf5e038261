package cluster

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"swarmvlan/lab"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
)

// serviceBenchWorkers bounds concurrent API calls while setting up and
// tearing down: the engine shares two cores with everything else.
const serviceBenchWorkers = 8

// serviceBenchParallel runs f for 0..n-1 on a few workers and returns the
// first error.
func serviceBenchParallel(n int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range serviceBenchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// serviceBenchRemove removes services by ID when the benchmark ends.
func serviceBenchRemove(b *testing.B, cli *client.Client, ids *[]string, mu *sync.Mutex) {
	b.Cleanup(func() {
		mu.Lock()
		list := append([]string(nil), (*ids)...)
		mu.Unlock()
		start := time.Now()
		err := serviceBenchParallel(len(list), func(i int) error {
			if err := cli.ServiceRemove(context.Background(), list[i]); err != nil && !engine.IsNotFound(err) {
				return err
			}
			return nil
		})
		if err != nil {
			b.Errorf("cleanup: remove services: %v", err)
		}
		b.Logf("removed %d services in %v", len(list), time.Since(start).Round(time.Millisecond))
	})
}

// BenchmarkNoopResync1000 times one resync pass over 1,000 managed services
// (replicas 0) that already match their documents: one ServiceList, a plan
// per service, no update. Run with -benchtime=Nx to choose the passes.
func BenchmarkNoopResync1000(b *testing.B) {
	const n = 1000
	d, cli := enginetest.Engine(b)
	ctx := context.Background()
	prefix := "svtbench" + enginetest.Suffix(b) + "-"

	ins := make([]ServiceInput, n)
	for i := range ins {
		ins[i] = ServiceInput{Service: &spec.Service{
			Metadata: spec.ObjectMeta{Name: fmt.Sprintf("%s%04d", prefix, i), Labels: map[string]string{"bench": "noop-resync"}},
			Spec: spec.ServiceSpec{
				Image:   lab.ImageTestApp,
				Command: []string{"/app"},
				Env:     map[string]string{"INDEX": fmt.Sprint(i)},
				Update:  &spec.UpdatePolicy{Order: "start-first"},
				Restart: &spec.RestartPolicy{Condition: "on-failure"},
			},
		}, Replicas: 0}
	}
	var (
		mu  sync.Mutex
		ids []string
	)
	serviceBenchRemove(b, cli, &ids, &mu)
	start := time.Now()
	err := serviceBenchParallel(n, func(i int) error {
		want, err := BuildServiceSpec(ins[i])
		if err != nil {
			return err
		}
		id, err := d.ServiceCreate(ctx, want)
		if err != nil {
			return err
		}
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return nil
	})
	if err != nil {
		b.Fatalf("create services: %v", err)
	}
	b.Logf("created %d services in %v", n, time.Since(start).Round(time.Millisecond))

	before := d.Calls()
	passes := 0
	var last ServiceResyncResult
	for b.Loop() {
		res, err := ServiceResync(ctx, d, ins)
		if err != nil {
			b.Fatal(err)
		}
		last = res
		passes++
	}
	after := d.Calls()
	if last.Unchanged != n || last.Updated != 0 || last.Created != 0 {
		b.Fatalf("last pass: created %d, updated %d, unchanged %d; want 0, 0, %d", last.Created, last.Updated, last.Unchanged, n)
	}
	per := func(m string) float64 { return float64(after[m]-before[m]) / float64(passes) }
	if per("ServiceUpdate") != 0 || per("ServiceList") != 1 {
		b.Errorf("per pass: %v ServiceUpdate (want 0), %v ServiceList (want 1)", per("ServiceUpdate"), per("ServiceList"))
	}
	b.ReportMetric(per("ServiceUpdate"), "ServiceUpdate/op")
	b.ReportMetric(per("ServiceList"), "ServiceList/op")
	b.ReportMetric(per("ServiceInspect")+per("TaskList")+per("NetworkList")+per("SecretList")+per("ContainerList"), "otherAPI/op")
}

// BenchmarkServiceCreateDirect measures ServiceCreate latency through the
// Docker API alone (replicas 0, so no task is scheduled): the baseline for
// an end-to-end comparison. Run with -benchtime=50x for 50 creates.
func BenchmarkServiceCreateDirect(b *testing.B) {
	_, cli := enginetest.Engine(b)
	ctx := context.Background()
	prefix := "svtcreate" + enginetest.Suffix(b) + "-"
	var (
		mu  sync.Mutex
		ids []string
	)
	serviceBenchRemove(b, cli, &ids, &mu)
	var lat []time.Duration
	zero := uint64(0)
	i := 0
	for b.Loop() {
		s := swarm.ServiceSpec{
			Annotations:  swarm.Annotations{Name: fmt.Sprintf("%s%04d", prefix, i)},
			TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: lab.ImageTestApp, Command: []string{"/app"}}},
			Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &zero}},
		}
		i++
		t0 := time.Now()
		resp, err := cli.ServiceCreate(ctx, s, swarm.ServiceCreateOptions{})
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		ids = append(ids, resp.ID)
		mu.Unlock()
	}
	sort.Slice(lat, func(a, c int) bool { return lat[a] < lat[c] })
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.Logf("%d creates: p50 %v, p99 %v, max %v", len(lat), pct(0.50), pct(0.99), lat[len(lat)-1])
}
