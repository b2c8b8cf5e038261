package enginetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"swarmvlan/lab"
	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
)

// Engine returns the Docker adapter and a raw client for the local engine
// in swarm mode with the test image built, or skips the test saying why it
// cannot run.
func Engine(t testing.TB) (engine.Docker, *client.Client) {
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
	d, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, cli
}

// Suffix is a random suffix that keeps names unique per run.
func Suffix(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Veth creates a veth pair in the root namespace to stand in for a VLAN
// sub-interface and deletes it when the test ends. It returns the end used
// as macvlan parent.
func Veth(t testing.TB, suffix string) string {
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

// Poll calls f until it reports done or the deadline passes.
func Poll(t testing.TB, timeout time.Duration, what string, f func() (bool, string)) {
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

// CLI runs the docker CLI, as an operator would.
func CLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NetworkInspect is `docker network inspect` decoded.
func NetworkInspect(t testing.TB, name string) map[string]any {
	t.Helper()
	var out []map[string]any
	if err := json.Unmarshal([]byte(CLI(t, "network", "inspect", name)), &out); err != nil || len(out) != 1 {
		t.Fatalf("docker network inspect %s: %v (%d results)", name, err, len(out))
	}
	return out[0]
}

// ReadyView is a readiness view that keeps every node's current
// io.swarmvlan.vlan.* labels (other tests on this engine may own some) and
// sets or clears only vlan on this node.
func ReadyView(t testing.TB, ctx context.Context, d engine.Docker, self, vlan string, ready bool) (map[string]map[string]bool, []string) {
	t.Helper()
	nodes, err := d.NodeList(ctx, engine.Filter())
	if err != nil {
		t.Fatal(err)
	}
	view := map[string]map[string]bool{}
	seen := map[string]bool{}
	var vlans []string
	for _, n := range nodes {
		view[n.ID] = map[string]bool{}
		for k, v := range n.Spec.Labels {
			if name, ok := strings.CutPrefix(k, spec.NodeLabelPrefix); ok && name != vlan {
				view[n.ID][name] = v == spec.NodeLabelReady
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

// RemoveVLANNetworks removes the VLAN's swarm network and then its
// config network, waiting for the service's tasks to let go of them.
func RemoveVLANNetworks(tb testing.TB, cli *client.Client, vlan string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, name := range []string{vlan, spec.ConfigNetworkName(vlan)} {
		deadline := time.Now().Add(90 * time.Second)
		for {
			n, err := cli.NetworkInspect(ctx, name, network.InspectOptions{})
			if engine.IsNotFound(err) || (err == nil && !spec.Managed(n.Labels) && n.ConfigFrom.Network != spec.ConfigNetworkName(vlan)) {
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
