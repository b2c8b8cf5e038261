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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/lab"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/host"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// TestLeaderKilledWhileApplyingFiftyServices SIGKILLs the leading manager
// while it is creating 50 services; the other manager takes over and every
// service exists exactly once and reaches a ready status.
func TestLeaderKilledWhileApplyingFiftyServices(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against the real Engine; skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for the veth trunk")
	}
	cli := lab.EnsureSwarm(t)
	ctx := context.Background()
	if _, err := lab.BuildTestImage(ctx, ""); err != nil {
		t.Fatal(err)
	}
	d, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	info, err := d.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	trunk := "svk" + suffix
	if out, err := exec.Command("ip", "link", "add", trunk, "type", "veth", "peer", "name", trunk+"p").CombinedOutput(); err != nil {
		t.Skipf("cannot create a veth pair: %v: %s", err, out)
	}
	exec.Command("ip", "link", "set", trunk, "up").Run()
	vlan := "k" + suffix
	prefix := "s" + suffix + "x"
	t.Cleanup(func() {
		svcs, _ := cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("name", prefix))})
		for _, s := range svcs {
			cli.ServiceRemove(ctx, s.ID)
		}
		cluster.RemoveSwarmNetwork(ctx, d, vlan)
		host.RemoveConfigNetwork(ctx, d, vlan)
		exec.Command("ip", "link", "del", trunk).Run()
	})

	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	a := startRun(t, agent.Addr, "a", "--resync", "10s")
	waitFor(t, 20*time.Second, "a to lead", a.leading)
	bp := startRun(t, agent.Addr, "b", "--resync", "10s")

	dir := t.TempDir()
	octet := 100 + int(b[0])%20
	writeFile(t, dir, "vlan.yaml", fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata: {name: %s}
spec:
  trunk: %s
  subnet: 172.%d.0.0/16
  rangePlan: {chunkPrefix: 24}
`, vlan, trunk, octet))
	if code, out, errOut := run(t, agent.Addr, "", "apply", "-f", dir); code != 0 {
		t.Fatalf("apply vlan: %s%s", out, errOut)
	}
	// The host role's part on this node: the config network with the chunk.
	var chunk netip.Prefix
	waitFor(t, 20*time.Second, "allocation", func() bool {
		have, _, err := store.Allocations(ctx, vlan)
		if err != nil || have[info.Swarm.NodeID].Chunk == "" {
			return false
		}
		chunk = netip.MustParsePrefix(have[info.Swarm.NodeID].Chunk)
		return true
	})
	subnet := netip.MustParsePrefix(fmt.Sprintf("172.%d.0.0/16", octet))
	if _, err := host.EnsureConfigNetwork(ctx, d, host.ConfigNetwork{VLAN: vlan, Driver: "macvlan", Parent: trunk, Mode: "bridge",
		Subnet: subnet, IPRange: chunk, ShimAddr: spec.ShimAddress(subnet, chunk)}); err != nil {
		t.Fatal(err)
	}

	svcDir := t.TempDir()
	const n = 50
	for i := 0; i < n; i++ {
		writeFile(t, svcDir, fmt.Sprintf("s%02d.yaml", i), fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata: {name: %s%02d}
spec:
  image: %s
  networks: [%s]
  replicas: 0
`, prefix, i, lab.ImageTestApp, vlan))
	}
	if code, out, errOut := run(t, agent.Addr, "", "apply", "-f", svcDir); code != 0 {
		t.Fatalf("apply services: %s%s", out, errOut)
	}
	count := func() (int, map[string]int) {
		svcs, err := cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("label", spec.LabelManaged+"=true"))})
		if err != nil {
			return 0, nil
		}
		names := map[string]int{}
		for _, s := range svcs {
			if strings.HasPrefix(s.Spec.Name, prefix) {
				names[s.Spec.Labels[spec.LabelName]]++
			}
		}
		return len(names), names
	}
	leader, standby := a, bp
	if bp.leading() {
		leader, standby = bp, a
	}
	waitFor(t, 60*time.Second, "the leader to be part-way through", func() bool { c, _ := count(); return c >= 5 })
	c, _ := count()
	killed := time.Now()
	leader.cmd.Process.Signal(syscall.SIGKILL)
	t.Logf("leader %s killed with %d of %d services made", leader.name, c, n)
	waitFor(t, 60*time.Second, "the standby to lead", standby.leading)
	t.Logf("takeover: %v", time.Since(killed).Round(100*time.Millisecond))
	waitFor(t, 120*time.Second, "all 50 services", func() bool { c, _ := count(); return c == n })
	_, names := count()
	for name, k := range names {
		if k != 1 {
			t.Errorf("service %s exists %d times", name, k)
		}
	}
	kv := agent.Client(t).KV()
	waitFor(t, 60*time.Second, "every service status ready", func() bool {
		for i := 0; i < n; i++ {
			p, _, err := kv.Get(store.StatusKey("services", fmt.Sprintf("%s%02d", prefix, i)), nil)
			if err != nil || p == nil {
				return false
			}
			var st state.Status
			if json.Unmarshal(p.Value, &st) != nil || len(st.Conditions) < 2 || st.Conditions[1].Status != "True" {
				return false
			}
		}
		return true
	})
}
