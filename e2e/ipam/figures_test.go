package ipam

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/reconcile/ipam"
	"swarmvlan/spec"
	"swarmvlan/state"
)

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p*float64(len(s)-1) + 0.5)
	return s[i]
}

// startTimes times n container starts on h1, alternating between a local
// macvlan network on Docker's default IPAM with an ip-range (as a chunk)
// and one on swarmvlan's plugin (the VLAN's pool), the two on the same
// parent and subnet one after the other, so both see the same load.
func startTimes(t *testing.T, s *bed.Bed, n int) (chunks, cluster []time.Duration) {
	d := s.Docker(s.H1)
	ctx := s.Ctx
	mk := func(name string, ipamCfg *network.IPAM) string {
		var resp network.CreateResponse
		// The VLAN's own network leaves h1 once its last task there is
		// gone; until then the parent is taken.
		s.WaitFor("network "+name, 2*time.Minute, func(ctx context.Context) error {
			var err error
			resp, err = d.NetworkCreate(ctx, name, network.CreateOptions{Driver: "macvlan",
				Options: map[string]string{"parent": lab.TrunkInterface}, IPAM: ipamCfg})
			return err
		})
		t.Cleanup(func() { _ = d.NetworkRemove(context.Background(), resp.ID) })
		return resp.ID
	}
	nets := map[string]string{
		"chunks": mk("bench-chunks", &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: subnet, IPRange: "172.80.0.32/27", Gateway: gateway}}}),
	}
	run := func(netName string) time.Duration {
		c, err := d.ContainerCreate(ctx, &container.Config{Image: lab.ImageTestApp, Cmd: []string{"-listen", ":8080"}},
			&container.HostConfig{NetworkMode: container.NetworkMode(netName)}, nil, nil, "")
		if err != nil {
			t.Fatalf("create on %s: %v", netName, err)
		}
		defer func() { _ = d.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true}) }()
		begin := time.Now()
		if err := d.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
			t.Fatalf("start on %s: %v", netName, err)
		}
		return time.Since(begin)
	}
	// One network on the parent at a time: Engine 20.10 refuses a second
	// macvlan network's container on a parent in use.
	for range n {
		chunks = append(chunks, run("bench-chunks"))
	}
	_ = d.NetworkRemove(ctx, nets["chunks"])
	mk("bench-cluster", &network.IPAM{Driver: spec.IPAMDriver, Options: map[string]string{spec.IPAMOptVLAN: bed.VLANName},
		Config: []network.IPAMConfig{{Subnet: subnet, Gateway: gateway}}})
	for range n {
		cluster = append(cluster, run("bench-cluster"))
	}
	return chunks, cluster
}

// checkFigures prints the added container start time of mode cluster
// against mode chunks on h1, and the lease requests per second the lab's
// three Consul servers sustain through the plugin's handler.
func checkFigures(t *testing.T, s *bed.Bed) {
	s.Apply(vlanDoc("cluster"))
	s.WaitFor("vlan ready on every host", 2*time.Minute, func(ctx context.Context) error { return vlanReady(ctx, s) })
	const n = 20
	ch, cl := startTimes(t, s, n)
	p50c, p99c := percentile(ch, 0.5), percentile(ch, 0.99)
	p50l, p99l := percentile(cl, 0.5), percentile(cl, 0.99)
	lab.Figure(t, "ipam container_start", fmt.Sprintf("chunks p50=%s p99=%s cluster p50=%s p99=%s added p50=%s p99=%s ratio p50=%.2f p99=%.2f (n=%d each, h1, one run)",
		p50c.Round(time.Millisecond), p99c.Round(time.Millisecond), p50l.Round(time.Millisecond), p99l.Round(time.Millisecond),
		(p50l-p50c).Round(time.Millisecond), (p99l-p99c).Round(time.Millisecond), float64(p50l)/float64(p50c), float64(p99l)/float64(p99c), n))

	// Lease throughput: the plugin's RequestAddress handler over a real
	// store on h1's agent (a server of three), on a /20 so the pool does
	// not run out; each request is a list and a check-and-set.
	store, err := state.New(state.Config{Address: s.H1.ConsulAddr})
	if err != nil {
		t.Fatal(err)
	}
	doc := ("apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: bench}\nspec: {trunk: eth0, subnet: 172.90.0.0/20, rangePlan: {mode: cluster}}")
	o, err := spec.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	v := o.(*spec.VLAN)
	p := ipam.New(ipam.Config{Leases: store, VLAN: func(string) (*spec.VLAN, bool) { return v, true },
		VLANs: func() []*spec.VLAN { return []*spec.VLAN{v} }, Identity: func() (string, string) { return "bench-node", "bench" }})
	h := p.Handler()
	const workers, total = 8, 800
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ok.Load()+failed.Load() < total {
				if e := requestAddress(h, spec.PoolID("bench", netip.MustParsePrefix("172.90.0.0/20"))); e != "" {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(begin)
	st := p.Stats()
	lab.Figure(t, "ipam lease_requests_per_second", fmt.Sprintf("%.0f (%d leased, %d failed, %d check-and-set conflicts, %d workers, 3 Consul servers, via h1's agent)",
		float64(ok.Load())/took.Seconds(), ok.Load(), failed.Load(), st.Conflicts.Load(), workers))
	if failed.Load() > 0 {
		t.Errorf("%d lease requests failed", failed.Load())
	}
	_, _ = s.Consul(s.H1).KV().DeleteTree(bed.KVPrefix+"state/leases/bench/", nil)
}

// requestAddress posts one RequestAddress to h and returns its Err.
func requestAddress(h http.Handler, pool string) string {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/IpamDriver.RequestAddress", strings.NewReader(`{"PoolID":"`+pool+`"}`)))
	if rec.Code != http.StatusOK {
		return rec.Body.String()
	}
	return ""
}
