package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/lab"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/reconcile/host"
	"swarmvlan/spec"
	"swarmvlan/state"
)

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
			Secrets:     []spec.FileRef{{Name: secret}},
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
	d, cli := enginetest.Engine(t)
	suffix := enginetest.Suffix(t)
	parent := enginetest.Veth(t, suffix)
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
	want := host.ConfigNetwork{
		VLAN: vlan, Parent: parent,
		Subnet:  netip.MustParsePrefix("172.80.0.0/16"),
		Gateway: netip.MustParseAddr("172.80.0.1"),
		IPRange: chunk, ShimAddr: shim,
	}

	// Cleanup runs last-registered first: services, then the secret, the
	// node label and the networks, then the veth and the temp dir.
	t.Cleanup(func() {
		enginetest.RemoveVLANNetworks(t, cli, vlan)
	})
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		view, vlans := enginetest.ReadyView(t, cctx, d, self, vlan, false)
		if err := cluster.EnsureNodeLabels(cctx, d, view, vlans); err != nil {
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
		if err := cli.SecretRemove(cctx, secretID.ID); err != nil && !engine.IsNotFound(err) {
			t.Errorf("cleanup: secret: %v", err)
		}
	})
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		for _, name := range []string{svcName, otherName} {
			if err := cli.ServiceRemove(cctx, name); err != nil && !engine.IsNotFound(err) {
				t.Errorf("cleanup: service %s: %v", name, err)
			}
		}
	})

	events := engine.Events(ctx, d, "service")
	// Each step builds on the previous one: stop at the first failure.
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("config network", func(t *testing.T) {
		st, err := host.EnsureConfigNetwork(ctx, d, want)
		if err != nil || st.State != state.NetworkReady || st.Message != "created" {
			t.Fatalf("EnsureConfigNetwork: %+v, %v", st, err)
		}
		n := enginetest.NetworkInspect(t, spec.ConfigNetworkName(vlan))
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
			{"managed label", fmt.Sprint(n["Labels"].(map[string]any)[spec.LabelManaged]), "true"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("docker network inspect: %s = %s, want %s", c.what, c.got, c.want)
			}
		}
		if st, err := host.EnsureConfigNetwork(ctx, d, want); err != nil || st.State != state.NetworkReady || st.Message != "" || st.ID == "" {
			t.Errorf("second EnsureConfigNetwork: %+v, %v", st, err)
		}
	})

	step("swarm network", func(t *testing.T) {
		st, err := cluster.EnsureSwarmNetwork(ctx, d, cluster.SwarmNetwork{VLAN: vlan})
		if err != nil || st.State != state.NetworkReady {
			t.Fatalf("EnsureSwarmNetwork: %+v, %v", st, err)
		}
		n := enginetest.NetworkInspect(t, vlan)
		if n["Scope"] != "swarm" || n["Driver"] != "macvlan" || n["ConfigFrom"].(map[string]any)["Network"] != spec.ConfigNetworkName(vlan) {
			t.Errorf("docker network inspect: scope %v, driver %v, config-from %v", n["Scope"], n["Driver"], n["ConfigFrom"])
		}
		before := d.Calls()["NetworkCreate"]
		if st, err := cluster.EnsureSwarmNetwork(ctx, d, cluster.SwarmNetwork{VLAN: vlan}); err != nil || st.State != state.NetworkReady || st.Message != "" {
			t.Errorf("second EnsureSwarmNetwork: %+v, %v", st, err)
		}
		if d.Calls()["NetworkCreate"] != before {
			t.Error("second EnsureSwarmNetwork created a network")
		}
	})

	step("node label", func(t *testing.T) {
		view, vlans := enginetest.ReadyView(t, ctx, d, self, vlan, true)
		if err := cluster.EnsureNodeLabels(ctx, d, view, vlans); err != nil {
			t.Fatal(err)
		}
		node, err := d.NodeInspect(ctx, self)
		if err != nil {
			t.Fatal(err)
		}
		if node.Spec.Labels[spec.NodeLabelPrefix+vlan] != "ready" {
			t.Errorf("node labels %v lack %s=ready", node.Spec.Labels, spec.NodeLabelPrefix+vlan)
		}
	})

	doc := serviceTestWeb(svcName, vlan, secretName, dataDir)
	in := cluster.ServiceInput{Service: doc, Replicas: cluster.EffectiveReplicas(doc, nil)}

	step("service runs three tasks on the chunk", func(t *testing.T) {
		st, err := cluster.EnsureService(ctx, d, in)
		if err != nil || st.Message != "created" {
			t.Fatalf("EnsureService: %+v, %v", st, err)
		}
		var obs cluster.ServiceStatus
		enginetest.Poll(t, 2*time.Minute, "three running tasks with addresses", func() (bool, string) {
			obs, err = cluster.ObserveService(ctx, d, svcName)
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
		if got := svc.Spec.TaskTemplate.Placement.Constraints; len(got) != 1 || got[0] != spec.NodeReadyConstraint(vlan) {
			t.Errorf("stored constraints %v", got)
		}
		if svc.Spec.Labels[spec.LabelManaged] != "true" || len(svc.Spec.Labels[spec.LabelSpecHash]) != 64 {
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
		st, err := cluster.EnsureService(ctx, d, in)
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
		st, err := cluster.EnsureService(ctx, d, cluster.ServiceInput{Service: changed, Replicas: 3})
		if err != nil || st.Message != "updated: spec changed" {
			t.Fatalf("EnsureService: %+v, %v", st, err)
		}
		if _, err := cluster.EnsureService(ctx, d, cluster.ServiceInput{Service: changed, Replicas: 3}); err != nil {
			t.Fatal(err)
		}
		if n := d.Calls()["ServiceUpdate"] - before; n != 1 {
			t.Errorf("%d ServiceUpdate calls for one change, want 1", n)
		}
		// Back to the document everything else uses.
		if _, err := cluster.EnsureService(ctx, d, in); err != nil {
			t.Fatal(err)
		}
	})

	step("hand edit is reverted", func(t *testing.T) {
		enginetest.CLI(t, "service", "update", "--detach", "--no-resolve-image", "--env-add", "HAND=1", svcName)
		st, err := cluster.EnsureService(ctx, d, in)
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
		if st, err := cluster.EnsureService(ctx, d, in); err != nil || d.Calls()["ServiceUpdate"] != before {
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
		st, err := cluster.EnsureService(ctx, d, cluster.ServiceInput{Service: other, Replicas: 1})
		var cerr *engine.ConflictError
		if !errors.As(err, &cerr) || st.Message != "service "+otherName+" exists and is not managed by swarmvlan" {
			t.Errorf("EnsureService over an unmanaged service: %+v, %v", st, err)
		}
		if err := cluster.RemoveService(ctx, d, otherName); !errors.As(err, &cerr) {
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
		st, err := cluster.RemoveSwarmNetwork(ctx, d, vlan)
		if err != nil || st.State != state.NetworkInUse || st.Message != "in use by services "+svcName || !st.Requeue {
			t.Errorf("RemoveSwarmNetwork: %+v, %v", st, err)
		}
		if _, err := cli.NetworkInspect(ctx, vlan, networkInspectOpts()); err != nil {
			t.Errorf("network gone: %v", err)
		}
		if st, err := host.RemoveConfigNetwork(ctx, d, vlan); err != nil || st.State != state.NetworkInUse {
			t.Errorf("RemoveConfigNetwork while tasks run: %+v, %v", st, err)
		}
	})

	step("teardown", func(t *testing.T) {
		if err := cluster.RemoveService(ctx, d, svcName); err != nil {
			t.Fatal(err)
		}
		if _, _, err := cli.ServiceInspectWithRaw(ctx, svcName, swarm.ServiceInspectOptions{}); !engine.IsNotFound(err) {
			t.Errorf("service still there: %v", err)
		}
		for _, step := range []struct {
			name   string
			remove func() (state.NetworkStatus, error)
		}{
			{vlan, func() (state.NetworkStatus, error) { return cluster.RemoveSwarmNetwork(ctx, d, vlan) }},
			{spec.ConfigNetworkName(vlan), func() (state.NetworkStatus, error) { return host.RemoveConfigNetwork(ctx, d, vlan) }},
		} {
			enginetest.Poll(t, 2*time.Minute, "remove "+step.name, func() (bool, string) {
				st, err := step.remove()
				if err != nil {
					t.Fatalf("remove %s: %v", step.name, err)
				}
				return st.State == state.NetworkAbsent, fmt.Sprintf("%+v", st)
			})
			// A swarm network's removal reaches this node's instance of it
			// a moment after the call returns.
			enginetest.Poll(t, 30*time.Second, "network "+step.name+" gone", func() (bool, string) {
				n, err := cli.NetworkInspect(ctx, step.name, networkInspectOpts())
				return engine.IsNotFound(err), fmt.Sprintf("%+v, %v", n, err)
			})
		}
	})
}

func networkInspectOpts() network.InspectOptions { return network.InspectOptions{} }

func servicePtr[T any](v T) *T { return &v }
