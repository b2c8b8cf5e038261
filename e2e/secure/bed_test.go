package secure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
)

// proc is a reconciler process started by a test.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.Write(b)
}

// Logs is everything the process wrote to stderr so far.
func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Stop sends SIGTERM and waits for the process to end.
func (p *proc) Stop(t testing.TB) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-done
		t.Errorf("%s: still running 30s after SIGTERM", p.name)
	}
}

var listenRE = regexp.MustCompile(`msg="serving HTTP" addr=(\S+)`)

// metricsURL waits for the process to log its HTTP address and returns
// its /metrics URL.
func (p *proc) metricsURL(t testing.TB) string {
	t.Helper()
	var addr string
	waitFor(t, 30*time.Second, p.name+" serving HTTP", func() bool {
		if m := listenRE.FindStringSubmatch(p.Logs()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return "http://" + addr + "/metrics"
}

// cleanEnv is this process's environment without any CONSUL_ or
// SWARMVLAN_ variable, so a test says everything its processes see.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONSUL_") && !strings.HasPrefix(kv, "SWARMVLAN_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// startRun starts `reconciler run args...` with env, inside the network
// namespace ns unless it is empty; it is killed when the test ends.
func startRun(t testing.TB, name, ns string, env []string, args ...string) *proc {
	t.Helper()
	argv := append([]string{bed.ReconcilerBinary(), "run", "--log-level", "info"}, args...)
	if ns != "" {
		argv = append([]string{"nsenter", "--net=/var/run/netns/" + ns}, argv...)
	}
	p := &proc{name: name, cmd: exec.Command(argv[0], argv[1:]...)}
	p.cmd.Env = cleanEnv(append(env, "SWARMVLAN_NODE_NAME="+name)...)
	p.cmd.Stderr = p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s log (last 60 lines):\n%s", name, lastLines(p.Logs(), 60))
		}
	})
	return p
}

// command runs a reconciler command with env and returns its exit code
// and output.
func command(t testing.TB, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bed.ReconcilerBinary(), args...)
	cmd.Env = cleanEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		<-ctx.Done()
		if cmd.Process != nil && cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("reconciler %s: %v", strings.Join(args, " "), err)
	}
	return code, out.String(), errb.String()
}

// mustCommand is command that fails the test on a non-zero exit.
func mustCommand(t testing.TB, env []string, args ...string) string {
	t.Helper()
	code, out, errOut := command(t, env, args...)
	if code != 0 {
		t.Fatalf("reconciler %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// metric reads one sample from a Prometheus text exposition; -1 when the
// page or the sample is missing.
func metric(url, name, labels string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	prefix := name + "{" + labels + "} "
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func suffix(t testing.TB) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func writeFile(t testing.TB, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// needRoot skips a test that cannot create namespaces and links or reach
// the Engine, and returns the Engine's client with the machine in swarm
// mode.
func needSwarm(t *testing.T) *client.Client {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and links")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	return lab.EnsureSwarm(t)
}

// hostNamespace is a network namespace for the host role, joined to this
// namespace by a veth pair (hostSide here, nsSide there), holding a veth
// named like the trunk the Engine's macvlan networks use here: the host
// role checks and shims its own trunk while the tasks run on this one.
type hostNamespace struct {
	name, hostSide, nsSide string
}

func newHostNamespace(t *testing.T, tag, trunk string) hostNamespace {
	t.Helper()
	b := make([]byte, 2)
	rand.Read(b)
	k := 4 * (int(b[1]) % 64)
	h := hostNamespace{
		name:     "svsec-" + tag,
		hostSide: fmt.Sprintf("10.215.%d.%d", b[0], k+1),
		nsSide:   fmt.Sprintf("10.215.%d.%d", b[0], k+2),
	}
	outer := "sc" + tag + "o"
	ip(t, "netns", "add", h.name)
	t.Cleanup(func() {
		// Deleting the namespace deletes its links, and with the inner
		// end of the veth the outer one.
		if out, err := exec.Command("ip", "netns", "del", h.name).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip netns del %s: %v: %s", h.name, err, out)
		}
	})
	ip(t, "-n", h.name, "link", "set", "lo", "up")
	ip(t, "-n", h.name, "link", "add", trunk, "type", "veth", "peer", "name", "trunkp")
	ip(t, "-n", h.name, "link", "set", trunk, "up")
	ip(t, "-n", h.name, "link", "set", "trunkp", "up")
	ip(t, "link", "add", outer, "type", "veth", "peer", "name", "consul0", "netns", h.name)
	ip(t, "addr", "add", h.hostSide+"/30", "dev", outer)
	ip(t, "link", "set", outer, "up")
	ip(t, "-n", h.name, "addr", "add", h.nsSide+"/30", "dev", "consul0")
	ip(t, "-n", h.name, "link", "set", "consul0", "up")
	return h
}

// trunkHere creates a veth pair in this namespace whose first end is the
// Engine's macvlan parent, deleted at the end.
func trunkHere(t *testing.T, name string) {
	t.Helper()
	ip(t, "link", "add", name, "type", "veth", "peer", "name", name+"p")
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", name).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip link del %s: %v: %s", name, err, out)
		}
	})
	ip(t, "link", "set", name, "up")
	ip(t, "link", "set", name+"p", "up")
}

// removeDockerObjects removes the service and the VLAN's swarm and config
// networks by name (each name carries the test's random tag), retrying
// while tasks still leave the networks.
func removeDockerObjects(t *testing.T, cli *client.Client, service, vlan string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := cli.ServiceRemove(ctx, service); err != nil && !client.IsErrNotFound(err) {
		t.Errorf("cleanup: remove service %s: %v", service, err)
	}
	for _, name := range []string{vlan, vlan + "-config"} {
		for {
			n, err := cli.NetworkInspect(ctx, name, network.InspectOptions{})
			if client.IsErrNotFound(err) {
				break
			}
			if err == nil && n.Name == name {
				err = cli.NetworkRemove(ctx, n.ID)
				if err == nil || client.IsErrNotFound(err) {
					break
				}
			}
			if ctx.Err() != nil {
				t.Errorf("cleanup: remove network %s: %v", name, err)
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// replicas is the service's replica count in Docker (-1 while absent) and
// how many of its tasks run.
func replicas(cli *client.Client, service string) (want, running int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, _, err := cli.ServiceInspectWithRaw(ctx, service, swarm.ServiceInspectOptions{})
	if err != nil || s.Spec.Mode.Replicated == nil || s.Spec.Mode.Replicated.Replicas == nil {
		return -1, 0
	}
	tasks, err := cli.TaskList(ctx, swarm.TaskListOptions{})
	if err == nil {
		for _, task := range tasks {
			if task.ServiceID == s.ID && task.Status.State == swarm.TaskStateRunning {
				running++
			}
		}
	}
	return int(*s.Spec.Mode.Replicated.Replicas), running
}

func networkExists(cli *client.Client, name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := cli.NetworkInspect(ctx, name, network.InspectOptions{})
	return err == nil && n.Name == name
}
