//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// hostIP runs ip(8), failing the test on error.
func hostIP(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestRunHostRole runs `reconciler run --role host` as a process in a fresh
// network namespace (its netlink acts there, never on this machine's own
// links), against the real Engine through its unix socket and a Consul agent
// reached over a veth pair. It checks that the daemon wires the host agent
// in: the VLAN's shim appears in the namespace, its config network in the
// Engine, and the node's liveness and readiness in Consul; a SIGTERM removes
// the liveness key.
func TestRunHostRole(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a daemon against the real Docker Engine; skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and links")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	lab.EnsureSwarm(t)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	info, err := cli.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}

	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	suffix := hex.EncodeToString(b)
	vlan, ns, outer := "svd"+suffix, "svd-"+suffix, "svd"+suffix+"o"
	cfgName := spec.ConfigNetworkName(vlan)
	// 10.213.<b0>.<4k>/30 joins this namespace to the one under test.
	k := 4 * (int(b[1]) % 64)
	hostSide, nsSide := fmt.Sprintf("10.213.%d.%d", b[0], k+1), fmt.Sprintf("10.213.%d.%d", b[0], k+2)

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		n, err := cli.NetworkInspect(ctx, cfgName, network.InspectOptions{})
		if err == nil && n.Labels[spec.LabelManaged] == "true" && n.Labels[spec.LabelName] == vlan {
			if err := cli.NetworkRemove(ctx, n.ID); err != nil {
				t.Errorf("cleanup: remove %s: %v", cfgName, err)
			}
		}
	})
	hostIP(t, "netns", "add", ns)
	t.Cleanup(func() {
		// Deleting the namespace deletes its links, and with the inner end
		// the outer one.
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip netns del %s: %v: %s", ns, err, out)
		}
	})
	hostIP(t, "-n", ns, "link", "set", "lo", "up")
	hostIP(t, "-n", ns, "link", "add", "trunk0", "type", "veth", "peer", "name", "trunk0p")
	hostIP(t, "-n", ns, "link", "set", "trunk0", "up")
	hostIP(t, "-n", ns, "link", "set", "trunk0p", "up")
	hostIP(t, "link", "add", outer, "type", "veth", "peer", "name", "consul0", "netns", ns)
	hostIP(t, "addr", "add", hostSide+"/30", "dev", outer)
	hostIP(t, "link", "set", outer, "up")
	hostIP(t, "-n", ns, "addr", "add", nsSide+"/30", "dev", "consul0")
	hostIP(t, "-n", ns, "link", "set", "consul0", "up")

	consul := lab.StartConsul(t, lab.WithClientAddr(hostSide))
	kv := consul.Client(t).KV()
	store, err := state.New(state.Config{Address: consul.Addr, Prefix: "svd-" + suffix + "/"})
	if err != nil {
		t.Fatal(err)
	}
	put := func(key, value string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put(store.SpecKey("VLAN", vlan), fmt.Sprintf("apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: %s}\n"+
		"spec: {trunk: trunk0, subnet: 10.214.0.0/16, rangePlan: {chunkPrefix: 24}}\n", vlan))
	alloc, _ := json.Marshal(state.Allocation{Chunk: "10.214.7.0/24", Node: info.Swarm.NodeID, Created: time.Now().UTC()})
	put(store.AllocationKey(vlan, info.Swarm.NodeID), string(alloc))

	p := startRunIn(t, ns, "host", "--role", "host", "--consul-addr", consul.Addr, "--prefix", store.Prefix())

	nodeKey := store.NodeKey(info.Swarm.NodeID)
	waitFor(t, 30*time.Second, "the node ready in Consul", func() bool {
		pair, _, err := kv.Get(nodeKey, nil)
		if err != nil || pair == nil || pair.Session == "" {
			return false
		}
		var r state.NodeReport
		return json.Unmarshal(pair.Value, &r) == nil && r.VLANs[vlan].Ready && r.VLANs[vlan].Chunk == "10.214.7.0/24"
	})
	out, err := exec.Command("ip", "-n", ns, "-d", "addr", "show", "sv-"+vlan).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "alias swarmvlan:"+vlan) || !strings.Contains(string(out), "10.214.7.255/32") {
		t.Errorf("shim in the namespace: %v\n%s", err, out)
	}
	n, err := cli.NetworkInspect(ctx, cfgName, network.InspectOptions{})
	if err != nil || !n.ConfigOnly || len(n.IPAM.Config) != 1 || n.IPAM.Config[0].IPRange != "10.214.7.0/24" || n.Options["parent"] != "trunk0" {
		t.Errorf("config network: %v %+v", err, n)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("daemon exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon still running 20s after SIGTERM")
	}
	pair, _, err := kv.Get(nodeKey, nil)
	if err != nil || pair != nil {
		t.Errorf("node key after a clean stop: %v %+v", err, pair)
	}
}

// startRunIn starts `reconciler <args>` inside the network namespace ns,
// killed when the test ends.
func startRunIn(t *testing.T, ns, name string, args ...string) *proc {
	t.Helper()
	full := append([]string{"--net=/var/run/netns/" + ns, binary, "run", "--log-level", "debug"}, args...)
	p := &proc{cmd: exec.Command("nsenter", full...), name: name}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.Stderr = &procWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, p.Logs())
		}
	})
	return p
}

// procWriter appends to a proc's log.
type procWriter struct{ p *proc }

func (w *procWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.logs.Write(b)
}
