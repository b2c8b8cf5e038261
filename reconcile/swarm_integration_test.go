package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"swarmvlan/lab"
	"swarmvlan/spec"
)

// dockerTestEngine returns the Docker adapter and a raw client for the
// local engine in swarm mode with the test image built, or skips the test
// saying why it cannot run.
func dockerTestEngine(t testing.TB) (Docker, *client.Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against the real Docker Engine; skipped in -short mode")
	}
	cli := lab.EnsureSwarm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := lab.BuildTestImage(ctx, ""); err != nil {
		t.Fatalf("build test image: %v", err)
	}
	d, err := NewDocker("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, cli
}

// dockerTestSuffix is a random suffix that keeps names unique per run.
func dockerTestSuffix(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// networkTestVeth creates a veth pair in the root namespace to stand in for
// a VLAN sub-interface (this kernel has no 802.1Q) and deletes it when the
// test ends. It returns the end used as macvlan parent.
func networkTestVeth(t testing.TB, suffix string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a veth pair as macvlan parent")
	}
	a, b := "svt"+suffix+"a", "svt"+suffix+"b"
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

// dockerTestPoll calls f until it reports done or the deadline passes.
func dockerTestPoll(t testing.TB, timeout time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, state := f()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done after %v; last state: %s", what, timeout, state)
		}
		time.Sleep(250 * time.Millisecond) // polling interval under the deadline above
	}
}

// dockerTestCLI runs the docker CLI, as an operator would.
func dockerTestCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dockerTestNetworkInspect is `docker network inspect` decoded.
func dockerTestNetworkInspect(t testing.TB, name string) map[string]any {
	t.Helper()
	var out []map[string]any
	if err := json.Unmarshal([]byte(dockerTestCLI(t, "network", "inspect", name)), &out); err != nil || len(out) != 1 {
		t.Fatalf("docker network inspect %s: %v (%d results)", name, err, len(out))
	}
	return out[0]
}

// nodeTestReadyView is a readiness view that keeps every node's current
// io.swarmvlan.vlan.* labels (other tests on this engine may own some) and
// sets or clears only vlan on this node.
func nodeTestReadyView(t testing.TB, ctx context.Context, d Docker, self, vlan string, ready bool) (map[string]map[string]bool, []string) {
	t.Helper()
	nodes, err := d.NodeList(ctx, dockerFilter())
	if err != nil {
		t.Fatal(err)
	}
	view := map[string]map[string]bool{}
	seen := map[string]bool{}
	var vlans []string
	for _, n := range nodes {
		view[n.ID] = map[string]bool{}
		for k, v := range n.Spec.Labels {
			if name, ok := strings.CutPrefix(k, NodeLabelPrefix); ok && name != vlan {
				view[n.ID][name] = v == nodeLabelReady
				if !seen[name] {
					seen[name] = true
					vlans = append(vlans, name)
				}
			}
		}
	}
	if ready {
		view[self][vlan] = true
		vlans = append(vlans, vlan)
	}
	return view, vlans
}

// serviceTestWeb is the SPEC.md web example adapted to one lab node: the
// local test image, a secret and a bind-mount source that exist, no rack
// constraint, room for all replicas on the one node and short delays.
func serviceTestWeb(name, vlan, secret, dataDir string) *spec.Service {
	s := &spec.Service{
		APIVersion: spec.APIVersion, Kind: spec.KindService,
		Metadata: spec.ObjectMeta{Name: name, Labels: map[string]string{"team": "payments"}},
		Spec: spec.ServiceSpec{
			Image:    lab.ImageTestApp,
			Command:  []string{"/app"},
			Args:     []string{"--listen", ":8080"},
			Env:      map[string]string{"LOG_LEVEL": "info"},
			Labels:   map[string]string{"tier": "front"},
			Networks: []string{vlan},
			Mode:     "replicated",
			Replicas: servicePtr(3),
			Scaling:  &spec.Scaling{Min: 2, Max: 10, Step: 1, Cooldown: "60s"},
			Placement: &spec.Placement{
				MaxPerNode:  3,
				Preferences: []spec.Preference{{Spread: "node.labels.rack"}},
			},
			Resources: &spec.Resources{
				Limits:       &spec.ResourceList{CPUs: "0.5", Memory: "256Mi"},
				Reservations: &spec.ResourceList{CPUs: "0.1", Memory: "64Mi"},
			},
			Update:      &spec.UpdatePolicy{Parallelism: servicePtr(1), Delay: "1s", FailureAction: "rollback", Order: "start-first"},
			Restart:     &spec.RestartPolicy{Condition: "on-failure", Delay: "1s", MaxAttempts: servicePtr(3), Window: "60s"},
			Mounts:      []spec.Mount{{Type: "bind", Source: dataDir, Target: "/data", ReadOnly: true}},
			Secrets:     []string{secret},
			Healthcheck: &spec.Healthcheck{Test: []string{"CMD", "/app", "-health"}, Interval: "1s", Timeout: "2s", Retries: 3},
			Consul:      &spec.ConsulService{Service: "web", Port: 8080},
		},
	}
	return s
}

// TestSwarmIntegration runs the whole Docker half on the real engine: a
// config-only and a swarm macvlan network on a veth parent, the readiness
// label, the web service with three replicas on its chunk, no-op and drift
// handling, an unmanaged look-alike, the in-use refusal and the teardown.
func TestSwarmIntegration(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("needs the docker CLI to inspect and hand-edit as an operator would")
	}
	d, cli := dockerTestEngine(t)
	suffix := dockerTestSuffix(t)
	parent := networkTestVeth(t, suffix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)

	vlan := "svt" + suffix
	svcName := "svtweb" + suffix
	otherName := "svtother" + suffix
	secretName := "svtdb" + suffix
	dataDir := t.TempDir()
	info, err := d.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	self := info.Swarm.NodeID
	chunk := netip.MustParsePrefix("172.80.1.0/24")
	shim := netip.MustParseAddr("172.80.1.255")
	want := ConfigNetwork{
		VLAN: vlan, Parent: parent,
		Subnet:  netip.MustParsePrefix("172.80.0.0/16"),
		Gateway: netip.MustParseAddr("172.80.0.1"),
		IPRange: chunk, ShimAddr: shim,
	}

	// Cleanup runs last-registered first: services, then the secret, the
	// node label and the networks, then the veth and the temp dir.
	t.Cleanup(func() {
		networkTestRemoveVLAN(t, cli, vlan)
	})
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		view, vlans := nodeTestReadyView(t, cctx, d, self, vlan, false)
		if err := EnsureNodeLabels(cctx, d, view, vlans); err != nil {
			t.Errorf("cleanup: node label: %v", err)
		}
	})
	secretID, err := cli.SecretCreate(ctx, swarm.SecretSpec{Annotations: swarm.Annotations{Name: secretName}, Data: []byte("s3cret")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		// The secret is refused while a service still refers to it; the
		// services' cleanup below runs first.
		if err := cli.SecretRemove(cctx, secretID.ID); err != nil && !dockerNotFound(err) {
			t.Errorf("cleanup: secret: %v", err)
		}
	})
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		for _, name := range []string{svcName, otherName} {
			if err := cli.ServiceRemove(cctx, name); err != nil && !dockerNotFound(err) {
				t.Errorf("cleanup: service %s: %v", name, err)
			}
		}
	})

	events := DockerEvents(ctx, d, "service")
	// Each step builds on the previous one: stop at the first failure.
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("config network", func(t *testing.T) {
		st, err := EnsureConfigNetwork(ctx, d, want)
		if err != nil || st.State != NetworkReady || st.Message != "created" {
			t.Fatalf("EnsureConfigNetwork: %+v, %v", st, err)
		}
		n := dockerTestNetworkInspect(t, NetworkConfigName(vlan))
		ipam := n["IPAM"].(map[string]any)["Config"].([]any)[0].(map[string]any)
		aux, _ := ipam["AuxiliaryAddresses"].(map[string]any)
		opts, _ := n["Options"].(map[string]any)
		checks := []struct{ what, got, want string }{
			{"ConfigOnly", fmt.Sprint(n["ConfigOnly"]), "true"},
			{"Scope", fmt.Sprint(n["Scope"]), "local"},
			{"parent", fmt.Sprint(opts["parent"]), parent},
			{"macvlan_mode", fmt.Sprint(opts["macvlan_mode"]), "bridge"},
			{"Subnet", fmt.Sprint(ipam["Subnet"]), "172.80.0.0/16"},
			{"IPRange", fmt.Sprint(ipam["IPRange"]), "172.80.1.0/24"},
			{"Gateway", fmt.Sprint(ipam["Gateway"]), "172.80.0.1"},
			{"aux shim", fmt.Sprint(aux["shim"]), "172.80.1.255"},
			{"managed label", fmt.Sprint(n["Labels"].(map[string]any)[DockerLabelManaged]), "true"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("docker network inspect: %s = %s, want %s", c.what, c.got, c.want)
			}
		}
		if st, err := EnsureConfigNetwork(ctx, d, want); err != nil || st.State != NetworkReady || st.Message != "" || st.ID == "" {
			t.Errorf("second EnsureConfigNetwork: %+v, %v", st, err)
		}
	})

	step("swarm network", func(t *testing.T) {
		st, err := EnsureSwarmNetwork(ctx, d, SwarmNetwork{VLAN: vlan})
		if err != nil || st.State != NetworkReady {
			t.Fatalf("EnsureSwarmNetwork: %+v, %v", st, err)
		}
		n := dockerTestNetworkInspect(t, vlan)
		if n["Scope"] != "swarm" || n["Driver"] != "macvlan" || n["ConfigFrom"].(map[string]any)["Network"] != NetworkConfigName(vlan) {
			t.Errorf("docker network inspect: scope %v, driver %v, config-from %v", n["Scope"], n["Driver"], n["ConfigFrom"])
		}
		before := d.Calls()["NetworkCreate"]
		if st, err := EnsureSwarmNetwork(ctx, d, SwarmNetwork{VLAN: vlan}); err != nil || st.State != NetworkReady || st.Message != "" {
			t.Errorf("second EnsureSwarmNetwork: %+v, %v", st, err)
		}
		if d.Calls()["NetworkCreate"] != before {
			t.Error("second EnsureSwarmNetwork created a network")
		}
	})

	step("node label", func(t *testing.T) {
		view, vlans := nodeTestReadyView(t, ctx, d, self, vlan, true)
		if err := EnsureNodeLabels(ctx, d, view, vlans); err != nil {
			t.Fatal(err)
		}
		node, err := d.NodeInspect(ctx, self)
		if err != nil {
			t.Fatal(err)
		}
		if node.Spec.Labels[NodeLabelPrefix+vlan] != "ready" {
			t.Errorf("node labels %v lack %s=ready", node.Spec.Labels, NodeLabelPrefix+vlan)
		}
	})

	doc := serviceTestWeb(svcName, vlan, secretName, dataDir)
	in := ServiceInput{Service: doc, Replicas: EffectiveReplicas(doc, nil)}

	step("service runs three tasks on the chunk", func(t *testing.T) {
		st, err := EnsureService(ctx, d, in)
		if err != nil || st.Message != "created" {
			t.Fatalf("EnsureService: %+v, %v", st, err)
		}
		var obs ServiceStatus
		dockerTestPoll(t, 2*time.Minute, "three running tasks with addresses", func() (bool, string) {
			obs, err = ObserveService(ctx, d, svcName)
			if err != nil {
				return false, err.Error()
			}
			withAddr := 0
			for _, task := range obs.Tasks {
				if task.State == "running" && task.Addresses[vlan] != "" {
					withAddr++
				}
			}
			b, _ := json.Marshal(obs)
			return obs.Running == 3 && withAddr == 3, string(b)
		})
		if obs.Desired != 3 {
			t.Errorf("desired %d, want 3", obs.Desired)
		}
		seen := map[netip.Addr]bool{}
		for _, task := range obs.Tasks {
			a, err := netip.ParseAddr(task.Addresses[vlan])
			switch {
			case err != nil:
				t.Errorf("task %s address %q: %v", task.ID, task.Addresses[vlan], err)
			case !chunk.Contains(a):
				t.Errorf("task %s address %s outside the chunk %s", task.ID, a, chunk)
			case a == shim:
				t.Errorf("task %s got the shim address %s", task.ID, a)
			case seen[a]:
				t.Errorf("address %s handed out twice", a)
			}
			seen[a] = true
			if task.Node != self {
				t.Errorf("task %s on node %s, want %s", task.ID, task.Node, self)
			}
		}
		// What Docker stores is what the document says.
		svc, _, err := cli.ServiceInspectWithRaw(ctx, svcName, swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cs := svc.Spec.TaskTemplate.ContainerSpec
		if cs.Secrets[0].SecretID != secretID.ID || cs.Mounts[0].Source != dataDir || !cs.Mounts[0].ReadOnly {
			t.Errorf("stored secrets %+v, mounts %+v", cs.Secrets[0], cs.Mounts)
		}
		if got := svc.Spec.TaskTemplate.Placement.Constraints; len(got) != 1 || got[0] != NodeReadyConstraint(vlan) {
			t.Errorf("stored constraints %v", got)
		}
		if svc.Spec.Labels[DockerLabelManaged] != "true" || len(svc.Spec.Labels[DockerLabelSpecHash]) != 64 {
			t.Errorf("stored labels %v", svc.Spec.Labels)
		}
	})

	step("service create event", func(t *testing.T) {
		deadline := time.After(30 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Type == "service" && ev.Action == "create" && ev.Name == svcName {
					return
				}
			case <-deadline:
				t.Fatal("no service create event for the service within 30s")
			}
		}
	})

	step("second ensure makes no update", func(t *testing.T) {
		before := d.Calls()["ServiceUpdate"]
		st, err := EnsureService(ctx, d, in)
		if err != nil {
			t.Fatal(err)
		}
		if n := d.Calls()["ServiceUpdate"] - before; n != 0 {
			t.Errorf("%d ServiceUpdate calls for an unchanged service (message %q)", n, st.Message)
		}
	})

	step("changed env makes one update", func(t *testing.T) {
		changed := serviceTestWeb(svcName, vlan, secretName, dataDir)
		changed.Spec.Env["LOG_LEVEL"] = "debug"
		before := d.Calls()["ServiceUpdate"]
		st, err := EnsureService(ctx, d, ServiceInput{Service: changed, Replicas: 3})
		if err != nil || st.Message != "updated: spec changed" {
			t.Fatalf("EnsureService: %+v, %v", st, err)
		}
		if _, err := EnsureService(ctx, d, ServiceInput{Service: changed, Replicas: 3}); err != nil {
			t.Fatal(err)
		}
		if n := d.Calls()["ServiceUpdate"] - before; n != 1 {
			t.Errorf("%d ServiceUpdate calls for one change, want 1", n)
		}
		// Back to the document everything else uses.
		if _, err := EnsureService(ctx, d, in); err != nil {
			t.Fatal(err)
		}
	})

	step("hand edit is reverted", func(t *testing.T) {
		dockerTestCLI(t, "service", "update", "--detach", "--no-resolve-image", "--env-add", "HAND=1", svcName)
		st, err := EnsureService(ctx, d, in)
		if err != nil || !strings.HasPrefix(st.Message, "updated: drift in ") || !strings.Contains(st.Message, "TaskTemplate.ContainerSpec.Env") {
			t.Fatalf("EnsureService after a hand edit: %+v, %v", st, err)
		}
		svc, _, err := cli.ServiceInspectWithRaw(ctx, svcName, swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if env := svc.Spec.TaskTemplate.ContainerSpec.Env; len(env) != 1 || env[0] != "LOG_LEVEL=info" {
			t.Errorf("env after revert %v", env)
		}
		before := d.Calls()["ServiceUpdate"]
		if st, err := EnsureService(ctx, d, in); err != nil || d.Calls()["ServiceUpdate"] != before {
			t.Errorf("ensure after the revert updated again: %+v, %v", st, err)
		}
	})

	step("unmanaged service is left alone", func(t *testing.T) {
		zero := uint64(0)
		resp, err := cli.ServiceCreate(ctx, swarm.ServiceSpec{
			Annotations:  swarm.Annotations{Name: otherName},
			TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: lab.ImageTestApp}},
			Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &zero}},
		}, swarm.ServiceCreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		before, _, err := cli.ServiceInspectWithRaw(ctx, resp.ID, swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		other := serviceTestWeb(otherName, vlan, secretName, dataDir)
		st, err := EnsureService(ctx, d, ServiceInput{Service: other, Replicas: 1})
		var cerr *DockerConflictError
		if !errors.As(err, &cerr) || st.Message != "service "+otherName+" exists and is not managed by swarmvlan" {
			t.Errorf("EnsureService over an unmanaged service: %+v, %v", st, err)
		}
		if err := RemoveService(ctx, d, otherName); !errors.As(err, &cerr) {
			t.Errorf("RemoveService of an unmanaged service: %v", err)
		}
		after, _, err := cli.ServiceInspectWithRaw(ctx, resp.ID, swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatalf("unmanaged service gone: %v", err)
		}
		if after.Version.Index != before.Version.Index {
			t.Errorf("unmanaged service changed: version %d -> %d", before.Version.Index, after.Version.Index)
		}
	})

	step("swarm network in use stays", func(t *testing.T) {
		st, err := RemoveSwarmNetwork(ctx, d, vlan)
		if err != nil || st.State != NetworkInUse || st.Message != "in use by services "+svcName || !st.Requeue {
			t.Errorf("RemoveSwarmNetwork: %+v, %v", st, err)
		}
		if _, err := cli.NetworkInspect(ctx, vlan, networkInspectOpts()); err != nil {
			t.Errorf("network gone: %v", err)
		}
		if st, err := RemoveConfigNetwork(ctx, d, vlan); err != nil || st.State != NetworkInUse {
			t.Errorf("RemoveConfigNetwork while tasks run: %+v, %v", st, err)
		}
	})

	step("teardown", func(t *testing.T) {
		if err := RemoveService(ctx, d, svcName); err != nil {
			t.Fatal(err)
		}
		if _, _, err := cli.ServiceInspectWithRaw(ctx, svcName, swarm.ServiceInspectOptions{}); !dockerNotFound(err) {
			t.Errorf("service still there: %v", err)
		}
		for _, step := range []struct {
			name   string
			remove func() (NetworkStatus, error)
		}{
			{vlan, func() (NetworkStatus, error) { return RemoveSwarmNetwork(ctx, d, vlan) }},
			{NetworkConfigName(vlan), func() (NetworkStatus, error) { return RemoveConfigNetwork(ctx, d, vlan) }},
		} {
			dockerTestPoll(t, 2*time.Minute, "remove "+step.name, func() (bool, string) {
				st, err := step.remove()
				if err != nil {
					t.Fatalf("remove %s: %v", step.name, err)
				}
				return st.State == NetworkAbsent, fmt.Sprintf("%+v", st)
			})
			// A swarm network's removal reaches this node's instance of it
			// a moment after the call returns.
			dockerTestPoll(t, 30*time.Second, "network "+step.name+" gone", func() (bool, string) {
				n, err := cli.NetworkInspect(ctx, step.name, networkInspectOpts())
				return dockerNotFound(err), fmt.Sprintf("%+v, %v", n, err)
			})
		}
	})
}

func networkInspectOpts() network.InspectOptions { return network.InspectOptions{} }

// networkTestRemoveVLAN removes the VLAN's swarm network and then its
// config network, waiting for the service's tasks to let go of them.
func networkTestRemoveVLAN(tb testing.TB, cli *client.Client, vlan string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, name := range []string{vlan, NetworkConfigName(vlan)} {
		deadline := time.Now().Add(90 * time.Second)
		for {
			n, err := cli.NetworkInspect(ctx, name, network.InspectOptions{})
			if dockerNotFound(err) || (err == nil && !dockerManaged(n.Labels) && !networkSwarmOwned(vlan, &n)) {
				break
			}
			if err == nil {
				if err = cli.NetworkRemove(ctx, n.ID); err == nil {
					break
				}
			}
			if time.Now().After(deadline) {
				tb.Errorf("cleanup: network %s: %v", name, err)
				break
			}
			time.Sleep(500 * time.Millisecond) // polling interval under the deadline above
		}
	}
}
