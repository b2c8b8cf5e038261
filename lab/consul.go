// Package lab is the test bed: real Consul agents, the test workload image,
// the local Engine in swarm mode, and clusters of swarm hosts in network
// namespaces, each with its own dockerd and Consul agent; with the faults the
// tests inject (killed daemons, cut links, reboots) and complete tear-down.
package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulEnv names the environment variable that points at the consul binary.
const ConsulEnv = "SWARMVLAN_CONSUL"

// consulReadyTimeout bounds how long an agent may take to elect itself and
// register its own node; a dev agent needs about 2 s on the lab machines.
const consulReadyTimeout = 30 * time.Second

var (
	consulBinaryOnce sync.Once
	consulBinaryPath string
	consulBinaryErr  error
)

// ConsulBinary returns the path of the consul binary: $SWARMVLAN_CONSUL, else
// consul on PATH, else bin/consul under the module root, else it builds that
// one with `make -C <root> consul`. The answer is computed once per process.
func ConsulBinary() (string, error) {
	consulBinaryOnce.Do(func() {
		consulBinaryPath, consulBinaryErr = findConsulBinary()
	})
	return consulBinaryPath, consulBinaryErr
}

func findConsulBinary() (string, error) {
	if p := os.Getenv(ConsulEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("consul binary from $%s: %w", ConsulEnv, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("consul binary: %w", err)
	}
	p := filepath.Join(root, "bin", "consul")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	out, err := exec.Command("make", "-C", root, "consul").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("consul binary: build with make -C %s consul: %w\n%s", root, err, lastLines(out, 20))
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("consul binary: make -C %s consul did not produce %s: %w", root, p, err)
	}
	return p, nil
}

// ModuleRoot walks up from the working directory to the directory holding
// go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// ConsulPorts are the ports one agent listens on.
type ConsulPorts struct {
	HTTP, DNS, Server, SerfLAN, SerfWAN int
}

// ConsulAgent is a running consul agent started for tests.
type ConsulAgent struct {
	// Addr is the HTTP API address, host:port.
	Addr string
	// DNSAddr is the DNS interface address, host:port.
	DNSAddr string
	// DataDir is the agent's -data-dir.
	DataDir string
	// Dir holds the data dir and the log file.
	Dir string
	// LogPath is the file the agent's output goes to (appended across restarts).
	LogPath string
	// NodeName is the agent's node name.
	NodeName string
	// Ports are the agent's ports; Restart keeps them.
	Ports ConsulPorts

	cfg    consulConfig
	binary string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

type consulConfig struct {
	bind       string
	client     string
	persistent bool
	nodeName   string
	extraArgs  []string
	prefix     []string
	// ports, when set, are used as they are instead of picking free ones.
	ports *ConsulPorts
	// httpHost is the host Addr uses; default: client.
	httpHost string
	// serverExpect > 0 runs a server of a multi-server cluster with
	// -bootstrap-expect serverExpect.
	serverExpect int
	// clientAgent runs a client agent (neither -dev nor -server).
	clientAgent bool
	retryJoin   []string
	// detached agents outlive the process that started them.
	detached bool
	// secure, when set, is an agent with ACLs or TLS (consulsecure.go):
	// how its readiness check reaches it, and whether its API is HTTPS only.
	secure *consulSecurity
}

// ConsulOption changes how an agent is started.
type ConsulOption func(*consulConfig)

// WithBindAddr sets -bind (the cluster address); default 127.0.0.1.
func WithBindAddr(addr string) ConsulOption {
	return func(c *consulConfig) { c.bind = addr }
}

// WithClientAddr sets -client (where HTTP and DNS listen); default 127.0.0.1.
func WithClientAddr(addr string) ConsulOption {
	return func(c *consulConfig) { c.client = addr }
}

// WithPersistentData runs a single-server agent that keeps its data on disk
// instead of -dev, whose state lives only in memory. Use it when a test
// restarts the agent and expects the KV store to survive.
func WithPersistentData() ConsulOption {
	return func(c *consulConfig) { c.persistent = true }
}

// WithNodeName sets -node; default "lab-<http port>".
func WithNodeName(name string) ConsulOption {
	return func(c *consulConfig) { c.nodeName = name }
}

// WithPorts makes the agent listen on exactly these ports instead of free
// ones picked at random; an agent alone in a network namespace can keep
// Consul's default ports (DefaultConsulPorts).
func WithPorts(p ConsulPorts) ConsulOption {
	return func(c *consulConfig) { c.ports = &p }
}

// DefaultConsulPorts are Consul's standard ports.
var DefaultConsulPorts = ConsulPorts{HTTP: 8500, DNS: 8600, Server: 8300, SerfLAN: 8301, SerfWAN: 8302}

// WithHTTPAddr sets the host that Addr (and so the readiness check and
// Client) uses to reach the agent, when -client lists several addresses
// (for example "127.0.0.1 10.99.1.11"); default: the -client address.
func WithHTTPAddr(host string) ConsulOption {
	return func(c *consulConfig) { c.httpHost = host }
}

// WithServer runs the agent as one server of a cluster of bootstrapExpect
// servers, keeping its data on disk. It becomes ready only once enough
// servers have joined to elect a leader, so start the servers concurrently.
func WithServer(bootstrapExpect int) ConsulOption {
	return func(c *consulConfig) { c.serverExpect = bootstrapExpect }
}

// WithClientAgent runs a client agent, which holds no data and forwards to
// the servers it joins (see WithRetryJoin).
func WithClientAgent() ConsulOption {
	return func(c *consulConfig) { c.clientAgent = true }
}

// WithRetryJoin adds -retry-join for each address (host or host:port),
// retried every second rather than Consul's default 30 s so a cluster whose
// agents start together forms quickly.
func WithRetryJoin(addrs ...string) ConsulOption {
	return func(c *consulConfig) { c.retryJoin = append(c.retryJoin, addrs...) }
}

// withDetached starts the agent so that it outlives this process (a
// detached cluster's agents).
func withDetached() ConsulOption {
	return func(c *consulConfig) { c.detached = true }
}

// WithArgs appends raw arguments to the agent's command line.
func WithArgs(args ...string) ConsulOption {
	return func(c *consulConfig) { c.extraArgs = append(c.extraArgs, args...) }
}

// WithCommandPrefix runs the agent under another command, for example
// nsenter --net=/var/run/netns/h1 to start it inside a lab host's namespace.
// The caller must then make Addr reachable, for example with WithClientAddr.
func WithCommandPrefix(argv ...string) ConsulOption {
	return func(c *consulConfig) { c.prefix = append([]string(nil), argv...) }
}

// StartConsul starts an agent for a test, with its own ports and data
// directory, waits until it has a leader and its node is registered, and
// stops it when the test ends. If the test failed, the agent's last 50 log
// lines are printed.
func StartConsul(t testing.TB, opts ...ConsulOption) *ConsulAgent {
	t.Helper()
	bin, err := ConsulBinary()
	if err != nil {
		t.Fatalf("consul: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*consulReadyTimeout)
	defer cancel()
	a, err := startConsulAgent(ctx, bin, t.TempDir(), opts...)
	if a != nil {
		// Registered even when the start failed so a half-started agent is
		// still killed and its log shown.
		t.Cleanup(func() {
			a.Kill()
			if t.Failed() {
				t.Logf("consul agent %s log (last 50 lines):\n%s", a.Addr, a.LogTail(50))
			}
		})
	}
	if err != nil {
		t.Fatalf("consul: %v", err)
	}
	return a
}

// StartConsulAgent starts an agent with its own ports and data under dir and
// waits until it is ready (leader elected, node registered) or ctx is done.
// The caller owns the agent and must Stop or Kill it.
func StartConsulAgent(ctx context.Context, dir string, opts ...ConsulOption) (*ConsulAgent, error) {
	bin, err := ConsulBinary()
	if err != nil {
		return nil, err
	}
	a, err := startConsulAgent(ctx, bin, dir, opts...)
	if err != nil && a != nil {
		a.Kill()
		return nil, err
	}
	return a, err
}

func startConsulAgent(ctx context.Context, bin, dir string, opts ...ConsulOption) (*ConsulAgent, error) {
	cfg := consulConfig{bind: "127.0.0.1", client: "127.0.0.1"}
	for _, o := range opts {
		o(&cfg)
	}
	a := &ConsulAgent{
		Dir:     dir,
		DataDir: filepath.Join(dir, "data"),
		LogPath: filepath.Join(dir, "consul.log"),
		cfg:     cfg,
		binary:  bin,
	}
	if err := os.MkdirAll(a.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("consul agent: create data dir: %w", err)
	}
	// Free ports are picked by binding and releasing them, so another process
	// can grab one before the agent binds it; a few attempts make that race
	// harmless.
	var lastErr error
	httpHost := cfg.httpHost
	if httpHost == "" {
		httpHost = cfg.client
	}
	for attempt := 0; attempt < 4; attempt++ {
		if cfg.ports != nil {
			a.Ports = *cfg.ports
		} else {
			ports, err := freePorts(5)
			if err != nil {
				return nil, fmt.Errorf("consul agent: pick ports: %w", err)
			}
			a.Ports = ConsulPorts{HTTP: ports[0], DNS: ports[1], Server: ports[2], SerfLAN: ports[3], SerfWAN: ports[4]}
		}
		a.NodeName = cfg.nodeName
		if a.NodeName == "" {
			a.NodeName = "lab-" + strconv.Itoa(a.Ports.HTTP)
		}
		a.Addr = net.JoinHostPort(httpHost, strconv.Itoa(a.Ports.HTTP))
		a.DNSAddr = net.JoinHostPort(httpHost, strconv.Itoa(a.Ports.DNS))
		lastErr = a.start(ctx)
		if lastErr == nil {
			return a, nil
		}
		a.Kill()
		// Fixed ports stay taken however often they are tried again.
		if cfg.ports != nil || !strings.Contains(a.LogTail(50), "address already in use") || ctx.Err() != nil {
			break
		}
	}
	return a, lastErr
}

func (a *ConsulAgent) args() []string {
	c := a.cfg
	args := []string{
		"agent",
		"-node", a.NodeName,
		"-bind", c.bind,
		"-client", c.client,
		"-data-dir", a.DataDir,
		"-http-port", strconv.Itoa(a.Ports.HTTP),
		"-dns-port", strconv.Itoa(a.Ports.DNS),
		"-server-port", strconv.Itoa(a.Ports.Server),
		"-serf-lan-port", strconv.Itoa(a.Ports.SerfLAN),
		"-serf-wan-port", strconv.Itoa(a.Ports.SerfWAN),
		// gRPC is not needed and its default ports would collide between
		// agents.
		"-grpc-port", "-1",
		"-grpc-tls-port", "-1",
		"-hcl", "disable_update_check = true",
	}
	for _, addr := range c.retryJoin {
		args = append(args, "-retry-join", addr)
	}
	if len(c.retryJoin) > 0 {
		args = append(args, "-retry-interval", "1s")
	}
	switch {
	case c.serverExpect > 0:
		// raft_multiplier 1: the dev agent's fast elections, as below.
		args = append(args, "-server", "-bootstrap-expect", strconv.Itoa(c.serverExpect),
			"-hcl", "performance { raft_multiplier = 1 }")
	case c.clientAgent:
		// A client agent keeps only its local state under -data-dir.
	case c.persistent:
		// A single server that keeps raft on disk. raft_multiplier 1 gives it
		// the dev agent's fast election instead of the production default.
		args = append(args, "-server", "-bootstrap-expect", "1",
			"-hcl", "performance { raft_multiplier = 1 }")
	default:
		args = append(args, "-dev")
	}
	args = append(args, c.secure.args(a)...)
	args = append(args, c.extraArgs...)
	if len(c.prefix) > 0 {
		return append(append(append([]string(nil), c.prefix[1:]...), a.binary), args...)
	}
	return args
}

func (a *ConsulAgent) start(ctx context.Context) error {
	logf, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("consul agent: open log: %w", err)
	}
	name := a.binary
	if len(a.cfg.prefix) > 0 {
		name = a.cfg.prefix[0]
	}
	cmd := exec.Command(name, a.args()...)
	// Own process group so Kill reaches everything the agent (or a command
	// prefix such as nsenter) started; Pdeathsig so the agent does not outlive
	// a test binary that dies without running its cleanups.
	exited, err := startLogged(cmd, logf, a.cfg.detached, nil)
	if err != nil {
		return fmt.Errorf("consul agent: start %s: %w", name, err)
	}
	a.mu.Lock()
	a.cmd, a.exited = cmd, exited
	a.mu.Unlock()
	if err := a.waitReady(ctx, exited); err != nil {
		return fmt.Errorf("consul agent %s: %w\n%s", a.Addr, err, a.LogTail(20))
	}
	return nil
}

// waitReady waits for a leader and for the agent's own node to pass its
// serf health check: sessions cannot be created before that.
func (a *ConsulAgent) waitReady(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, consulReadyTimeout)
	defer cancel()
	hc := a.cfg.secure.httpClient()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if a.ready(ctx, hc) {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func (a *ConsulAgent) ready(ctx context.Context, hc *http.Client) bool {
	var leader string
	base := a.cfg.secure.scheme() + "://" + a.Addr
	if err := getJSON(ctx, hc, base+"/v1/status/leader", &leader); err != nil || leader == "" {
		return false
	}
	var checks []struct{ CheckID, Status string }
	if err := getJSON(ctx, hc, base+"/v1/health/node/"+a.NodeName, &checks); err != nil {
		return false
	}
	for _, c := range checks {
		if c.CheckID == "serfHealth" && c.Status == "passing" {
			return true
		}
	}
	return false
}

func getJSON(ctx context.Context, hc *http.Client, url string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

// Client returns an API client for the agent, failing the test on error.
func (a *ConsulAgent) Client(t testing.TB) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: a.Addr, Scheme: "http"})
	if err != nil {
		t.Fatalf("consul client for %s: %v", a.Addr, err)
	}
	return c
}

// Running reports whether the agent's process is alive.
func (a *ConsulAgent) Running() bool {
	a.mu.Lock()
	exited := a.exited
	a.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// Stop asks the agent to shut down (SIGTERM) and waits for it, killing it if
// it takes longer than 15 s.
func (a *ConsulAgent) Stop() {
	a.signal(syscall.SIGTERM, 15*time.Second)
}

// Kill stops the agent with SIGKILL, as a crash would.
func (a *ConsulAgent) Kill() {
	a.signal(syscall.SIGKILL, 0)
}

func (a *ConsulAgent) signal(sig syscall.Signal, grace time.Duration) {
	a.mu.Lock()
	cmd, exited := a.cmd, a.exited
	a.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	if grace > 0 {
		select {
		case <-exited:
			return
		case <-time.After(grace):
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	<-exited
}

// Restart stops the agent (if it runs) and starts it again with the same
// ports and data directory, waiting until it is ready. A -dev agent keeps
// its state in memory only, so its KV store is empty afterwards; use
// WithPersistentData to keep it.
func (a *ConsulAgent) Restart(ctx context.Context) error {
	a.Stop()
	return a.Start(ctx)
}

// Start starts a stopped agent again with the same ports and data directory.
func (a *ConsulAgent) Start(ctx context.Context) error {
	if a.Running() {
		return fmt.Errorf("consul agent %s: already running", a.Addr)
	}
	return a.start(ctx)
}

// LogTail returns the last n lines of the agent's log.
func (a *ConsulAgent) LogTail(n int) string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return lastLines(b, n)
}

func lastLines(b []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct ports that are free for both TCP and UDP
// (Consul's DNS and serf ports use both). All are held until the last is
// found so the same port is not handed out twice.
func freePorts(n int) ([]int, error) {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, errors.New("no free ports")
		}
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			return nil, err
		}
		closers = append(closers, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		closers = append(closers, u)
		ports = append(ports, port)
	}
	return ports, nil
}
