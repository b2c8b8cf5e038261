package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/host"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// swarmBed is a manager daemon (the built binary) against a real Consul
// agent and the machine's Engine in swarm mode, with one VLAN ready on this
// node and one scalable service converged on it.
type swarmBed struct {
	docker  *client.Client
	base    string // http://addr of the daemon
	service string
	vlan    string
	kv      *api.KV
	store   *state.Store
	daemon  *proc
	agent   *lab.ConsulAgent
}

// startSwarmBed builds the test image, puts a VLAN on a fresh veth trunk,
// plays this node's host role (config network, ready report: the host role
// is not what is under test), and puts a service with scaling bounds
// min..max, replicas start, no cooldown. It returns once Docker runs the
// service at start replicas. Everything it makes is removed at the end,
// after the daemon is stopped so it cannot re-create anything.
func startSwarmBed(t testing.TB, start, min, max int) *swarmBed {
	t.Helper()
	return startSwarmBedWith(t, start, min, max, swarmBedOptions{})
}

// swarmBedOptions change how startSwarmBedWith runs the daemon.
type swarmBedOptions struct {
	// consulAddr, if set, is the address the daemon is given for the
	// agent at agentAddr (a counting proxy in front of it).
	consulAddr func(agentAddr string) string
	// args are extra flags of the daemon.
	args []string
}

// startSwarmBedWith is startSwarmBed with the daemon run as opts say.
func startSwarmBedWith(t testing.TB, start, min, max int, opts swarmBedOptions) *swarmBed {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a veth pair as macvlan parent")
	}
	cli := lab.EnsureSwarm(t)
	ctx := context.Background()
	if _, err := lab.BuildTestImage(ctx, ""); err != nil {
		t.Fatal(err)
	}
	info, err := cli.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	b := make([]byte, 3)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	vlan, service := "sc"+suffix, "scweb"+suffix
	trunk := testVeth(t, "svs"+suffix)
	// Registered before the daemon starts, so they run after it is killed.
	t.Cleanup(func() {
		if err := cluster.RemoveService(ctx, d, service); err != nil {
			t.Errorf("remove service %s: %v", service, err)
		}
		// Tasks leave the network a while after the service is gone, and
		// the config network is in use until the swarm network is gone.
		for _, remove := range []func(context.Context, engine.Docker, string) (state.NetworkStatus, error){
			cluster.RemoveSwarmNetwork, host.RemoveConfigNetwork,
		} {
			deadline := time.Now().Add(60 * time.Second)
			for {
				st, err := remove(ctx, d, vlan)
				if err == nil && st.State == state.NetworkAbsent {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("remove network %s: %s %s %v", st.Name, st.State, st.Message, err)
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	})

	agent := lab.StartConsul(t)
	kv := agent.Client(t).KV()
	store, err := state.New(state.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	daemonConsul := agent.Addr
	if opts.consulAddr != nil {
		daemonConsul = opts.consulAddr(agent.Addr)
	}
	args := append([]string{tokenFile(t, testToken), "--docker-host", "", "--log-level", "info"}, opts.args...)
	daemon, addr := startRunHTTP(t, daemonConsul, "bed", append(args, pprofArgs()...)...)

	put := func(kind, name, doc string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: store.SpecKey(kind, name), Value: []byte(doc)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put(spec.KindVLAN, vlan, fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: %s
spec:
  trunk: %s
  subnet: 172.71.0.0/16
  gateway: 172.71.0.1
  rangePlan:
    chunkPrefix: 24
    exclude: [172.71.0.0/24]
`, vlan, trunk))
	var chunk netip.Prefix
	waitFor(t, 30*time.Second, "this node's chunk", func() bool {
		have, _, err := store.Allocations(ctx, vlan)
		if a, ok := have[info.Swarm.NodeID]; err == nil && ok {
			chunk = netip.MustParsePrefix(a.Chunk)
			return true
		}
		return false
	})
	subnet := netip.MustParsePrefix("172.71.0.0/16")
	if _, err := host.EnsureConfigNetwork(ctx, d, host.ConfigNetwork{VLAN: vlan, Driver: "macvlan", Parent: trunk, Mode: "bridge",
		Subnet: subnet, Gateway: netip.MustParseAddr("172.71.0.1"), IPRange: chunk, ShimAddr: spec.ShimAddress(subnet, chunk)}); err != nil {
		t.Fatal(err)
	}
	report, _ := json.Marshal(map[string]any{"hostname": info.Name, "vlans": map[string]any{vlan: map[string]any{"ready": true}}})
	reg, err := store.RegisterNode(ctx, info.Swarm.NodeID, report, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })

	put(spec.KindService, service, fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata:
  name: %s
spec:
  image: %s
  args: ["-listen", ":8080"]
  networks: [%s]
  replicas: %d
  scaling: {min: %d, max: %d}
`, service, lab.ImageTestApp, vlan, start, min, max))
	bed := &swarmBed{docker: cli, base: "http://" + addr, service: service, vlan: vlan, kv: kv, store: store, daemon: daemon, agent: agent}
	waitFor(t, 60*time.Second, "the service in Docker", func() bool { return bed.replicas(t) == start })
	return bed
}

// replicas is the service's replica count in Docker (-1 while it is absent).
func (b *swarmBed) replicas(t testing.TB) int {
	s, _, err := b.docker.ServiceInspectWithRaw(context.Background(), b.service, swarm.ServiceInspectOptions{})
	if err != nil || s.Spec.Mode.Replicated == nil || s.Spec.Mode.Replicated.Replicas == nil {
		return -1
	}
	return int(*s.Spec.Mode.Replicated.Replicas)
}

// testVeth creates a veth pair (this kernel has no 802.1Q, so a veth end
// stands in for the VLAN sub-interface) and deletes it at the end.
func testVeth(t testing.TB, name string) string {
	t.Helper()
	a, b := name+"a", name+"b"
	if out, err := exec.Command("ip", "link", "add", a, "type", "veth", "peer", "name", b).CombinedOutput(); err != nil {
		t.Skipf("cannot create a veth pair (%v): %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", a).CombinedOutput(); err != nil {
			t.Errorf("delete veth %s: %v: %s", a, err, out)
		}
	})
	for _, l := range []string{a, b} {
		if out, err := exec.Command("ip", "link", "set", l, "up").CombinedOutput(); err != nil {
			t.Fatalf("set %s up: %v: %s", l, err, out)
		}
	}
	return a
}

// TestScaleAPIDrivesSwarm: a scale request to the daemon's HTTP API changes
// the Swarm service's replica count, within the bounds.
func TestScaleAPIDrivesSwarm(t *testing.T) {
	bed := startSwarmBed(t, 1, 1, 3)
	url := bed.base + "/v1/services/" + bed.service + "/scale"
	steps := []struct {
		body string
		code int
		want int // replicas in Docker afterwards
	}{
		{`{"direction":"up"}`, 200, 2},
		{`{"replicas":3}`, 200, 3},
		{`{"direction":"up"}`, 409, 3}, // at the maximum: Docker keeps 3
		{`{"direction":"down"}`, 200, 2},
	}
	for i, s := range steps {
		start := time.Now()
		a := post(t, url, testToken, s.body)
		if a.code != s.code {
			t.Fatalf("step %d %s: %s, want %d", i, s.body, a, s.code)
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("Docker at %d replicas", s.want), func() bool { return bed.replicas(t) == s.want })
		t.Logf("%s: %d replicas in Docker after %v", s.body, s.want, time.Since(start).Round(time.Millisecond))
	}
	// A refused request must not have moved Docker at all in between.
	if n := bed.replicas(t); n != 2 {
		t.Fatalf("Docker at %d replicas, want 2", n)
	}
}

// BenchmarkScaleRequestToSwarm measures a scale request's way from the HTTP
// API to Swarm (POST, check-and-set in Consul, the leader's watch, the
// service update) until ServiceInspect shows the new count, beside a direct
// ServiceUpdate of the replica count through the Docker API on an
// unmanaged service in the same run, and reports both and their ratio.
func BenchmarkScaleRequestToSwarm(b *testing.B) {
	bed := startSwarmBed(b, 1, 1, 2)
	ctx := context.Background()

	direct := "scdirect" + bed.service[len("scweb"):]
	one := uint64(1)
	resp, err := bed.docker.ServiceCreate(ctx, swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: direct},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: lab.ImageTestApp, Args: []string{"-listen", ":8080"}}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
	}, swarm.ServiceCreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bed.docker.ServiceRemove(ctx, resp.ID) })

	url := bed.base + "/v1/services/" + bed.service + "/scale"
	var viaAPI, viaDocker []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir, want := "up", 2
		if i%2 == 1 {
			dir, want = "down", 1
		}
		start := time.Now()
		if a := post(b, url, testToken, `{"direction":"`+dir+`"}`); a.code != 200 {
			b.Fatalf("%s: %s", dir, a)
		}
		for bed.replicas(b) != want {
			if time.Since(start) > 30*time.Second {
				b.Fatalf("Docker not at %d replicas after 30s", want)
			}
			time.Sleep(2 * time.Millisecond)
		}
		viaAPI = append(viaAPI, time.Since(start))

		start = time.Now()
		s, _, err := bed.docker.ServiceInspectWithRaw(ctx, resp.ID, swarm.ServiceInspectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n := uint64(want)
		s.Spec.Mode.Replicated.Replicas = &n
		if _, err := bed.docker.ServiceUpdate(ctx, resp.ID, s.Version, s.Spec, swarm.ServiceUpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		for {
			s, _, err := bed.docker.ServiceInspectWithRaw(ctx, resp.ID, swarm.ServiceInspectOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if *s.Spec.Mode.Replicated.Replicas == n {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		viaDocker = append(viaDocker, time.Since(start))
	}
	b.StopTimer()
	apiP50, apiP99 := percentile(viaAPI, 50), percentile(viaAPI, 99)
	dockerP50, dockerP99 := percentile(viaDocker, 50), percentile(viaDocker, 99)
	b.ReportMetric(ms(apiP50), "api-p50-ms")
	b.ReportMetric(ms(apiP99), "api-p99-ms")
	b.ReportMetric(ms(dockerP50), "docker-p50-ms")
	b.ReportMetric(ms(dockerP99), "docker-p99-ms")
	b.ReportMetric(ms(apiP50)/ms(dockerP50), "p50-ratio")
	b.Logf("%d requests: scale API p50 %v p99 %v; direct ServiceUpdate p50 %v p99 %v; p50 ratio %.1f",
		len(viaAPI), apiP50, apiP99, dockerP50, dockerP99, ms(apiP50)/ms(dockerP50))
}

// percentile is the nearest-rank percentile p of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s) + 99) / 100
	return s[max(i-1, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
