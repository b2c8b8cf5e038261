package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
	"swarmvlan/spec"
	"swarmvlan/state"
)

const (
	// stackName is the name the README deploys the stack under.
	stackName = "swarmvlan"
	// imageRepo is make image's repository.
	imageRepo = "swarmvlan/reconciler"
	// apiToken is the scale API token in the stack's secret.
	apiToken = "stack-e2e-token"
)

// The stack's services and how many tasks each runs on this cluster.
var roles = map[string]struct {
	service string
	onHost  func(*lab.Host) bool
}{
	"host":    {stackName + "_host", func(*lab.Host) bool { return true }},
	"manager": {stackName + "_manager", func(h *lab.Host) bool { return h.Manager }},
}

// TestStack installs swarmvlan on three lab hosts (two managers, one
// worker) as a user would, from deploy/stack.yml, and runs the seed
// walkthrough on it; then upgrades the stack to a second image tag, reboots
// the worker, and removes the stack.
func TestStack(t *testing.T) {
	b := bed.NewCluster(t, lab.ClusterOptions{Hosts: 3, Managers: 2, ConsulServers: 3, MountNamespace: true})
	s := &stackBed{Bed: b, t: t}
	t.Cleanup(s.logsOnFailure)

	begin := time.Now()
	imgA := s.buildAndLoad("e2e-a")
	t.Logf("image %s built on h1 and loaded into h2 and h3 in %s", imgA, time.Since(begin).Round(100*time.Millisecond))
	s.cli(b.H1, nil, strings.NewReader(apiToken+"\n"), "secret", "create", "swarmvlan-api-tokens", "-")
	begin = time.Now()
	s.deploy(imgA)
	took := s.waitStack(imgA, 3*time.Minute)
	t.Logf("stack deployed: every role task running and healthy %s after docker stack deploy", took.Round(100*time.Millisecond))
	s.checkInstall(imgA)

	s.walkthrough()
	s.checkOrbiter()

	s.upgrade(imgA)
	s.reboot()
	s.remove()
}

type stackBed struct {
	*bed.Bed
	t testing.TB
}

// repoFile is a path in the repository, from this package's directory.
func repoFile(t testing.TB, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// cli runs the docker CLI against h's Engine and returns its output,
// failing the test if it fails.
func (s *stackBed) cli(h *lab.Host, env []string, stdin *strings.Reader, args ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.Ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", h.DockerHost}, args...)...)
	cmd.Env = append(withoutEnv("DOCKER_HOST", "DOCKER_CONTEXT"), env...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("docker %s on %s: %v\n%s", strings.Join(args, " "), h.Name, err, out)
	}
	return string(out)
}

func withoutEnv(names ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, name) {
			env = append(env, kv)
		}
	}
	return env
}

// buildAndLoad builds the image with deploy/build-image.sh on h1's Engine,
// version and tag set to tag, and loads its tarball into every other host
// with docker load, as a site without a registry copies it.
func (s *stackBed) buildAndLoad(tag string) string {
	s.t.Helper()
	tarball := filepath.Join(s.Cluster.Dir, "reconciler-"+tag+".tar")
	ctx, cancel := context.WithTimeout(s.Ctx, 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, repoFile(s.t, "deploy/build-image.sh"))
	cmd.Env = append(withoutEnv("DOCKER_CONTEXT"), "DOCKER_HOST="+s.H1.DockerHost,
		"VERSION="+tag, "TAG="+tag, "IMAGE="+imageRepo, "OUT="+tarball)
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("build-image.sh: %v\n%s", err, out)
	}
	ref := imageRepo + ":" + tag
	if !strings.Contains(string(out), ref+"\n"+tarball+"\n") {
		s.t.Fatalf("build-image.sh printed %q, want the image and the tarball", out)
	}
	for _, h := range s.Cluster.Hosts()[1:] {
		if got := s.cli(h, nil, nil, "load", "-i", tarball); !strings.Contains(got, "Loaded image: "+ref) {
			s.t.Fatalf("docker load on %s: %s", h.Name, got)
		}
	}
	for _, h := range s.Cluster.Hosts() {
		img, err := s.Docker(h).ImageInspect(s.Ctx, ref)
		if err != nil {
			s.t.Fatalf("%s: %s not there: %v", h.Name, ref, err)
		}
		// FROM scratch: one layer holding the binary and the CA bundle.
		if len(img.RootFS.Layers) != 2 || img.Config.Labels["org.opencontainers.image.version"] != tag {
			s.t.Fatalf("%s: image %s has %d layers and labels %v; want the two COPY layers and version %s",
				h.Name, ref, len(img.RootFS.Layers), img.Config.Labels, tag)
		}
	}
	return ref
}

// deploy runs docker stack deploy of deploy/stack.yml with image ref, as the
// README does.
func (s *stackBed) deploy(ref string) {
	s.t.Helper()
	s.cli(s.H1, []string{"SWARMVLAN_IMAGE=" + ref}, nil,
		"stack", "deploy", "--resolve-image", "never", "-c", repoFile(s.t, "deploy/stack.yml"), stackName)
}

// roleTasks is every running role container of the stack, per host.
type roleTask struct {
	host, role, taskID, container, image, health string
}

func (s *stackBed) roleTasks(ctx context.Context) ([]roleTask, error) {
	var out []roleTask
	for _, h := range s.Up() {
		ctrs, err := s.Docker(h).ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
			filters.Arg("label", "com.docker.stack.namespace="+stackName),
			filters.Arg("status", "running"))})
		if err != nil {
			return nil, fmt.Errorf("%s: list containers: %w", h.Name, err)
		}
		for _, c := range ctrs {
			ci, err := s.Docker(h).ContainerInspect(ctx, c.ID)
			if err != nil {
				return nil, fmt.Errorf("%s: inspect %s: %w", h.Name, c.ID, err)
			}
			rt := roleTask{host: h.Name, taskID: c.Labels["com.docker.swarm.task.id"], container: c.ID, image: ci.Config.Image}
			for role, r := range roles {
				if c.Labels["com.docker.swarm.service.name"] == r.service {
					rt.role = role
				}
			}
			if ci.State != nil && ci.State.Health != nil {
				rt.health = ci.State.Health.Status
			}
			out = append(out, rt)
		}
	}
	return out, nil
}

// stackReady checks that each role runs exactly one healthy task of image
// ref on each host it belongs on, and that Swarm has no update under way.
func (s *stackBed) stackReady(ctx context.Context, ref string) error {
	for _, r := range roles {
		svc, _, err := s.Mgr.ServiceInspectWithRaw(ctx, r.service, swarm.ServiceInspectOptions{})
		if err != nil {
			return err
		}
		if img := svc.Spec.TaskTemplate.ContainerSpec.Image; img != ref {
			return fmt.Errorf("%s: image %s, want %s", r.service, img, ref)
		}
		if u := svc.UpdateStatus; u != nil && u.State != swarm.UpdateStateCompleted {
			return fmt.Errorf("%s: update %s: %s", r.service, u.State, u.Message)
		}
	}
	tasks, err := s.roleTasks(ctx)
	if err != nil {
		return err
	}
	count := map[string]int{}
	for _, tk := range tasks {
		if tk.image != ref {
			return fmt.Errorf("%s: %s task %s runs %s, want %s", tk.host, tk.role, tk.taskID, tk.image, ref)
		}
		if tk.health != "healthy" {
			return fmt.Errorf("%s: %s task %s is %q, not healthy", tk.host, tk.role, tk.taskID, tk.health)
		}
		count[tk.host+"/"+tk.role]++
	}
	for _, h := range s.Up() {
		for role, r := range roles {
			want := 0
			if r.onHost(h) {
				want = 1
			}
			if n := count[h.Name+"/"+role]; n != want {
				return fmt.Errorf("%s: %d %s role tasks running, want %d", h.Name, n, role, want)
			}
		}
	}
	return nil
}

func (s *stackBed) waitStack(ref string, timeout time.Duration) time.Duration {
	s.t.Helper()
	return s.WaitFor("the stack running "+ref+" and healthy", timeout, func(ctx context.Context) error {
		return s.stackReady(ctx, ref)
	})
}

// checkInstall checks what the stack made: the role tasks are containers
// (no reconciler process outside them), with only the capabilities the
// stack file gives, the Docker socket and the host's network; and the
// reconciler does not count its own services among those it manages.
func (s *stackBed) checkInstall(ref string) {
	s.t.Helper()
	tasks, err := s.roleTasks(s.Ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	containers := map[string]bool{}
	for _, tk := range tasks {
		ci, err := s.Docker(s.host(tk.host)).ContainerInspect(s.Ctx, tk.container)
		if err != nil {
			s.t.Fatal(err)
		}
		containers[tk.host+"/"+fmt.Sprint(ci.State.Pid)] = true
		wantAdd := []string{}
		if tk.role == "host" {
			wantAdd = []string{"CAP_NET_ADMIN"}
		}
		hc := ci.HostConfig
		if !slices.Equal(normCaps(hc.CapAdd), wantAdd) || !slices.Equal(normCaps(hc.CapDrop), []string{"CAP_ALL"}) {
			s.t.Errorf("%s %s: capabilities add %v drop %v; want add %v, drop ALL", tk.host, tk.role, hc.CapAdd, hc.CapDrop, wantAdd)
		}
		if !hc.NetworkMode.IsHost() {
			s.t.Errorf("%s %s: network mode %q, want host", tk.host, tk.role, hc.NetworkMode)
		}
		sock := false
		for _, m := range ci.Mounts {
			sock = sock || (m.Source == lab.DockerSocketPath && m.Destination == lab.DockerSocketPath)
		}
		if !sock {
			s.t.Errorf("%s %s: no bind mount of %s: %+v", tk.host, tk.role, lab.DockerSocketPath, ci.Mounts)
		}
		if hc.Resources.Memory == 0 || hc.Resources.NanoCPUs == 0 {
			s.t.Errorf("%s %s: no resource limits (memory %d, cpus %d)", tk.host, tk.role, hc.Resources.Memory, hc.Resources.NanoCPUs)
		}
	}
	// The binary in the image says the version it was built as.
	if len(tasks) > 0 {
		tk := tasks[0]
		out := s.execIn(s.host(tk.host), tk.container, "/reconciler", "version")
		tag := strings.TrimPrefix(ref, imageRepo+":")
		if !strings.HasPrefix(out, "reconciler "+tag+"\n") || !strings.Contains(out, "docker:  Engine ") {
			s.t.Errorf("%s %s: reconciler version in the task:\n%s\nwant version %s and the host's Engine", tk.host, tk.role, out, tag)
		}
		s.t.Logf("reconciler version in a %s task on %s:\n%s", tk.role, tk.host, out)
	}
	// Every reconciler process on the machine in a host's network
	// namespace is one of those containers' main process.
	for _, h := range s.Cluster.Hosts() {
		for _, pid := range reconcilerPids(h) {
			if !containers[h.Name+"/"+fmt.Sprint(pid)] {
				cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				s.t.Errorf("%s: reconciler process %d (%s) is not a stack task", h.Name, pid, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
			}
		}
	}
	managed, err := s.ManagedServices(s.Ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, r := range roles {
		if _, ok := managed[r.service]; ok {
			s.t.Errorf("%s carries swarmvlan's owner label", r.service)
		}
		svc, _, err := s.Mgr.ServiceInspectWithRaw(s.Ctx, r.service, swarm.ServiceInspectOptions{})
		if err != nil {
			s.t.Fatal(err)
		}
		var cons []string
		if p := svc.Spec.TaskTemplate.Placement; p != nil {
			cons = p.Constraints
		}
		for _, c := range cons {
			if strings.Contains(c, spec.NodeLabelPrefix) {
				s.t.Errorf("%s: constrained on a readiness label: %v", r.service, cons)
			}
		}
	}
}

// execIn runs a command in a container and returns its output.
func (s *stackBed) execIn(h *lab.Host, id string, cmd ...string) string {
	s.t.Helper()
	cli := s.Docker(h)
	ex, err := cli.ContainerExecCreate(s.Ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		s.t.Fatalf("%s: exec %v: %v", h.Name, cmd, err)
	}
	att, err := cli.ContainerExecAttach(s.Ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		s.t.Fatalf("%s: exec %v: %v", h.Name, cmd, err)
	}
	defer att.Close()
	var buf bytes.Buffer
	_, _ = stdcopy.StdCopy(&buf, &buf, att.Reader)
	return buf.String()
}

func normCaps(cs []string) []string {
	out := []string{}
	for _, c := range cs {
		c = strings.ToUpper(c)
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// reconcilerPids lists the processes in h's network namespace whose
// command is a reconciler binary.
func reconcilerPids(h *lab.Host) []int {
	var st syscall.Stat_t
	if err := syscall.Stat(h.Netns, &st); err != nil {
		return nil
	}
	netns := fmt.Sprintf("net:[%d]", st.Ino)
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cmd) == 0 {
			continue
		}
		argv0, _, _ := bytes.Cut(cmd, []byte{0})
		if filepath.Base(string(argv0)) != "reconciler" {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && l == netns {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (s *stackBed) host(name string) *lab.Host {
	for _, h := range s.Cluster.Hosts() {
		if h.Name == name {
			return h
		}
	}
	s.t.Fatalf("no host %s", name)
	return nil
}

// walkthrough is the README's walkthrough (e2e/walkthrough) on the
// stack: per-node chunks allocated in KV, the swarm network, the web tasks
// two per host with addresses from their own host's chunk and passing in
// Consul, the kernel side on every host, and ready statuses.
func (s *stackBed) walkthrough() {
	t := s.t
	t.Helper()
	tasks := s.Seed()
	ctx, cancel := context.WithTimeout(s.Ctx, 2*time.Minute)
	defer cancel()
	chunks, err := s.Chunks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subnet, exclude := netip.MustParsePrefix(bed.VLANSubnet), netip.MustParsePrefix(bed.VLANExclude)
	owner := map[netip.Prefix]string{}
	for host, c := range chunks {
		if c.Bits() != 24 || !subnet.Contains(c.Addr()) || c.Overlaps(exclude) {
			t.Errorf("%s: chunk %s: want a /24 of %s outside %s", host, c, bed.VLANSubnet, bed.VLANExclude)
		}
		if other, dup := owner[c]; dup {
			t.Errorf("chunk %s on both %s and %s", c, other, host)
		}
		owner[c] = host
	}
	if len(chunks) != 3 {
		t.Errorf("chunks on %d hosts, want 3: %v", len(chunks), chunks)
	}
	for _, h := range s.Cluster.Hosts() {
		p, _, err := s.Consul(s.H1).KV().Get(fmt.Sprintf("%sstate/allocations/%s/%s", bed.KVPrefix, bed.VLANName, h.ID), nil)
		if err != nil || p == nil {
			t.Errorf("%s: no allocation in KV (%v)", h.Name, err)
			continue
		}
		var al state.Allocation
		if err := json.Unmarshal(p.Value, &al); err != nil || al.Chunk != chunks[h.Name].String() {
			t.Errorf("%s: allocation %s in KV, config network holds %s (%v)", h.Name, p.Value, chunks[h.Name], err)
		}
	}
	sn, err := s.Mgr.NetworkInspect(ctx, bed.SwarmNetwork, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sn.Scope != "swarm" || sn.Driver != "macvlan" || sn.ConfigFrom.Network != bed.ConfigNetwork {
		t.Errorf("swarm network %s: scope %q, driver %q, config from %q", bed.SwarmNetwork, sn.Scope, sn.Driver, sn.ConfigFrom.Network)
	}
	per := map[string]int{}
	for _, tk := range tasks {
		per[tk.Host]++
	}
	for _, h := range s.Cluster.Hosts() {
		if per[h.Name] != 2 {
			t.Errorf("%s runs %d web tasks, want 2 (tasks: %v)", h.Name, per[h.Name], tasks)
		}
	}
	if err := s.HostNetReady(ctx); err != nil {
		t.Error(err)
	}
	s.WaitFor("vlan and service statuses ready", time.Minute, s.statusesReady)
	t.Logf("reconciler status:\n%s", s.ReconcilerCmd("status"))
}

// statusesReady checks the VLAN's and web's status records.
func (s *stackBed) statusesReady(ctx context.Context) error {
	for _, o := range []struct{ section, name string }{{"vlans", bed.VLANName}, {"services", "web"}} {
		st, ok, err := s.Status(ctx, o.section, o.name)
		if err != nil || !ok {
			return fmt.Errorf("status/%s/%s: %v (present %v)", o.section, o.name, err, ok)
		}
		if c, _ := bed.Condition(st, "Ready"); c.Status != "True" || st.LastError != "" {
			return fmt.Errorf("status/%s/%s: Ready %+v, last error %q", o.section, o.name, c, st.LastError)
		}
	}
	return nil
}

// checkOrbiter calls the manager role's scale API on each manager's
// address, with the token from the stack's secret, as a webhook would.
func (s *stackBed) checkOrbiter() {
	s.t.Helper()
	for _, h := range s.Cluster.Managers() {
		req, err := http.NewRequestWithContext(s.Ctx, http.MethodGet, "http://"+h.Addr+":8480/v1/orbiter/health", nil)
		if err != nil {
			s.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.t.Errorf("%s: Orbiter health through the stack's manager role: %v", h.Name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"status": true`) {
			s.t.Errorf("%s: Orbiter health through the stack's manager role: %s %s", h.Name, resp.Status, body)
		}
	}
}

// leaderWatch records every session that holds the leader lock.
type leaderWatch struct {
	mu       sync.Mutex
	sessions []string
	holders  []string
}

func (s *stackBed) watchLeader(ctx context.Context) *leaderWatch {
	w := &leaderWatch{}
	go func() {
		for ctx.Err() == nil {
			p, _, err := s.Consul(s.H1).KV().Get(bed.KVPrefix+"leader", (&api.QueryOptions{}).WithContext(ctx))
			if err == nil && p != nil && p.Session != "" {
				w.mu.Lock()
				if n := len(w.sessions); n == 0 || w.sessions[n-1] != p.Session {
					w.sessions = append(w.sessions, p.Session)
					w.holders = append(w.holders, string(p.Value))
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *leaderWatch) terms() ([]string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.holders), len(w.sessions)
}

// upgrade rolls the stack to a second image tag: no web task restarts,
// the leadership changes at most once per manager task replaced, and the
// statuses stay ready throughout.
func (s *stackBed) upgrade(from string) {
	t := s.t
	t.Helper()
	before, err := s.Running(s.Ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	oldRoles, err := s.roleTasks(s.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	imgB := s.buildAndLoad("e2e-b")

	ctx, cancel := context.WithCancel(s.Ctx)
	defer cancel()
	lw := s.watchLeader(ctx)
	var mu sync.Mutex
	var broken []string
	go func() {
		for ctx.Err() == nil {
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			err := s.statusesReady(cctx)
			ccancel()
			if err != nil && ctx.Err() == nil {
				mu.Lock()
				broken = append(broken, time.Now().Format("15:04:05.000")+" "+err.Error())
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	s.WaitFor("the leader lock seen", 30*time.Second, func(context.Context) error {
		if _, n := lw.terms(); n == 0 {
			return errors.New("no holder seen yet")
		}
		return nil
	})
	s.deploy(imgB)
	took := s.waitStack(imgB, 6*time.Minute)
	// The last statuses after the roll, then stop the watchers.
	s.WaitFor("statuses after the upgrade", time.Minute, s.statusesReady)
	cancel()
	t.Logf("rolling upgrade %s -> %s: every role task replaced and healthy %s after docker stack deploy",
		from, imgB, took.Round(100*time.Millisecond))

	newRoles, err := s.roleTasks(s.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range oldRoles {
		for _, n := range newRoles {
			if o.taskID == n.taskID {
				t.Errorf("%s %s task %s was not replaced", o.host, o.role, o.taskID)
			}
		}
	}
	holders, sessions := lw.terms()
	managers := len(s.Cluster.Managers())
	t.Logf("leader lock holders during the upgrade: %v (%d changes for %d manager tasks replaced)", holders, sessions-1, managers)
	if sessions == 0 || sessions-1 > managers {
		t.Errorf("leadership changed %d times for %d manager tasks replaced: %v", sessions-1, managers, holders)
	}
	mu.Lock()
	if len(broken) > 0 {
		t.Errorf("statuses not ready during the upgrade:\n%s", strings.Join(broken, "\n"))
	}
	mu.Unlock()
	after, _ := s.WaitConverged(bed.WebWant(6), time.Minute)
	if ids(before) != ids(after) {
		t.Errorf("web tasks changed during the upgrade:\nbefore %s\nafter  %s", ids(before), ids(after))
	}
}

func ids(tasks []bed.Task) string {
	var out []string
	for _, tk := range tasks {
		out = append(out, tk.Host+"/"+tk.TaskID)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// kvSnapshot is the ModifyIndex of every key under the prefix that a
// reboot must not change: the documents, the allocations, the scale
// intents and the installation record (statuses, node reports and the
// leader lock are live records, left out).
func (s *stackBed) kvSnapshot(ctx context.Context) (map[string]uint64, error) {
	pairs, _, err := s.Consul(s.H1).KV().List(bed.KVPrefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, p := range pairs {
		rest := strings.TrimPrefix(p.Key, bed.KVPrefix)
		if strings.HasPrefix(rest, "status/") || strings.HasPrefix(rest, "state/nodes/") || rest == "leader" {
			continue
		}
		out[p.Key] = p.ModifyIndex
	}
	return out, nil
}

// reboot crashes and boots the worker h3: the host role comes back as a
// Swarm task and puts back the shim and promiscuous mode, the config
// network is still the same chunk, the web tasks run again on h3 from
// its chunk, and no document, allocation or scale intent changed in KV.
func (s *stackBed) reboot() {
	t := s.t
	t.Helper()
	h3 := s.Cluster.Host(3)
	if h3.Manager {
		t.Fatal("h3 is a manager; the reboot is of the worker")
	}
	chunksBefore, err := s.Chunks(s.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	kvBefore, err := s.kvSnapshot(s.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Crash(h3)
	begin := time.Now()
	s.BootOnly(h3)
	s.WaitFor("h3 back after a reboot", 5*time.Minute, func(ctx context.Context) error {
		chunks, err := s.Chunks(ctx)
		if err != nil {
			return err
		}
		if !maps.Equal(chunks, chunksBefore) {
			return fmt.Errorf("chunks %v, were %v", chunks, chunksBefore)
		}
		if err := s.HostNetReady(ctx); err != nil {
			return err
		}
		tasks, err := s.Converged(ctx, bed.WebWant(6))
		if err != nil {
			return err
		}
		per := map[string]int{}
		for _, tk := range tasks {
			per[tk.Host]++
		}
		if per[h3.Name] != 2 {
			return fmt.Errorf("h3 runs %d web tasks, want 2", per[h3.Name])
		}
		return s.stackReady(ctx, imageRepo+":e2e-b")
	})
	t.Logf("reboot of h3: networks, shim, role tasks and web tasks back %s after boot", time.Since(begin).Round(100*time.Millisecond))
	kvAfter, err := s.kvSnapshot(s.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(kvBefore, kvAfter) {
		var changed []string
		for k, v := range kvAfter {
			if kvBefore[k] != v {
				changed = append(changed, k)
			}
		}
		for k := range kvBefore {
			if _, ok := kvAfter[k]; !ok {
				changed = append(changed, k+" (gone)")
			}
		}
		sort.Strings(changed)
		t.Errorf("KV changed across the reboot: %v", changed)
	}
}

// remove runs docker stack rm, as the README's removal does: the role
// tasks go, and what swarmvlan made stays and keeps working (the web tasks,
// the networks, the shims; Consul keeps its documents and registrations).
func (s *stackBed) remove() {
	t := s.t
	t.Helper()
	was, err := s.World(s.Ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	s.cli(s.H1, nil, nil, "stack", "rm", stackName)
	s.WaitFor("the role tasks gone", 2*time.Minute, func(ctx context.Context) error {
		tasks, err := s.roleTasks(ctx)
		if err != nil {
			return err
		}
		if len(tasks) > 0 {
			return fmt.Errorf("%d role tasks still running", len(tasks))
		}
		for _, h := range s.Cluster.Hosts() {
			if pids := reconcilerPids(h); len(pids) > 0 {
				return fmt.Errorf("%s: reconciler processes %v", h.Name, pids)
			}
		}
		return nil
	})
	s.Holds("web keeps running and passing without swarmvlan", 20*time.Second, 5*time.Second, func(ctx context.Context) error {
		now, err := s.World(ctx, "web")
		if err != nil {
			return err
		}
		if err := was.Same(now); err != nil {
			return err
		}
		_, err = s.Converged(ctx, bed.WebWant(6))
		return err
	})
}

// logsOnFailure prints the role containers' last log lines when the test
// failed.
func (s *stackBed) logsOnFailure() {
	if !s.t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tasks, err := s.roleTasks(ctx)
	if err != nil {
		s.t.Logf("role tasks: %v", err)
		return
	}
	for _, tk := range tasks {
		rc, err := s.Docker(s.host(tk.host)).ContainerLogs(ctx, tk.container, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "40"})
		if err != nil {
			s.t.Logf("%s %s logs: %v", tk.host, tk.role, err)
			continue
		}
		var buf bytes.Buffer
		_, _ = stdcopy.StdCopy(&buf, &buf, rc)
		rc.Close()
		s.t.Logf("%s %s role (task %s) last lines:\n%s", tk.host, tk.role, tk.taskID, buf.String())
	}
}
