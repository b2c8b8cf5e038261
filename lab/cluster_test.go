package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/hashicorp/consul/api"
)

// The seed recipe's VLAN: one /16, a /24 per host (172.80.<host index>.0/24).
const (
	seedSubnet  = "172.80.0.0/16"
	seedGateway = "172.80.0.1"
	seedConfig  = "seed-config"
	seedNetwork = "seed"
	seedService = "seed-web"
)

func seedRange(h *Host) string { return fmt.Sprintf("172.80.%d.0/24", h.Index) }

// TestClusterSeedRecipe brings up a 3-host cluster (3 managers, 3 Consul
// servers), checks each host is what it claims to be, does the seed recipe
// by hand through each host's Docker API (a config-only macvlan network per
// node on trunk0, a swarm-scoped network from it, a service of 6 replicas
// at most 2 per node), checks where the tasks landed and what addresses
// they got, checks a container on h2 reaches a task on h3 over the trunk
// bridge, and after teardown that nothing of the run is left.
func TestClusterSeedRecipe(t *testing.T) {
	var id string
	t.Run("cluster", func(t *testing.T) {
		c := StartCluster(t, ClusterOptions{Hosts: 3, Managers: 3, Image: true})
		id = c.ID
		t.Logf("bring-up time: %s", c.StartupTime.Round(time.Millisecond))
		t.Run("hosts", func(t *testing.T) { checkHosts(t, c) })
		t.Run("consul", func(t *testing.T) { checkConsul(t, c) })
		t.Run("seed", func(t *testing.T) { checkSeedRecipe(t, c) })
	})
	if id == "" {
		t.Skip("no cluster was started")
	}
	// The subtest's cleanup has torn the cluster down.
	if left := RunLeftovers(id); len(left) > 0 {
		t.Errorf("left behind by run %s: %v", id, left)
	}
}

// checkHosts checks each host's daemon reports the host's own name and
// node, and each host's namespace has the interfaces and address promised.
func checkHosts(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seen := map[string]bool{}
	for _, h := range c.Hosts() {
		info, err := h.Docker(t).Info(ctx)
		if err != nil {
			t.Fatalf("%s: docker info: %v", h.Name, err)
		}
		if info.Name != h.Name || h.Hostname != h.Name {
			t.Errorf("%s: docker info name %q, swarm hostname %q", h.Name, info.Name, h.Hostname)
		}
		if info.Swarm.NodeID == "" || info.Swarm.NodeID != h.ID || seen[h.ID] {
			t.Errorf("%s: node id %q (Host.ID %q, seen before %v)", h.Name, info.Swarm.NodeID, h.ID, seen[h.ID])
		}
		seen[h.ID] = true
		if info.Swarm.ControlAvailable != h.Manager {
			t.Errorf("%s: manager %v, want %v", h.Name, info.Swarm.ControlAvailable, h.Manager)
		}
		out, err := h.Exec(ctx, "ip", "-o", "addr", "show").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: ip addr: %v: %s", h.Name, err, out)
		}
		if !strings.Contains(string(out), ManagementInterface+"    inet "+h.Addr+"/24") {
			t.Errorf("%s: %s lacks %s/24:\n%s", h.Name, ManagementInterface, h.Addr, out)
		}
		out, err = h.Exec(ctx, "ip", "-o", "link", "show", TrunkInterface, "up").CombinedOutput()
		if err != nil || !strings.Contains(string(out), TrunkInterface) {
			t.Errorf("%s: %s not up: %v: %s", h.Name, TrunkInterface, err, out)
		}
		out, err = h.Exec(ctx, "hostname").Output()
		if err != nil || strings.TrimSpace(string(out)) != h.Name {
			t.Errorf("%s: hostname inside the host = %q, %v", h.Name, out, err)
		}
	}
}

// checkConsul checks every agent is a member and that a key written through
// one agent is read through another.
func checkConsul(t *testing.T, c *Cluster) {
	members, err := c.Host(1).Consul(t).Agent().Members(false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	var want []string
	for _, h := range c.Hosts() {
		want = append(want, h.Name)
	}
	if !slices.Equal(names, want) {
		t.Errorf("consul members %v, want %v", names, want)
	}
	last := c.Host(len(c.Hosts()))
	value := []byte("from " + c.Host(1).Name)
	if _, err := c.Host(1).Consul(t).KV().Put(&api.KVPair{Key: "lab/check", Value: value}, nil); err != nil {
		t.Fatal(err)
	}
	p, _, err := last.Consul(t).KV().Get("lab/check", &api.QueryOptions{RequireConsistent: true})
	if err != nil || p == nil || !bytes.Equal(p.Value, value) {
		t.Fatalf("get through %s = %v, %v; want %q", last.Name, p, err, value)
	}
}

func checkSeedRecipe(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, h := range c.Hosts() {
		_, err := h.Docker(t).NetworkCreate(ctx, seedConfig, network.CreateOptions{
			Driver:     "macvlan",
			ConfigOnly: true,
			Options:    map[string]string{"parent": TrunkInterface},
			IPAM: &network.IPAM{Config: []network.IPAMConfig{{
				Subnet: seedSubnet, IPRange: seedRange(h), Gateway: seedGateway,
			}}},
		})
		if err != nil {
			t.Fatalf("%s: create %s: %v", h.Name, seedConfig, err)
		}
	}
	mgr := c.Host(1).Docker(t)
	if _, err := mgr.NetworkCreate(ctx, seedNetwork, network.CreateOptions{
		Driver:     "macvlan",
		Scope:      "swarm",
		Attachable: true,
		ConfigFrom: &network.ConfigReference{Network: seedConfig},
	}); err != nil {
		t.Fatalf("create %s: %v", seedNetwork, err)
	}
	replicas := uint64(6)
	created := time.Now()
	if _, err := mgr.ServiceCreate(ctx, swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: seedService},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: c.Image, Args: []string{"-listen", ":8080"}},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: seedNetwork}},
			Placement:     &swarm.Placement{MaxReplicas: 2},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}, swarm.ServiceCreateOptions{}); err != nil {
		t.Fatalf("create service: %v", err)
	}

	// Wait for the end state: 6 tasks running as Swarm sees them, and 6
	// running containers with an address as the hosts see them (the
	// container runs a moment before its task is reported running).
	var byHost map[*Host][]string
	var tasks []swarm.Task
	err := poll(ctx, 3*time.Minute, func() error {
		var err error
		tasks, err = mgr.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(
			filters.Arg("service", seedService), filters.Arg("desired-state", "running"))})
		if err != nil {
			return fmt.Errorf("list tasks: %w", err)
		}
		running := 0
		for _, tk := range tasks {
			if tk.Status.State == swarm.TaskStateRunning {
				running++
			}
		}
		if running != len(tasks) || running != int(replicas) {
			return fmt.Errorf("%d of %d tasks running (%d listed)", running, replicas, len(tasks))
		}
		byHost = map[*Host][]string{}
		total := 0
		for _, h := range c.Hosts() {
			ips, err := serviceIPs(ctx, h)
			if err != nil {
				return err
			}
			byHost[h] = ips
			total += len(ips)
		}
		if total != int(replicas) {
			return fmt.Errorf("%d of %d containers running with an address", total, replicas)
		}
		return nil
	})
	if err != nil {
		tasks, _ := mgr.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", seedService))})
		for _, tk := range tasks {
			t.Logf("task %s on %s: %s %s", tk.ID, tk.NodeID, tk.Status.State, tk.Status.Err)
		}
		t.Fatal(err)
	}

	t.Logf("%d tasks running %s after the service was created", replicas, time.Since(created).Round(time.Millisecond))

	seen := map[string]string{}
	for _, h := range c.Hosts() {
		ips := byHost[h]
		// 6 replicas at most 2 per node on 3 nodes: exactly 2 each.
		if len(ips) != 2 {
			t.Errorf("%s runs %d tasks %v, want 2", h.Name, len(ips), ips)
		}
		_, chunk, _ := net.ParseCIDR(seedRange(h))
		for _, a := range ips {
			if !chunk.Contains(net.ParseIP(a)) {
				t.Errorf("%s: task address %s outside the host's range %s", h.Name, a, chunk)
			}
			if other, dup := seen[a]; dup {
				t.Errorf("address %s given twice, on %s and %s", a, other, h.Name)
			}
			seen[a] = h.Name
		}
	}
	nodes := map[string]int{}
	for _, tk := range tasks {
		nodes[tk.NodeID]++
	}
	for _, h := range c.Hosts() {
		if nodes[h.ID] != 2 {
			t.Errorf("swarm places %d tasks on %s, want 2 (%v)", nodes[h.ID], h.Name, nodes)
		}
	}
	if t.Failed() {
		return
	}

	// h2 to h3 over the trunk: a one-off container on h2, on the same
	// network, fetches a task on h3, whose answer lists its own addresses.
	h2, h3 := c.Host(2), c.Host(3)
	target := byHost[h3][0]
	var out string
	var code int64
	err = poll(ctx, time.Minute, func() error {
		var err error
		out, code, err = runGet(ctx, h2, "http://"+net.JoinHostPort(target, "8080")+"/")
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("GET from %s to %s on %s exited %d: %s", h2.Name, target, h3.Name, code, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GET from %s to %s on %s answered:\n%s", h2.Name, target, h3.Name, out)
	if !strings.Contains(out, "address "+target+"\n") {
		t.Errorf("GET %s answered by a container without that address:\n%s", target, out)
	}
	// The check can fail: nothing holds this address of h3's range.
	unused := "172.80.3.250"
	out, code, err = runGet(ctx, h2, "http://"+net.JoinHostPort(unused, "8080")+"/")
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 {
		t.Errorf("GET of unused %s exited 0: %s", unused, out)
	}
}

// serviceIPs lists the seed-network addresses of the running containers of
// the seed service on h.
func serviceIPs(ctx context.Context, h *Host) ([]string, error) {
	cli, err := newDockerClient(h.DockerHost)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	list, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", "com.docker.swarm.service.name="+seedService),
		filters.Arg("status", "running"))})
	if err != nil {
		return nil, fmt.Errorf("%s: list containers: %w", h.Name, err)
	}
	var ips []string
	for _, ct := range list {
		if ct.NetworkSettings == nil {
			continue
		}
		if ep := ct.NetworkSettings.Networks[seedNetwork]; ep != nil && ep.IPAddress != "" {
			ips = append(ips, ep.IPAddress)
		}
	}
	slices.Sort(ips)
	return ips, nil
}

// runGet runs the test image with -get url in a one-off container on h,
// attached to the seed network, and returns its output and exit code.
func runGet(ctx context.Context, h *Host, url string) (string, int64, error) {
	cli, err := newDockerClient(h.DockerHost)
	if err != nil {
		return "", 0, err
	}
	defer cli.Close()
	created, err := cli.ContainerCreate(ctx,
		&container.Config{Image: ImageTestApp, Cmd: []string{"-get", url}},
		&container.HostConfig{},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{seedNetwork: {}}},
		nil, "")
	if err != nil {
		return "", 0, fmt.Errorf("%s: create getter: %w", h.Name, err)
	}
	defer cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true})
	waitc, errc := cli.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return "", 0, fmt.Errorf("%s: start getter: %w", h.Name, err)
	}
	var code int64
	select {
	case w := <-waitc:
		code = w.StatusCode
	case err := <-errc:
		return "", 0, fmt.Errorf("%s: wait for getter: %w", h.Name, err)
	}
	out, err := containerOutput(ctx, cli, created.ID)
	if err != nil {
		return "", 0, fmt.Errorf("%s: getter output: %w", h.Name, err)
	}
	return out, code, nil
}

func containerOutput(ctx context.Context, cli *client.Client, id string) (string, error) {
	rc, err := cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return "", err
	}
	defer rc.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, rc); err != nil {
		return "", err
	}
	return stdout.String() + stderr.String(), nil
}

// crashHelperEnv makes TestClusterCrashHelper start a cluster and then hang
// until killed; TestCleanupStaleAfterCrash runs it in a child process.
const crashHelperEnv = "SWARMVLAN_LAB_CRASH_HELPER"

// TestClusterCrashHelper is not a test of its own: run by
// TestCleanupStaleAfterCrash, it starts a one-host cluster with a running
// container, prints the run id and waits to be SIGKILLed, so that nothing
// of its teardown runs.
func TestClusterCrashHelper(t *testing.T) {
	if os.Getenv(crashHelperEnv) != "1" {
		t.Skip("runs only as the child of TestCleanupStaleAfterCrash")
	}
	c := StartCluster(t, ClusterOptions{Hosts: 1, Image: true})
	ctx := context.Background()
	cli := c.Host(1).Docker(t)
	created, err := cli.ContainerCreate(ctx, &container.Config{Image: ImageTestApp},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("LAB-RUN-ID=%s\n", c.ID)
	select {}
}

// TestCleanupStaleAfterCrash kills a process in the middle of a cluster
// run, as a crash or a test timeout would, checks that the run left things
// behind, and that CleanupStale removes all of them while a live run's
// namespace and directory stay untouched.
func TestCleanupStaleAfterCrash(t *testing.T) {
	requireClusterTools(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	// A live run of this process: CleanupStale must leave it alone.
	liveID, _, liveDir, err := claimRun()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeRun(liveID); err != nil {
			t.Error(err)
		}
	})
	liveNs := hostNsName(liveID, 1)
	if err := ip(context.Background(), "netns", "add", liveNs); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestClusterCrashHelper$", "-test.v")
	cmd.Env = append(os.Environ(), crashHelperEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var id string
	var transcript strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		transcript.WriteString(line + "\n")
		if v, ok := strings.CutPrefix(line, "LAB-RUN-ID="); ok {
			id = v
			break
		}
	}
	if id == "" {
		t.Fatalf("helper ended without starting a cluster:\n%s\n%s", transcript.String(), stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	left := RunLeftovers(id)
	t.Logf("a crashed run leaves %d things: %v", len(left), left)
	for _, want := range []string{"netns " + hostNsName(id, 1), "link " + bridgeName(id), "dir " + filepath.Join(labRunRoot, id)} {
		if !slices.Contains(left, want) {
			t.Errorf("crashed run %s did not leave %q behind; the check below proves nothing about it", id, want)
		}
	}

	if err := CleanupStale(); err != nil {
		t.Fatalf("CleanupStale: %v", err)
	}
	if left := RunLeftovers(id); len(left) > 0 {
		t.Errorf("after CleanupStale, run %s still has: %v", id, left)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, liveNs)); err != nil {
		t.Errorf("CleanupStale removed the live run's namespace %s: %v", liveNs, err)
	}
	if _, err := os.Stat(filepath.Join(liveDir, ownerFile)); err != nil {
		t.Errorf("CleanupStale removed the live run's directory: %v", err)
	}
}

// TestClusterFaults exercises the fault helpers on a 3-host cluster (h1
// the only manager and Consul server, so faults on h2 and h3 leave both
// clusters their quorum) and checks each fault's effect and recovery as
// the rest of the cluster and the test process see them.
func TestClusterFaults(t *testing.T) {
	c := StartCluster(t, ClusterOptions{Hosts: 3, Managers: 1, ConsulServers: 1, Image: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mgr := c.Host(1).Docker(t)
	h2, h3 := c.Host(2), c.Host(3)

	t.Run("exec", func(t *testing.T) {
		out, err := h2.Exec(ctx, "hostname").Output()
		if err != nil || strings.TrimSpace(string(out)) != h2.Name {
			t.Errorf("hostname in %s = %q, %v", h2.Name, out, err)
		}
		bin, err := ConsulBinary()
		if err != nil {
			t.Fatal(err)
		}
		// The consul CLI inside the host finds its agent through
		// CONSUL_HTTP_ADDR=127.0.0.1:8500, the loopback of h2.
		if out, err := h2.Exec(ctx, bin, "kv", "put", "lab/exec", h2.Name).CombinedOutput(); err != nil {
			t.Fatalf("consul kv put in %s: %v: %s", h2.Name, err, out)
		}
		p, _, err := c.Host(1).Consul(t).KV().Get("lab/exec", nil)
		if err != nil || p == nil || string(p.Value) != h2.Name {
			t.Errorf("lab/exec through h1 = %v, %v; want %q", p, err, h2.Name)
		}
		if _, err := exec.LookPath("docker"); err == nil {
			out, err := h2.Exec(ctx, "docker", "info", "--format", "{{.Name}}").Output()
			if err != nil || strings.TrimSpace(string(out)) != h2.Name {
				t.Errorf("docker info through DOCKER_HOST in %s = %q, %v", h2.Name, out, err)
			}
		}
	})

	t.Run("process", func(t *testing.T) {
		p := h2.StartProcess(t, "sh", "-c", `echo "$(hostname) $DOCKER_HOST"; trap 'echo term; exit 3' TERM; while :; do sleep 0.1; done`)
		want := h2.Name + " " + h2.DockerHost + "\n"
		if err := poll(ctx, 10*time.Second, func() error {
			if p.Logs() != want {
				return fmt.Errorf("process log %q, want %q", p.Logs(), want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		p.Stop()
		if p.Running() || !strings.HasSuffix(p.Logs(), "term\n") {
			t.Errorf("after Stop: running %v, log %q (want the TERM trap's output)", p.Running(), p.Logs())
		}
		var ee *exec.ExitError
		if err := p.Err(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Errorf("exit after SIGTERM: %v, want status 3", err)
		}
		k := h2.StartProcess(t, "sleep", "1000")
		k.Kill()
		if k.Running() {
			t.Error("running after Kill")
		}
	})

	t.Run("docker restart", func(t *testing.T) {
		cli := h2.Docker(t)
		h2.KillDocker()
		if _, err := cli.Ping(ctx); err == nil {
			t.Fatal("dockerd answers after KillDocker")
		}
		if err := h2.StartDocker(ctx); err != nil {
			t.Fatal(err)
		}
		waitNodeReady(ctx, t, mgr, h2)
	})

	t.Run("consul restart", func(t *testing.T) {
		h3.KillConsul()
		waitMember(ctx, t, c, h3, 4) // serf.StatusFailed
		if err := h3.StartConsul(ctx); err != nil {
			t.Fatal(err)
		}
		waitMember(ctx, t, c, h3, 1) // serf.StatusAlive
	})

	t.Run("isolate", func(t *testing.T) {
		if err := h3.Isolate(); err != nil {
			t.Fatal(err)
		}
		healed := false
		t.Cleanup(func() {
			if !healed {
				h3.Heal()
			}
		})
		if conn, err := net.DialTimeout("tcp", h3.ConsulAddr, time.Second); err == nil {
			conn.Close()
			t.Fatalf("%s reachable while isolated", h3.ConsulAddr)
		}
		waitMember(ctx, t, c, h3, 4)
		if err := h3.Heal(); err != nil {
			t.Fatal(err)
		}
		healed = true
		waitMember(ctx, t, c, h3, 1)
	})

	t.Run("crash and boot", func(t *testing.T) {
		cli := h2.Docker(t)
		created, err := cli.ContainerCreate(ctx, &container.Config{Image: c.Image},
			&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		// Kernel state a host reconciler would have made: gone after a
		// reboot.
		if out, err := h2.Exec(ctx, "ip", "link", "add", "svshim", "link", TrunkInterface, "type", "macvlan", "mode", "bridge").CombinedOutput(); err != nil {
			t.Fatalf("add macvlan: %v: %s", err, out)
		}
		if out, err := h2.Exec(ctx, "ip", "link", "set", TrunkInterface, "promisc", "on").CombinedOutput(); err != nil {
			t.Fatalf("promisc: %v: %s", err, out)
		}
		p := h2.StartProcess(t, "sleep", "1000")

		h2.Kill()
		if p.Running() {
			t.Error("process survived the crash")
		}
		if left := hostProcesses(h2); len(left) > 0 {
			t.Errorf("processes of %s survived the crash: %v", h2.Name, left)
		}
		if err := h2.Boot(ctx); err != nil {
			t.Fatal(err)
		}
		out, err := h2.Exec(ctx, "ip", "-o", "link", "show").Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "svshim") || strings.Contains(string(out), "PROMISC") {
			t.Errorf("kernel state survived the reboot:\n%s", out)
		}
		waitNodeReady(ctx, t, mgr, h2)
		waitMember(ctx, t, c, h2, 1)
		ct, err := cli.ContainerInspect(ctx, created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ct.State.Running {
			t.Errorf("container %s running after the crash, without restart policy", created.ID)
		}
	})
}

// hostProcesses lists the processes in h's namespace and containers.
func hostProcesses(h *Host) []int {
	var st syscall.Stat_t
	if err := syscall.Stat(h.Netns, &st); err != nil {
		return nil
	}
	ns := fmt.Sprintf("net:[%d]", st.Ino)
	return matchProcesses(func(pid int) bool {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		return (err == nil && link == ns) || inHostCgroup(pid, h.cluster.ID, h.Index)
	})
}

// waitNodeReady waits until h's daemon is back in the swarm as the same
// node and the manager sees that node ready.
func waitNodeReady(ctx context.Context, t *testing.T, mgr *client.Client, h *Host) {
	t.Helper()
	self := h.Docker(t)
	err := poll(ctx, 90*time.Second, func() error {
		info, err := self.Info(ctx)
		if err != nil {
			return err
		}
		if info.Swarm.LocalNodeState != swarm.LocalNodeStateActive || info.Swarm.NodeID != h.ID {
			return fmt.Errorf("%s: swarm state %s as node %q, want active as %q", h.Name, info.Swarm.LocalNodeState, info.Swarm.NodeID, h.ID)
		}
		n, _, err := mgr.NodeInspectWithRaw(ctx, h.ID)
		if err != nil {
			return err
		}
		if n.Status.State != swarm.NodeStateReady {
			return fmt.Errorf("node %s is %s", h.Name, n.Status.State)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitMember waits until h1's agent sees h with serf status want.
func waitMember(ctx context.Context, t *testing.T, c *Cluster, h *Host, want int) {
	t.Helper()
	cli := c.Host(1).Consul(t)
	err := poll(ctx, time.Minute, func() error {
		members, err := cli.Agent().Members(false)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.Name == h.Name {
				if m.Status != want {
					return fmt.Errorf("consul member %s has status %d, want %d", h.Name, m.Status, want)
				}
				return nil
			}
		}
		return fmt.Errorf("consul member %s not listed", h.Name)
	})
	if err != nil {
		t.Fatal(err)
	}
}
