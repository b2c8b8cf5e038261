package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/client"
)

// dockerReadyTimeout bounds a daemon's start; one needs 1-3 s on the lab
// machines, more while other daemons start beside it on 2 cores.
const dockerReadyTimeout = 90 * time.Second

// dockerDaemon is one host's dockerd, run inside the host's network and UTS
// namespaces with its own data root, exec root, pidfile and socket.
type dockerDaemon struct {
	netns, uts   string
	dir          string
	cgroupParent string
	wantName     string
	// engine is the Engine it runs; nil for the machine's.
	engine *Engine
	// detached daemons outlive the process that started them.
	detached bool
	// mountns, when set, is the host's mount namespace (mountns.go).
	mountns string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

func (d *dockerDaemon) socket() string   { return filepath.Join(d.dir, "docker.sock") }
func (d *dockerDaemon) host() string     { return "unix://" + d.socket() }
func (d *dockerDaemon) dataRoot() string { return filepath.Join(d.dir, "data") }
func (d *dockerDaemon) execRoot() string { return filepath.Join(d.dir, "exec") }
func (d *dockerDaemon) pidFile() string  { return filepath.Join(d.dir, "docker.pid") }
func (d *dockerDaemon) logPath() string  { return filepath.Join(d.dir, "dockerd.log") }
func (d *dockerDaemon) configPath() string {
	return filepath.Join(d.dir, "daemon.json")
}

// args is the daemon's command line. nsenter --net, not ip netns exec: the
// latter remounts /sys and dockerd then dies with "Devices cgroup isn't
// mounted". --uts gives the daemon the host's own hostname, which Swarm
// reports as the node's. A config file of its own (Engine.configFile)
// keeps the machine's /etc/docker/daemon.json (data root, storage driver)
// out of it. vfs needs no mounts at all, which keeps teardown simple, and
// the test images are a single small layer. The cgroup parent names the host, so its containers'
// processes can be found and killed however the daemon died.
func (d *dockerDaemon) args() []string {
	return []string{
		"--net=" + d.netns, "--uts=" + d.uts, "--",
		d.engine.dockerd(),
		"--config-file", d.configPath(),
		"--data-root", d.dataRoot(),
		"--exec-root", d.execRoot(),
		"--pidfile", d.pidFile(),
		"-H", d.host(),
		"--bridge", "none",
		"--iptables=false",
		"--ip-masq=false",
		"--userland-proxy=false",
		"--storage-driver", "vfs",
		"--cgroup-parent", "/" + d.cgroupParent,
	}
}

// start starts the daemon and waits until it answers on its socket and
// reports the host's name.
func (d *dockerDaemon) start(ctx context.Context) error {
	if d.running() {
		return fmt.Errorf("dockerd %s: already running", d.dir)
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return fmt.Errorf("dockerd %s: %w", d.dir, err)
	}
	config, err := d.engine.configFile()
	if err != nil {
		return fmt.Errorf("dockerd %s: %w", d.dir, err)
	}
	if err := os.WriteFile(d.configPath(), config, 0o644); err != nil {
		return fmt.Errorf("dockerd %s: write config: %w", d.dir, err)
	}
	for _, pf := range []string{d.pidFile(), filepath.Join(d.execRoot(), "containerd", "containerd.pid")} {
		if err := removeStalePidFile(pf); err != nil {
			return fmt.Errorf("dockerd %s: %w", d.dir, err)
		}
	}
	logf, err := os.OpenFile(d.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("dockerd %s: open log: %w", d.dir, err)
	}
	cmd := exec.Command("nsenter", d.nsenterArgs(d.args())...)
	// Without a registry every pull fails, after a DNS timeout; tasks
	// whose image is present locally start at once with this set.
	cmd.Env = append(d.engine.environ(os.Environ()), "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1")
	// Pdeathsig: a test binary that dies without its cleanups takes the
	// daemon with it; CleanupStale removes the rest.
	exited, err := startLogged(cmd, logf, d.detached, nil)
	if err != nil {
		return fmt.Errorf("dockerd %s: start: %w", d.dir, err)
	}
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	if err := d.waitReady(ctx, exited); err != nil {
		return fmt.Errorf("dockerd %s: %w\n%s", d.dir, err, d.logTail(20))
	}
	return nil
}

func (d *dockerDaemon) waitReady(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, dockerReadyTimeout)
	defer cancel()
	cli, err := newDockerClient(d.host())
	if err != nil {
		return err
	}
	defer cli.Close()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := cli.Info(ictx)
		icancel()
		if err == nil {
			if info.Name != d.wantName {
				return fmt.Errorf("reports name %q, want %q (UTS namespace not in effect)", info.Name, d.wantName)
			}
			if want := d.engine.version(); want != "" && !strings.HasPrefix(info.ServerVersion, want) {
				return fmt.Errorf("reports Engine %s, want %s", info.ServerVersion, want)
			}
			return nil
		}
		lastErr = err
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last: %v)", ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

func (d *dockerDaemon) running() bool {
	d.mu.Lock()
	exited := d.exited
	d.mu.Unlock()
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

// pids lists the daemon's own processes: dockerd (from this process's
// handle or its pidfile, for a daemon started before) and the containerd it
// manages. Container shims and containers are not included: they outlive a
// dockerd crash on a real host too.
func (d *dockerDaemon) pids() []int {
	var pids []int
	d.mu.Lock()
	if d.cmd != nil && d.cmd.Process != nil && d.exited != nil {
		select {
		case <-d.exited:
		default:
			pids = append(pids, d.cmd.Process.Pid)
		}
	}
	d.mu.Unlock()
	// The pidfile finds a daemon this process did not start (or whose
	// handle it lost); its command line must name this daemon's
	// directory, so a recycled pid is not taken for it.
	if b, err := os.ReadFile(d.pidFile()); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && !slices.Contains(pids, pid) {
			if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil &&
				bytes.Contains(cmd, []byte(d.dir+"/")) && processState(pid) != "Z" {
				pids = append(pids, pid)
			}
		}
	}
	// containerd's command line names its config under the exec root.
	marker := []byte("--config\x00" + filepath.Join(d.execRoot(), "containerd", "containerd.toml") + "\x00")
	pids = append(pids, matchProcesses(func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && bytes.Contains(b, marker)
	})...)
	return pids
}

// shimAndContainerPids lists the host's container shims and container
// processes.
func (d *dockerDaemon) shimAndContainerPids(hostIndex int, runID string) []int {
	sock := []byte(filepath.Join(d.execRoot(), "containerd", "containerd.sock"))
	return matchProcesses(func(pid int) bool {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(b, sock) {
			return true
		}
		return inHostCgroup(pid, runID, hostIndex)
	})
}

// removeStalePidFile removes a pidfile whose process is gone or a zombie.
// dockerd takes a killed containerd that is still a zombie for a live one
// (kill(pid, 0) succeeds on zombies) and waits for a socket nobody serves;
// orphans are reparented to init, which reaps them late on these machines.
func removeStalePidFile(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pidfile: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil {
		if st := processState(pid); st != "" && st != "Z" {
			return nil
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale pidfile: %w", err)
	}
	return nil
}

// signalPids sends sig to every pid, ignoring ones already gone.
func signalPids(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
}

// kill SIGKILLs dockerd and its containerd, as a daemon crash would, and
// waits until they are gone.
func (d *dockerDaemon) kill(ctx context.Context) error {
	err := killUntilGone(ctx, "dockerd "+d.dir, d.pids)
	d.mu.Lock()
	exited := d.exited
	d.mu.Unlock()
	if exited != nil {
		select {
		case <-exited:
		case <-ctx.Done():
			return fmt.Errorf("dockerd %s: not reaped: %w", d.dir, ctx.Err())
		}
	}
	return err
}

func (d *dockerDaemon) logTail(n int) string {
	b, err := os.ReadFile(d.logPath())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return lastLines(b, n)
}

// newDockerClient is a client for the daemon at host ("unix://..."); the
// lab machines run Engine 20.10, so the API version is negotiated.
func newDockerClient(host string) (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", host, err)
	}
	return cli, nil
}
