package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/reconcile/host"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// leaderTestBed is a leading Cluster against a real Consul agent and the
// local Engine in swarm mode.
type leaderTestBed struct {
	store   *state.Store
	kv      *api.KV
	docker  engine.Docker
	view    *reconcile.View
	cluster *cluster.Cluster
	nodeID  string
	host    string
	// stop ends the leader and waits for it; cleanups that remove what it
	// made call it first, or the leader would put things back.
	stop func()
}

func startLeaderTestBed(t testing.TB, tune ...func(*cluster.Config)) *leaderTestBed {
	t.Helper()
	d, _ := enginetest.Engine(t)
	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr, Prefix: "swarmvlan/"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := d.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	view := reconcile.NewView(store.SpecPrefix())
	cfg := cluster.Config{Store: store, Docker: d, View: view, Log: log, Resync: 2 * time.Second, Sweep: 2 * time.Second}
	for _, f := range tune {
		f(&cfg)
	}
	cluster := cluster.New(cfg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		go reconcile.WatchSpec(ctx, store, view, state.WatchOptions{}, cluster.Enqueue, log)
		lead, err := store.Campaign(ctx, state.LeaderOptions{})
		if err != nil {
			return
		}
		cluster.Run(lead)
		lead.Resign()
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return &leaderTestBed{store: store, kv: agent.Client(t).KV(), docker: d, view: view, cluster: cluster, nodeID: info.Swarm.NodeID, host: info.Name, stop: stop}
}

func (b *leaderTestBed) put(t testing.TB, kind, name, doc string) {
	t.Helper()
	if _, err := b.kv.Put(&api.KVPair{Key: b.store.SpecKey(kind, name), Value: []byte(doc)}, nil); err != nil {
		t.Fatal(err)
	}
}

func (b *leaderTestBed) del(t *testing.T, kind, name string) {
	t.Helper()
	if _, err := b.kv.Delete(b.store.SpecKey(kind, name), nil); err != nil {
		t.Fatal(err)
	}
}

// reportReady plays this node's host role: it says the VLAN is ready, as the
// host role does once its config network exists.
func (b *leaderTestBed) reportReady(t testing.TB, vlan string) {
	t.Helper()
	report, _ := json.Marshal(map[string]any{"hostname": b.host, "vlans": map[string]any{vlan: map[string]any{"ready": true}}})
	reg, err := b.store.RegisterNode(context.Background(), b.nodeID, report, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
}

// leaderTestVLAN is the SPEC.md VLAN on a veth trunk, untagged (this
// kernel has no 802.1Q), in 172.<octet>.0.0/16.
func leaderTestVLAN(name, trunk string, octet int) string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: %[1]s
spec:
  trunk: %[2]s
  driver: macvlan
  mode: bridge
  subnet: 172.%[3]d.0.0/16
  gateway: 172.%[3]d.0.1
  mtu: 1500
  promiscuous: true
  hostAccess: true
  rangePlan:
    chunkPrefix: 24
    pool: [172.%[3]d.1.0/24, 172.%[3]d.2.0/23, 172.%[3]d.16.0/20]
    exclude: [172.%[3]d.0.0/24]
    pinned:
      manager1: 172.%[3]d.1.0/24
`, name, trunk, octet)
}

func leaderTestService(name, vlan string, replicas int, env string) string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata:
  name: %s
  labels: {team: payments}
spec:
  image: %s
  args: ["-listen", ":8080"]
  env: {LOG_LEVEL: %s}
  networks: [%s]
  replicas: %d
  update: {parallelism: 2, order: start-first}
`, name, lab.ImageTestApp, env, vlan, replicas)
}

// leaderTestReadyVLAN puts a VLAN on a fresh veth trunk, waits for this
// node's chunk, and plays this node's host role (config network and a ready
// report). It returns the VLAN's name, chunk and shim address.
func leaderTestReadyVLAN(t testing.TB, b *leaderTestBed, suffix string) (string, netip.Prefix, netip.Addr) {
	t.Helper()
	ctx := context.Background()
	trunk := enginetest.Veth(t, suffix)
	vlan := "v" + suffix
	octet := 90 + int(suffix[0])%9
	t.Cleanup(func() {
		b.stop()
		// Services removed just before may still hold the network a moment.
		enginetest.Poll(t, 30*time.Second, "VLAN networks removed", func() (bool, string) {
			st, err := cluster.RemoveSwarmNetwork(ctx, b.docker, vlan)
			return err == nil && st.State != state.NetworkInUse, fmt.Sprintf("%+v %v", st, err)
		})
		host.RemoveConfigNetwork(ctx, b.docker, vlan)
	})
	b.put(t, spec.KindVLAN, vlan, leaderTestVLAN(vlan, trunk, octet))
	var chunk netip.Prefix
	enginetest.Poll(t, 20*time.Second, "allocation for this node", func() (bool, string) {
		have, _, err := b.store.Allocations(ctx, vlan)
		if err != nil {
			return false, err.Error()
		}
		a, ok := have[b.nodeID]
		if !ok {
			return false, fmt.Sprint(have)
		}
		chunk = netip.MustParsePrefix(a.Chunk)
		return true, ""
	})
	// 172.x.1.0/24 is pinned to manager1, so the lowest free chunk of the
	// pool is 172.x.2.0/24.
	if want := netip.MustParsePrefix(fmt.Sprintf("172.%d.2.0/24", octet)); chunk != want {
		t.Fatalf("chunk = %s, want %s", chunk, want)
	}
	subnet := netip.MustParsePrefix(fmt.Sprintf("172.%d.0.0/16", octet))
	shim := spec.ShimAddress(subnet, chunk)
	if _, err := host.EnsureConfigNetwork(ctx, b.docker, host.ConfigNetwork{VLAN: vlan, Driver: "macvlan", Parent: trunk, Mode: "bridge",
		Subnet: subnet, Gateway: netip.MustParseAddr(fmt.Sprintf("172.%d.0.1", octet)), IPRange: chunk, ShimAddr: shim}); err != nil {
		t.Fatal(err)
	}
	b.reportReady(t, vlan)
	return vlan, chunk, shim
}

func TestLeaderConvergesVLANAndService(t *testing.T) {
	suffix := enginetest.Suffix(t)
	b := startLeaderTestBed(t)
	ctx := context.Background()
	svcName := "web" + suffix
	t.Cleanup(func() { b.stop(); cluster.RemoveService(ctx, b.docker, svcName) })
	vlan, chunk, shim := leaderTestReadyVLAN(t, b, suffix)

	b.put(t, spec.KindService, svcName, leaderTestService(svcName, vlan, 3, "info"))
	var status cluster.ServiceStatus
	enginetest.Poll(t, 90*time.Second, "3 tasks running", func() (bool, string) {
		st, err := cluster.ObserveService(ctx, b.docker, svcName)
		if err != nil {
			return false, err.Error()
		}
		status = st
		return st.Running == 3 && len(st.Tasks) >= 3, fmt.Sprintf("%d/%d running", st.Running, st.Desired)
	})
	seen := map[string]bool{}
	for _, task := range status.Tasks {
		if task.State != "running" {
			continue
		}
		addr, err := netip.ParseAddr(task.Addresses[vlan])
		if err != nil {
			t.Fatalf("task %s has no address on %s: %v", task.ID, vlan, task.Addresses)
		}
		if !chunk.Contains(addr) || addr == shim {
			t.Errorf("task %s address %s outside chunk %s or equal to the shim", task.ID, addr, chunk)
		}
		if seen[addr.String()] {
			t.Errorf("address %s handed out twice", addr)
		}
		seen[addr.String()] = true
	}
	// Docker made what was asked: a swarm network built from the config
	// network, which holds the chunk.
	netw := enginetest.NetworkInspect(t, vlan)
	if netw["Scope"] != "swarm" || netw["ConfigFrom"].(map[string]any)["Network"] != vlan+"-config" {
		t.Errorf("swarm network: scope %v, config-from %v", netw["Scope"], netw["ConfigFrom"])
	}
	cfg := enginetest.NetworkInspect(t, vlan+"-config")
	ipam := cfg["IPAM"].(map[string]any)["Config"].([]any)[0].(map[string]any)
	if ipam["IPRange"] != chunk.String() || ipam["AuxiliaryAddresses"].(map[string]any)["shim"] != shim.String() {
		t.Errorf("config network IPAM = %v", ipam)
	}
	// The service carries the spec's settings and the readiness constraint.
	svc := inspectService(t, b.docker, svcName)
	cs := svc.Spec.TaskTemplate.ContainerSpec
	if !contains(cs.Env, "LOG_LEVEL=info") || svc.Spec.Labels["team"] != "payments" || *svc.Spec.Mode.Replicated.Replicas != 3 ||
		!contains(svc.Spec.TaskTemplate.Placement.Constraints, spec.NodeReadyConstraint(vlan)) || svc.Spec.UpdateConfig.Parallelism != 2 {
		t.Errorf("service spec = env %v labels %v constraints %v update %+v", cs.Env, svc.Spec.Labels, svc.Spec.TaskTemplate.Placement.Constraints, svc.Spec.UpdateConfig)
	}
	// The VLAN's status names its allocations and the ready network.
	enginetest.Poll(t, 20*time.Second, "VLAN status ready", func() (bool, string) {
		p, _, _ := b.kv.Get(b.store.StatusKey("vlans", vlan), nil)
		if p == nil {
			return false, "no status"
		}
		return strings.Contains(string(p.Value), `"Ready","status":"True"`) && strings.Contains(string(p.Value), chunk.String()), string(p.Value)
	})

	// A hand edit is reverted; an unmanaged service is never touched.
	unmanaged := "unmanaged" + suffix
	enginetest.CLI(t, "service", "create", "--detach", "--name", unmanaged, "--replicas", "0", lab.ImageTestApp)
	t.Cleanup(func() { enginetest.CLI(t, "service", "rm", unmanaged) })
	before := inspectService(t, b.docker, unmanaged).Version.Index
	enginetest.CLI(t, "service", "update", "--detach", "--env-add", "HAND=edit", svcName)
	enginetest.Poll(t, 30*time.Second, "hand edit reverted", func() (bool, string) {
		env := inspectService(t, b.docker, svcName).Spec.TaskTemplate.ContainerSpec.Env
		return !contains(env, "HAND=edit"), fmt.Sprint(env)
	})
	if after := inspectService(t, b.docker, unmanaged).Version.Index; after != before {
		t.Errorf("unmanaged service changed: version %d -> %d", before, after)
	}

	// Managed services without a document: the sweep removes this
	// installation's and never another's.
	ours, err := b.store.InstallationID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orphan, theirs := "orphan"+suffix, "theirs"+suffix
	for name, owner := range map[string]string{orphan: ours, theirs: "another-installation"} {
		docs, err := reconcile.ParseDocuments([]byte(leaderTestService(name, vlan, 0, "x")))
		if err != nil {
			t.Fatal(err)
		}
		ss, err := cluster.BuildServiceSpec(cluster.ServiceInput{Service: docs[0].Object.(*spec.Service), Owner: owner})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.docker.ServiceCreate(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		b.stop()
		if s, err := b.docker.ServiceInspect(ctx, theirs); err == nil {
			b.docker.ServiceRemove(ctx, s.ID)
		}
	})
	enginetest.Poll(t, 20*time.Second, "the orphan swept away", func() (bool, string) {
		_, err := b.docker.ServiceInspect(ctx, orphan)
		return engine.IsNotFound(err), fmt.Sprint(err)
	})
	time.Sleep(3 * time.Second) // more than a sweep period
	if s, err := b.docker.ServiceInspect(ctx, theirs); err != nil {
		t.Fatalf("another installation's service was removed: %v", err)
	} else if err := b.docker.ServiceRemove(ctx, s.ID); err != nil {
		t.Fatal(err) // it uses the VLAN's network, which is removed below
	}

	// A document change goes through; the VLAN cannot go while the service
	// uses it; deleting the service removes it, and then the network goes.
	b.put(t, spec.KindService, svcName, leaderTestService(svcName, vlan, 3, "debug"))
	enginetest.Poll(t, 30*time.Second, "env change applied", func() (bool, string) {
		env := inspectService(t, b.docker, svcName).Spec.TaskTemplate.ContainerSpec.Env
		return contains(env, "LOG_LEVEL=debug"), fmt.Sprint(env)
	})
	b.del(t, spec.KindVLAN, vlan)
	enginetest.Poll(t, 20*time.Second, "VLAN status says what blocks removal", func() (bool, string) {
		p, _, _ := b.kv.Get(b.store.StatusKey("vlans", vlan), nil)
		return p != nil && strings.Contains(string(p.Value), "removal blocked") && strings.Contains(string(p.Value), svcName), fmt.Sprint(p)
	})
	if _, err := b.docker.NetworkInspect(ctx, vlan); err != nil {
		t.Fatalf("network removed while a service uses it: %v", err)
	}
	b.del(t, spec.KindService, svcName)
	enginetest.Poll(t, 30*time.Second, "service removed", func() (bool, string) {
		svcs, err := cluster.ListManagedServices(ctx, b.docker)
		_, still := svcs[svcName]
		return err == nil && !still, fmt.Sprint(err)
	})
	enginetest.Poll(t, 60*time.Second, "swarm network removed and allocations released", func() (bool, string) {
		_, err := b.docker.NetworkInspect(ctx, vlan)
		have, _, aerr := b.store.Allocations(ctx, vlan)
		return engine.IsNotFound(err) && aerr == nil && len(have) == 0, fmt.Sprintf("inspect: %v, allocations %v", err, have)
	})
}

func inspectService(t testing.TB, d engine.Docker, name string) swarm.Service {
	t.Helper()
	s, err := d.ServiceInspect(context.Background(), name)
	if err != nil {
		t.Fatalf("inspect service %s: %v", name, err)
	}
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestLeaderWaitsForMissingSecret checks, on the real Engine, that a
// service naming a secret Docker does not have is refused with the field in
// its status and not retried with backoff, and that creating the secret
// (its Docker event, not a resync: the resync is far off here) converges it.
func TestLeaderWaitsForMissingSecret(t *testing.T) {
	suffix := enginetest.Suffix(t)
	b := startLeaderTestBed(t, func(c *cluster.Config) { c.Resync, c.Sweep = 30*time.Minute, 30*time.Minute })
	ctx := context.Background()
	svcName, secret := "sec"+suffix, "db"+suffix
	vlan, _, _ := leaderTestReadyVLAN(t, b, suffix)
	// Registered after the VLAN's clean-up, so it runs first: the
	// service lets go of the network before that removes it.
	t.Cleanup(func() {
		b.stop()
		cluster.RemoveService(ctx, b.docker, svcName)
		// The secret is refused while the service still refers to it.
		enginetest.Poll(t, 30*time.Second, "secret removed", func() (bool, string) {
			out, err := exec.Command("docker", "secret", "rm", secret).CombinedOutput()
			return err == nil || strings.Contains(string(out), "not found"), string(out)
		})
	})
	b.put(t, spec.KindService, svcName, leaderTestService(svcName, vlan, 1, "info")+"  secrets: ["+secret+"]\n")

	var lastErr string
	enginetest.Poll(t, 30*time.Second, "status names the missing secret", func() (bool, string) {
		p, _, _ := b.kv.Get(b.store.StatusKey("services", svcName), nil)
		if p == nil {
			return false, "no status"
		}
		var st state.Status
		if err := json.Unmarshal(p.Value, &st); err != nil {
			return false, err.Error()
		}
		lastErr = st.LastError
		return strings.Contains(st.LastError, "spec.secrets[0]") && strings.Contains(st.LastError, `secret "`+secret+`" does not exist`), st.LastError
	})
	t.Logf("status: %s", lastErr)
	lists := b.docker.Calls()["SecretList"]
	time.Sleep(3 * time.Second) // a retry with backoff (base 200ms) would list secrets again within this
	if n := b.docker.Calls()["SecretList"]; n != lists {
		t.Errorf("refused service retried: %d secret lists in 3s", n-lists)
	}
	if _, err := b.docker.ServiceInspect(ctx, svcName); !engine.IsNotFound(err) {
		t.Fatalf("service created without its secret: %v", err)
	}

	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	enginetest.CLI(t, "secret", "create", secret, f)
	enginetest.Poll(t, 60*time.Second, "service running once its secret exists", func() (bool, string) {
		st, err := cluster.ObserveService(ctx, b.docker, svcName)
		if err != nil {
			return false, err.Error()
		}
		return st.Running == 1, fmt.Sprintf("%d/%d running", st.Running, st.Desired)
	})

	// The leader takes down what it made, readiness labels included.
	b.del(t, spec.KindService, svcName)
	b.del(t, spec.KindVLAN, vlan)
	enginetest.Poll(t, 60*time.Second, "service, swarm network and readiness label removed", func() (bool, string) {
		_, serr := b.docker.ServiceInspect(ctx, svcName)
		_, nerr := b.docker.NetworkInspect(ctx, vlan)
		n, err := b.docker.NodeInspect(ctx, b.nodeID)
		label, labelled := n.Spec.Labels[spec.NodeLabelPrefix+vlan]
		return engine.IsNotFound(serr) && engine.IsNotFound(nerr) && err == nil && !labelled,
			fmt.Sprintf("service: %v, network: %v, label %q", serr, nerr, label)
	})
}
