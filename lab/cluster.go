package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
)

// TrunkInterface is the name of every lab host's trunk: a veth into the
// run's trunk bridge, up and without an address, the parent that VLAN
// documents name (trunk: trunk0).
const TrunkInterface = "trunk0"

// ManagementInterface is the name of every lab host's management interface,
// which carries Swarm, Consul and the test process's traffic.
const ManagementInterface = "eth0"

// clusterStartTimeout bounds the whole bring-up.
const clusterStartTimeout = 5 * time.Minute

// ClusterOptions sets the shape of a lab cluster.
type ClusterOptions struct {
	// Hosts is the number of hosts; default 3.
	Hosts int
	// Managers is how many of the hosts, from h1 on, are Swarm managers;
	// default min(3, Hosts).
	Managers int
	// ConsulServers is how many of the hosts, from h1 on, run a Consul
	// server; the others run a client agent. Default min(3, Hosts).
	ConsulServers int
	// Image loads the test image (ImageTestApp) into every host's daemon.
	Image bool
	// Engine is the Docker Engine every host runs (EngineByName); nil is
	// the machine's own dockerd.
	Engine *Engine
	// MountNamespace gives every host's dockerd a mount namespace of its
	// own, with its own /run and the Engine at /var/run/docker.sock there,
	// so containers that mount the Docker socket reach their own host's
	// Engine (lab/mountns.go).
	MountNamespace bool
}

func (o *ClusterOptions) setDefaults() error {
	if o.Hosts == 0 {
		o.Hosts = 3
	}
	if o.Managers == 0 {
		o.Managers = min(3, o.Hosts)
	}
	if o.ConsulServers == 0 {
		o.ConsulServers = min(3, o.Hosts)
	}
	switch {
	case o.Hosts < 1 || o.Hosts > 200:
		return fmt.Errorf("cluster options: hosts %d: must be between 1 and 200", o.Hosts)
	case o.Managers < 1 || o.Managers > o.Hosts:
		return fmt.Errorf("cluster options: managers %d: must be between 1 and hosts (%d)", o.Managers, o.Hosts)
	case o.ConsulServers < 1 || o.ConsulServers > o.Hosts:
		return fmt.Errorf("cluster options: consul servers %d: must be between 1 and hosts (%d)", o.ConsulServers, o.Hosts)
	}
	return nil
}

// Cluster is a multi-host test bed on one machine: each host is a network
// namespace with its own dockerd and Consul agent, the hosts share a
// management bridge (Swarm and Consul traffic, reachable from the test
// process) and a trunk bridge (the VLANs' parent), and the daemons form
// one Swarm and one Consul cluster.
type Cluster struct {
	// ID is the run id every name of the run carries (three digits).
	ID string
	// Subnet is the management subnet, 10.99.<ID>.0/24.
	Subnet string
	// Gateway is the root namespace's address on the management bridge.
	Gateway string
	// Bridge and TrunkBridge are the root-namespace bridges.
	Bridge, TrunkBridge string
	// Dir is the run directory.
	Dir string
	// Image is the loaded test image reference, when ClusterOptions.Image.
	Image string
	// StartupTime is how long StartCluster took to bring the cluster up.
	StartupTime time.Duration

	opts     ClusterOptions
	octet    int
	hosts    []*Host
	downOnce sync.Once
	// detached clusters outlive the process that started them.
	detached bool
}

// Host is one host of a Cluster.
type Host struct {
	// Index is the host's number, 1-based.
	Index int
	// Name is the host's hostname (h1, h2, ...), also its Consul node name.
	Name string
	// Netns is the path of the host's network namespace.
	Netns string
	// Addr is the host's management (eth0) address.
	Addr string
	// DockerHost is the host's Docker endpoint, unix://<run dir>/hN/docker.sock.
	DockerHost string
	// ConsulAddr is the host's Consul HTTP API, <Addr>:8500, reachable
	// from the test process; inside the host it is also 127.0.0.1:8500.
	ConsulAddr string
	// ID is the host's Swarm node ID.
	ID string
	// Hostname is the hostname Swarm reports for the node (equal to Name).
	Hostname string
	// Manager tells whether the host is a Swarm manager.
	Manager bool
	// ConsulServer tells whether the host runs a Consul server.
	ConsulServer bool
	// Dir is the host's directory under the run directory.
	Dir string

	cluster   *Cluster
	nsName    string
	uts       string
	mgmtVeth  string
	trunkVeth string
	docker    *dockerDaemon
	mountns   *mountNamespace

	mu      sync.Mutex
	consul  *ConsulAgent
	procs   []*Process
	procSeq int
}

// requireClusterTools skips the test when the machine cannot host a
// cluster.
func requireClusterTools(t testing.TB) {
	t.Helper()
	if err := clusterTools(); err != nil {
		t.Skip(err)
	}
}

// clusterTools says what the machine lacks to host a cluster, if anything.
func clusterTools() error {
	if os.Geteuid() != 0 {
		return errors.New("lab cluster needs root (network namespaces, bridges, iptables, dockerd)")
	}
	for _, tool := range []string{"nsenter", "unshare", "ip", "iptables", "dockerd", "containerd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("lab cluster needs %s: %w", tool, err)
		}
	}
	return nil
}

// StartCluster brings up a cluster for a test and tears it down when the
// test ends, failed, panicked or not. It removes leftovers of crashed
// earlier runs first. The test is skipped when the machine lacks root or
// the tools a cluster needs.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	requireClusterTools(t)
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if _, err := ConsulBinary(); err != nil {
		t.Fatalf("lab cluster: %v", err)
	}
	if err := CleanupStale(); err != nil {
		t.Logf("lab cluster: leftovers of earlier runs: %v", err)
	}
	begin := time.Now()
	id, octet, dir, err := claimRun()
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(id, octet, dir, opts)
	// Registered before anything exists so a failure half-way still
	// removes what was made.
	t.Cleanup(func() { c.teardown(t) })

	ctx, cancel := context.WithTimeout(context.Background(), clusterStartTimeout)
	defer cancel()
	if err := c.bringUp(ctx, t.Logf); err != nil {
		t.Fatalf("lab cluster %s: %v", id, err)
	}
	c.StartupTime = time.Since(begin)
	t.Logf("lab cluster %s: %d hosts (%d managers, %d consul servers, %s) up in %s",
		id, opts.Hosts, opts.Managers, opts.ConsulServers, opts.Engine, c.StartupTime.Round(10*time.Millisecond))
	return c
}

// clusterInfoFile is the file in a detached cluster's run directory that
// describes it (ClusterInfo as JSON).
const clusterInfoFile = "cluster.json"

// ClusterInfo describes a detached cluster, for whoever looks at it later.
type ClusterInfo struct {
	ID      string     `json:"id"`
	Subnet  string     `json:"subnet"`
	Dir     string     `json:"dir"`
	Image   string     `json:"image,omitempty"`
	Started time.Time  `json:"started"`
	Hosts   []HostInfo `json:"hosts"`
}

// HostInfo describes one host of a detached cluster.
type HostInfo struct {
	Name         string `json:"name"`
	Netns        string `json:"netns"`
	Addr         string `json:"addr"`
	DockerHost   string `json:"dockerHost"`
	ConsulAddr   string `json:"consulAddr"`
	Manager      bool   `json:"manager"`
	ConsulServer bool   `json:"consulServer"`
	Dir          string `json:"dir"`
}

// StartClusterDetached brings up a cluster that outlives the calling
// process: its daemons run in sessions of their own, it is not torn down
// when the process ends, and CleanupStale leaves it alone. Its description
// is kept in /tmp/swarmvlan-lab/<id>/cluster.json (ReadClusterInfo), and
// TeardownCluster(id) removes it. If the bring-up fails, what was made is
// removed before StartClusterDetached returns. logf, when not nil, gets
// progress lines.
func StartClusterDetached(ctx context.Context, opts ClusterOptions, logf func(format string, args ...any)) (*Cluster, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := clusterTools(); err != nil {
		return nil, err
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if _, err := ConsulBinary(); err != nil {
		return nil, fmt.Errorf("lab cluster: %w", err)
	}
	if err := CleanupStale(); err != nil {
		logf("lab cluster: leftovers of earlier runs: %v", err)
	}
	begin := time.Now()
	id, octet, dir, err := claimRun()
	if err != nil {
		return nil, err
	}
	c := newCluster(id, octet, dir, opts)
	c.detached = true
	for _, h := range c.hosts {
		h.docker.detached = true
	}
	fail := func(err error) (*Cluster, error) {
		if rerr := removeRun(id); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, fmt.Errorf("lab cluster %s: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
	defer cancel()
	if err := c.bringUp(ctx, logf); err != nil {
		return fail(err)
	}
	c.StartupTime = time.Since(begin)
	info := c.Info()
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(dir, clusterInfoFile), append(b, '\n'), 0o644); err != nil {
		return fail(err)
	}
	// From here on no process owns the run: only TeardownCluster ends it.
	if err := writeDetachedOwner(dir); err != nil {
		return fail(err)
	}
	return c, nil
}

// Info describes the cluster.
func (c *Cluster) Info() ClusterInfo {
	info := ClusterInfo{ID: c.ID, Subnet: c.Subnet, Dir: c.Dir, Image: c.Image, Started: time.Now().UTC()}
	for _, h := range c.hosts {
		info.Hosts = append(info.Hosts, HostInfo{
			Name: h.Name, Netns: h.Netns, Addr: h.Addr, DockerHost: h.DockerHost,
			ConsulAddr: h.ConsulAddr, Manager: h.Manager, ConsulServer: h.ConsulServer, Dir: h.Dir,
		})
	}
	return info
}

// DetachedClusters lists the ids of the detached clusters that exist.
func DetachedClusters() []string {
	entries, err := os.ReadDir(labRunRoot)
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range entries {
		if reRunID.MatchString(e.Name()) && isDetached(filepath.Join(labRunRoot, e.Name())) {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// ReadClusterInfo reads the description of detached cluster id.
func ReadClusterInfo(id string) (*ClusterInfo, error) {
	if !reRunID.MatchString(id) {
		return nil, fmt.Errorf("lab cluster %q: not a run id (three digits)", id)
	}
	b, err := os.ReadFile(filepath.Join(labRunRoot, id, clusterInfoFile))
	if err != nil {
		return nil, fmt.Errorf("lab cluster %s: %w", id, err)
	}
	var info ClusterInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("lab cluster %s: %s: %w", id, clusterInfoFile, err)
	}
	return &info, nil
}

// TeardownCluster removes detached cluster id: every process of the run
// (daemons, agents, whatever was started in its hosts, containers), its
// mounts, namespaces, links, FORWARD rules, cgroups and run directory, and
// checks that nothing is left. It refuses a run that is not detached, which
// belongs to a live test.
func TeardownCluster(id string) error {
	if !reRunID.MatchString(id) {
		return fmt.Errorf("lab cluster %q: not a run id (three digits)", id)
	}
	dir := filepath.Join(labRunRoot, id)
	if _, err := os.Lstat(dir); err == nil && !isDetached(dir) && ownerAlive(dir) {
		return fmt.Errorf("lab cluster %s: not detached; its test tears it down", id)
	}
	if err := removeRun(id); err != nil {
		return err
	}
	if left := RunLeftovers(id); len(left) > 0 {
		return fmt.Errorf("lab cluster %s: left behind after teardown: %v", id, left)
	}
	return nil
}

func newCluster(id string, octet int, dir string, opts ClusterOptions) *Cluster {
	c := &Cluster{
		ID:          id,
		Subnet:      fmt.Sprintf("10.99.%d.0/24", octet),
		Gateway:     fmt.Sprintf("10.99.%d.1", octet),
		Bridge:      bridgeName(id),
		TrunkBridge: trunkBridgeName(id),
		Dir:         dir,
		opts:        opts,
		octet:       octet,
	}
	for n := 1; n <= opts.Hosts; n++ {
		ns := hostNsName(id, n)
		hdir := filepath.Join(dir, "h"+strconv.Itoa(n))
		h := &Host{
			Index:        n,
			Name:         "h" + strconv.Itoa(n),
			Netns:        filepath.Join(netnsDir, ns),
			Addr:         fmt.Sprintf("10.99.%d.%d", octet, 10+n),
			Manager:      n <= opts.Managers,
			ConsulServer: n <= opts.ConsulServers,
			Dir:          hdir,
			cluster:      c,
			nsName:       ns,
			uts:          filepath.Join(hdir, "uts"),
			mgmtVeth:     ns + "m",
			trunkVeth:    ns + "t",
		}
		h.ConsulAddr = h.Addr + ":" + strconv.Itoa(DefaultConsulPorts.HTTP)
		h.docker = &dockerDaemon{
			netns:        h.Netns,
			uts:          h.uts,
			dir:          hdir,
			cgroupParent: ns,
			wantName:     h.Name,
			engine:       opts.Engine,
		}
		if opts.MountNamespace {
			h.mountns = &mountNamespace{dir: filepath.Join(hdir, "ns")}
			h.docker.mountns = h.mountns.file()
		}
		h.DockerHost = h.docker.host()
		c.hosts = append(c.hosts, h)
	}
	return c
}

// bringUp creates the network, then starts every host's dockerd and Consul
// agent at once, then forms the swarm while the test image loads.
func (c *Cluster) bringUp(ctx context.Context, logf func(format string, args ...any)) error {
	type image struct {
		data []byte
		err  error
	}
	imagec := make(chan image, 1)
	if c.opts.Image {
		// The go build and docker build of the image overlap the bring-up.
		go func() {
			data, err := saveTestImage(ctx, "")
			imagec <- image{data, err}
		}()
	}

	phase := time.Now()
	if err := c.createNetwork(ctx); err != nil {
		return err
	}
	tNet := time.Since(phase)

	phase = time.Now()
	var servers []string
	for _, h := range c.hosts {
		if h.ConsulServer {
			servers = append(servers, h.Addr)
		}
	}
	err := forEach(c.hosts, func(h *Host) error {
		return parallel(
			func() error { return h.docker.start(ctx) },
			func() error { return h.startConsulFirst(ctx, servers) },
		)
	})
	if err != nil {
		return err
	}
	tDaemons := time.Since(phase)

	phase = time.Now()
	var tImage time.Duration
	err = parallel(
		func() error { return c.formSwarm(ctx) },
		func() error { return c.waitConsulMembers(ctx) },
		func() error {
			if !c.opts.Image {
				return nil
			}
			img := <-imagec
			if img.err != nil {
				// Without a reachable engine in the root namespace, build
				// on the first host instead.
				logf("lab cluster %s: test image from the local engine: %v; building on h1", c.ID, img.err)
				img.data, img.err = saveTestImage(ctx, c.hosts[0].DockerHost)
				if img.err != nil {
					return img.err
				}
			}
			err := forEach(c.hosts, func(h *Host) error { return loadImage(ctx, h, img.data) })
			tImage = time.Since(phase)
			c.Image = ImageTestApp
			return err
		},
	)
	if err != nil {
		return err
	}
	logf("lab cluster %s: network %s, dockerd+consul %s, swarm+consul cluster+image %s (image %s)",
		c.ID, tNet.Round(time.Millisecond), tDaemons.Round(time.Millisecond),
		time.Since(phase).Round(time.Millisecond), tImage.Round(time.Millisecond))
	return nil
}

// forEach runs f for every item at once and joins the errors.
func forEach[T any](items []T, f func(T) error) error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(it)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// parallel runs the functions at once and joins their errors.
func parallel(fns ...func() error) error {
	return forEach(fns, func(f func() error) error { return f() })
}

// createNetwork makes the two bridges, their FORWARD rules and each host's
// namespace, veths, addresses and UTS namespace.
func (c *Cluster) createNetwork(ctx context.Context) error {
	steps := [][]string{
		{"link", "add", c.Bridge, "type", "bridge"},
		{"addr", "add", c.Gateway + "/24", "dev", c.Bridge},
		{"link", "set", c.Bridge, "up"},
		{"link", "add", c.TrunkBridge, "type", "bridge"},
		{"link", "set", c.TrunkBridge, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	for _, b := range []string{c.Bridge, c.TrunkBridge} {
		if err := ensureForward(ctx, b); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	return forEach(c.hosts, func(h *Host) error { return h.createNetwork(ctx) })
}

func (h *Host) createNetwork(ctx context.Context) error {
	c := h.cluster
	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	steps := [][]string{
		{"netns", "add", h.nsName},
		{"link", "add", h.mgmtVeth, "type", "veth", "peer", "name", ManagementInterface, "netns", h.nsName},
		{"link", "set", h.mgmtVeth, "master", c.Bridge, "up"},
		{"link", "add", h.trunkVeth, "type", "veth", "peer", "name", TrunkInterface, "netns", h.nsName},
		{"link", "set", h.trunkVeth, "master", c.TrunkBridge, "up"},
		{"-n", h.nsName, "link", "set", "lo", "up"},
		{"-n", h.nsName, "addr", "add", h.Addr + "/24", "dev", ManagementInterface},
		{"-n", h.nsName, "link", "set", ManagementInterface, "up"},
		{"-n", h.nsName, "link", "set", TrunkInterface, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	// A persistent UTS namespace per host, like the network namespace, so
	// dockerd, the Consul agent and every process started in the host see
	// its own hostname.
	if err := os.WriteFile(h.uts, nil, 0o644); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	if err := runCmd(ctx, "unshare", "--uts="+h.uts, "hostname", h.Name); err != nil {
		return fmt.Errorf("host %s: uts namespace: %w", h.Name, err)
	}
	if h.mountns != nil {
		if err := h.mountns.create(ctx); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return nil
}

// startConsulFirst starts the host's agent for the first time; servers
// are the servers' addresses every agent joins.
func (h *Host) startConsulFirst(ctx context.Context, servers []string) error {
	opts := []ConsulOption{
		WithCommandPrefix("nsenter", "--net="+h.Netns, "--uts="+h.uts, "--"),
		WithNodeName(h.Name),
		WithBindAddr(h.Addr),
		// Loopback for what runs inside the host, eth0 for the test process.
		WithClientAddr("127.0.0.1 " + h.Addr),
		WithHTTPAddr(h.Addr),
		WithPorts(DefaultConsulPorts),
		WithRetryJoin(servers...),
	}
	if h.cluster.detached {
		opts = append(opts, withDetached())
	}
	if h.ConsulServer {
		opts = append(opts, WithServer(h.cluster.opts.ConsulServers))
	} else {
		opts = append(opts, WithClientAgent())
	}
	a, err := StartConsulAgent(ctx, filepath.Join(h.Dir, "consul"), opts...)
	if err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	h.mu.Lock()
	h.consul = a
	h.mu.Unlock()
	return nil
}

// waitConsulMembers waits until every agent is an alive member and the
// servers have a leader.
func (c *Cluster) waitConsulMembers(ctx context.Context) error {
	cli, err := api.NewClient(&api.Config{Address: c.hosts[0].ConsulAddr, Scheme: "http"})
	if err != nil {
		return fmt.Errorf("consul cluster: %w", err)
	}
	return poll(ctx, 60*time.Second, func() error {
		leader, err := cli.Status().Leader()
		if err != nil || leader == "" {
			return fmt.Errorf("consul cluster: no leader (%v)", err)
		}
		members, err := cli.Agent().Members(false)
		if err != nil {
			return fmt.Errorf("consul cluster: members: %w", err)
		}
		alive := 0
		for _, m := range members {
			if m.Status == 1 { // serf.StatusAlive
				alive++
			}
		}
		if alive != len(c.hosts) {
			return fmt.Errorf("consul cluster: %d of %d members alive", alive, len(c.hosts))
		}
		return nil
	})
}

// poll calls f until it returns nil or timeout (or ctx) runs out, and then
// returns f's last error.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %s)", err, timeout)
		case <-tick.C:
		}
	}
}

// formSwarm initialises the swarm on h1, joins the other managers one by
// one (Raft adds one member at a time) and the workers all at once, and
// waits until every node is ready.
func (c *Cluster) formSwarm(ctx context.Context) error {
	h1 := c.hosts[0]
	cli1, err := newDockerClient(h1.DockerHost)
	if err != nil {
		return err
	}
	defer cli1.Close()
	if _, err := cli1.SwarmInit(ctx, swarm.InitRequest{ListenAddr: h1.Addr + ":2377", AdvertiseAddr: h1.Addr}); err != nil {
		return fmt.Errorf("swarm init on %s: %w", h1.Name, err)
	}
	sw, err := cli1.SwarmInspect(ctx)
	if err != nil {
		return fmt.Errorf("swarm inspect on %s: %w", h1.Name, err)
	}
	remotes := []string{h1.Addr + ":2377"}
	for _, h := range c.hosts[1:] {
		if !h.Manager {
			continue
		}
		if err := h.joinSwarm(ctx, sw.JoinTokens.Manager, remotes); err != nil {
			return err
		}
		remotes = append(remotes, h.Addr+":2377")
	}
	var workers []*Host
	for _, h := range c.hosts {
		if !h.Manager {
			workers = append(workers, h)
		}
	}
	if err := forEach(workers, func(h *Host) error { return h.joinSwarm(ctx, sw.JoinTokens.Worker, remotes) }); err != nil {
		return err
	}
	for _, h := range c.hosts {
		cli, err := newDockerClient(h.DockerHost)
		if err != nil {
			return err
		}
		info, err := cli.Info(ctx)
		cli.Close()
		if err != nil {
			return fmt.Errorf("host %s: docker info: %w", h.Name, err)
		}
		h.ID = info.Swarm.NodeID
	}
	return poll(ctx, 90*time.Second, func() error {
		nodes, err := cli1.NodeList(ctx, swarm.NodeListOptions{})
		if err != nil {
			return fmt.Errorf("swarm nodes: %w", err)
		}
		byID := map[string]swarm.Node{}
		for _, n := range nodes {
			byID[n.ID] = n
		}
		for _, h := range c.hosts {
			n, ok := byID[h.ID]
			switch {
			case !ok:
				return fmt.Errorf("swarm: node %s of host %s not listed", h.ID, h.Name)
			case n.Status.State != swarm.NodeStateReady:
				return fmt.Errorf("swarm: host %s is %s", h.Name, n.Status.State)
			case h.Manager && (n.ManagerStatus == nil || n.ManagerStatus.Reachability != swarm.ReachabilityReachable):
				return fmt.Errorf("swarm: manager %s not reachable", h.Name)
			case n.Description.Hostname != h.Name:
				return fmt.Errorf("swarm: host %s reports hostname %q", h.Name, n.Description.Hostname)
			}
			h.Hostname = n.Description.Hostname
		}
		return nil
	})
}

func (h *Host) joinSwarm(ctx context.Context, token string, remotes []string) error {
	cli, err := newDockerClient(h.DockerHost)
	if err != nil {
		return err
	}
	defer cli.Close()
	err = cli.SwarmJoin(ctx, swarm.JoinRequest{
		ListenAddr:    h.Addr + ":2377",
		AdvertiseAddr: h.Addr,
		RemoteAddrs:   remotes,
		JoinToken:     token,
	})
	if err != nil {
		return fmt.Errorf("host %s: swarm join: %w", h.Name, err)
	}
	return nil
}

// saveTestImage builds the test image on the engine at dockerHost ("" =
// the environment's) and returns it as a docker save archive.
func saveTestImage(ctx context.Context, dockerHost string) ([]byte, error) {
	ref, err := BuildTestImage(ctx, dockerHost)
	if err != nil {
		return nil, err
	}
	cli, err := imageClient(dockerHost)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	rc, err := cli.ImageSave(ctx, []string{ref})
	if err != nil {
		return nil, fmt.Errorf("testapp image: save: %w", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("testapp image: save: %w", err)
	}
	return data, nil
}

// loadImage loads a docker save archive of the test image into h's daemon.
func loadImage(ctx context.Context, h *Host, data []byte) error {
	cli, err := newDockerClient(h.DockerHost)
	if err != nil {
		return err
	}
	defer cli.Close()
	resp, err := cli.ImageLoad(ctx, bytes.NewReader(data), client.ImageLoadWithQuiet(true))
	if err != nil {
		return fmt.Errorf("host %s: load test image: %w", h.Name, err)
	}
	defer resp.Body.Close()
	// Like a build, a load reports its failure inside the stream.
	if err := imageBuildResult(resp.Body); err != nil {
		return fmt.Errorf("host %s: load test image: %w", h.Name, err)
	}
	if _, err := cli.ImageInspect(ctx, ImageTestApp); err != nil {
		return fmt.Errorf("host %s: test image not there after load: %w", h.Name, err)
	}
	return nil
}

// Host returns host i, counted from 1 like the names (Host(1) is h1).
func (c *Cluster) Host(i int) *Host {
	if i < 1 || i > len(c.hosts) {
		panic(fmt.Sprintf("lab cluster %s: no host %d (hosts are 1..%d)", c.ID, i, len(c.hosts)))
	}
	return c.hosts[i-1]
}

// Hosts returns every host, h1 first.
func (c *Cluster) Hosts() []*Host {
	return append([]*Host(nil), c.hosts...)
}

// Managers returns the hosts that are Swarm managers.
func (c *Cluster) Managers() []*Host {
	var out []*Host
	for _, h := range c.hosts {
		if h.Manager {
			out = append(out, h)
		}
	}
	return out
}

// teardown stops the processes started in the hosts (SIGTERM, so they can
// shut down as in production), kills the daemons, then removes everything
// named after the run and checks that nothing is left.
func (c *Cluster) teardown(t testing.TB) {
	c.downOnce.Do(func() {
		begin := time.Now()
		if t.Failed() {
			for _, h := range c.hosts {
				t.Logf("host %s dockerd log (last 30 lines):\n%s", h.Name, h.docker.logTail(30))
				if a := h.consulAgent(); a != nil {
					t.Logf("host %s consul log (last 30 lines):\n%s", h.Name, a.LogTail(30))
				}
			}
		}
		_ = forEach(c.allProcesses(), func(p *Process) error { p.Stop(); return nil })
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = forEach(c.hosts, func(h *Host) error { h.kill(ctx); return nil })
		if err := removeRun(c.ID); err != nil {
			t.Errorf("lab cluster %s: teardown: %v", c.ID, err)
		}
		if left := RunLeftovers(c.ID); len(left) > 0 {
			t.Errorf("lab cluster %s: left behind after teardown: %v", c.ID, left)
		}
		t.Logf("lab cluster %s: torn down in %s", c.ID, time.Since(begin).Round(time.Millisecond))
	})
}

func (c *Cluster) allProcesses() []*Process {
	var out []*Process
	for _, h := range c.hosts {
		h.mu.Lock()
		out = append(out, h.procs...)
		h.mu.Unlock()
	}
	return out
}

// RunLeftovers lists what exists of run id: processes, mounts, namespaces,
// links, FORWARD rules, cgroups and the run directory. After a teardown it
// must be empty.
func RunLeftovers(id string) []string {
	dir := filepath.Join(labRunRoot, id)
	var left []string
	for _, pid := range runProcesses(id, dir) {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		left = append(left, fmt.Sprintf("process %d (%s)", pid, strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")))
	}
	for _, mp := range mountsUnder(dir) {
		left = append(left, "mount "+mp)
	}
	for _, ns := range listNetns() {
		if m := reHostName.FindStringSubmatch(ns); m != nil && m[1] == id {
			left = append(left, "netns "+ns)
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			name := linkNameFromIPO(line)
			if m := reLinkName.FindStringSubmatch(name); m != nil && m[1]+m[2] == id {
				left = append(left, "link "+name)
			}
		}
	}
	for _, r := range forwardRules() {
		if r.id == id {
			left = append(left, "iptables "+strings.Join(r.spec, " "))
		}
	}
	for _, d := range cgroupHostDirs(id) {
		left = append(left, "cgroup "+d)
	}
	if _, err := os.Lstat(dir); err == nil {
		left = append(left, "dir "+dir)
	}
	return left
}

// linkNameFromIPO returns the link name of one line of `ip -o link show`
// ("5: eth0@if6: <...> ..."), without the @peer suffix.
func linkNameFromIPO(line string) string {
	f := strings.SplitN(line, ": ", 3)
	if len(f) < 2 {
		return ""
	}
	name, _, _ := strings.Cut(f[1], "@")
	return name
}

// Docker returns a client for the host's daemon, closed when the test ends.
func (h *Host) Docker(t testing.TB) *client.Client {
	t.Helper()
	cli, err := newDockerClient(h.DockerHost)
	if err != nil {
		t.Fatalf("host %s: %v", h.Name, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Consul returns a client for the host's Consul agent.
func (h *Host) Consul(t testing.TB) *api.Client {
	t.Helper()
	cli, err := api.NewClient(&api.Config{Address: h.ConsulAddr, Scheme: "http"})
	if err != nil {
		t.Fatalf("host %s: consul client: %v", h.Name, err)
	}
	return cli
}

// MountNamespace is the file of the host's mount namespace
// (ClusterOptions.MountNamespace), "" without one. A process entered into
// it (nsenter --mount=FILE) shares the host's /run with its dockerd, so a
// plugin socket it serves under /run/docker/plugins is that dockerd's
// alone.
func (h *Host) MountNamespace() string {
	if h.mountns == nil {
		return ""
	}
	return h.mountns.file()
}

// Exec returns a command that runs name inside the host: in its network
// and UTS namespaces, with DOCKER_HOST set to the host's daemon and
// CONSUL_HTTP_ADDR to its agent on 127.0.0.1:8500.
func (h *Host) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"--net=" + h.Netns, "--uts=" + h.uts, "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_HOST=") && !strings.HasPrefix(kv, "CONSUL_HTTP_ADDR=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		"DOCKER_HOST="+h.DockerHost,
		"CONSUL_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(DefaultConsulPorts.HTTP))
	return cmd
}

// StartProcess starts a long-running process inside the host (see Exec),
// its output going to a log file, and kills it when the test ends.
func (h *Host) StartProcess(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	p, err := h.startProcess(name, args...)
	if err != nil {
		t.Fatalf("host %s: %v", h.Name, err)
	}
	t.Cleanup(p.Kill)
	return p
}

// StartDetached starts a long-running process inside the host, like
// StartProcess, but one that outlives the calling process (for a detached
// cluster); TeardownCluster ends it. A test's cluster refuses: its
// processes end with the test (StartProcess).
func (h *Host) StartDetached(name string, args ...string) (*Process, error) {
	if !h.cluster.detached {
		return nil, fmt.Errorf("host %s: cluster %s is not detached; use StartProcess", h.Name, h.cluster.ID)
	}
	return h.startProcess(name, args...)
}

func (h *Host) startProcess(name string, args ...string) (*Process, error) {
	h.mu.Lock()
	h.procSeq++
	seq := h.procSeq
	h.mu.Unlock()
	p := &Process{
		Name:    name,
		Args:    args,
		LogPath: filepath.Join(h.Dir, fmt.Sprintf("%s-%d.log", filepath.Base(name), seq)),
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("process %s: open log: %w", name, err)
	}
	cmd := h.Exec(context.Background(), name, args...)
	exited, err := startLogged(cmd, logf, h.cluster.detached, func(err error) { p.err = err })
	if err != nil {
		return nil, fmt.Errorf("process %s: start: %w", name, err)
	}
	p.cmd, p.exited = cmd, exited
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p, nil
}

// Process is a long-running process started in a lab host.
type Process struct {
	// Name and Args are the command as given to StartProcess.
	Name string
	Args []string
	// LogPath is the file its stdout and stderr go to.
	LogPath string

	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// processStopTimeout is how long Stop waits after SIGTERM before SIGKILL.
const processStopTimeout = 10 * time.Second

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err waits for the process to exit and returns how it exited (nil for
// status 0, an *exec.ExitError otherwise).
func (p *Process) Err() error {
	<-p.exited
	return p.err
}

// Running reports whether the process is alive.
func (p *Process) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the process's group, as a crash would, and waits
// for it to exit.
func (p *Process) Kill() {
	if p.Running() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.exited
}

// Stop sends SIGTERM to the process's group and waits for it to exit,
// sending SIGKILL after 10 s.
func (p *Process) Stop() {
	if !p.Running() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(processStopTimeout):
		p.Kill()
	}
}

// Logs returns what the process has written so far.
func (p *Process) Logs() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

func (h *Host) consulAgent() *ConsulAgent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.consul
}

// KillDocker SIGKILLs the host's dockerd and its containerd, as a daemon
// crash would; container shims and containers keep running, as they do on
// a real host.
func (h *Host) KillDocker() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = h.docker.kill(ctx)
}

// StartDocker starts the host's dockerd again with the same directories and
// waits until it answers.
func (h *Host) StartDocker(ctx context.Context) error {
	return h.docker.start(ctx)
}

// KillConsul SIGKILLs the host's Consul agent.
func (h *Host) KillConsul() {
	if a := h.consulAgent(); a != nil {
		a.Kill()
	}
}

// StartConsul starts the host's Consul agent again with the same data
// directory and waits until it has a leader and its node is registered
// (with servers down to below quorum, it waits until ctx is done).
func (h *Host) StartConsul(ctx context.Context) error {
	a := h.consulAgent()
	if a == nil {
		return fmt.Errorf("host %s: consul agent was never started", h.Name)
	}
	return a.Start(ctx)
}

// Isolate cuts the host off the management network by setting its
// management veth down from the root namespace: Swarm, Consul and the test
// process lose it; its Docker socket still answers.
func (h *Host) Isolate() error {
	return ip(context.Background(), "link", "set", h.mgmtVeth, "down")
}

// Heal reconnects a host cut off by Isolate.
func (h *Host) Heal() error {
	return ip(context.Background(), "link", "set", h.mgmtVeth, "up")
}

// Kill crashes the host: its processes, Consul agent, dockerd, containerd,
// shims and containers are SIGKILLed in one sweep, so none of them sees the
// others go. Boot brings it back.
func (h *Host) Kill() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.kill(ctx)
}

func (h *Host) kill(ctx context.Context) {
	h.mu.Lock()
	procs := append([]*Process(nil), h.procs...)
	consul := h.consul
	h.mu.Unlock()
	// Everything in the host's network namespace (dockerd, containerd,
	// shims, the agent, anything started with Exec) and in its containers'
	// cgroups.
	var nsIno uint64
	var st syscall.Stat_t
	if syscall.Stat(h.Netns, &st) == nil {
		nsIno = st.Ino
	}
	list := func() []int {
		pids := h.docker.pids()
		pids = append(pids, h.docker.shimAndContainerPids(h.Index, h.cluster.ID)...)
		if nsIno != 0 {
			pids = append(pids, matchProcesses(func(pid int) bool {
				link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
				return err == nil && link == fmt.Sprintf("net:[%d]", nsIno)
			})...)
		}
		return pids
	}
	signalPids(list(), syscall.SIGKILL)
	for _, p := range procs {
		p.Kill()
	}
	if consul != nil {
		consul.Kill()
	}
	_ = h.docker.kill(ctx)
	_ = killUntilGone(ctx, "host "+h.Name, list)
}

// Boot starts a host again as a reboot would: whatever still runs is
// killed, the exec root (tmpfs /run on a real host) is emptied, links other
// than lo, eth0 and trunk0 are deleted and trunk0 loses its addresses and
// promiscuous mode, then dockerd and the Consul agent start with their
// data kept. Processes started with StartProcess are not restarted.
func (h *Host) Boot(ctx context.Context) error {
	h.kill(ctx)
	if err := unmountUnder(h.docker.execRoot()); err != nil {
		return fmt.Errorf("host %s: boot: %w", h.Name, err)
	}
	if err := os.RemoveAll(h.docker.execRoot()); err != nil {
		return fmt.Errorf("host %s: boot: %w", h.Name, err)
	}
	_ = os.Remove(h.docker.pidFile())
	if h.mountns != nil {
		if err := h.mountns.resetRun(ctx); err != nil {
			return fmt.Errorf("host %s: boot: %w", h.Name, err)
		}
	}
	if err := h.resetLinks(ctx); err != nil {
		return fmt.Errorf("host %s: boot: %w", h.Name, err)
	}
	return parallel(
		func() error { return h.StartDocker(ctx) },
		func() error { return h.StartConsul(ctx) },
	)
}

// resetLinks puts the host's links back as they are at boot.
func (h *Host) resetLinks(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "ip", "-n", h.nsName, "-o", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	keep := map[string]bool{"lo": true, ManagementInterface: true, TrunkInterface: true}
	for _, line := range strings.Split(string(out), "\n") {
		name := linkNameFromIPO(line)
		if name == "" || keep[name] {
			continue
		}
		if err := ip(ctx, "-n", h.nsName, "link", "delete", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			return err
		}
	}
	for _, s := range [][]string{
		{"-n", h.nsName, "addr", "flush", "dev", TrunkInterface},
		{"-n", h.nsName, "link", "set", TrunkInterface, "promisc", "off", "up"},
	} {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}
