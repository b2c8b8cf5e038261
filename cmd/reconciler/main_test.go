package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/host"
	"swarmvlan/state"
)

// binary is the reconciler built once for the process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "reconciler-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "reconciler")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build reconciler: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs a subcommand in-process against the agent at addr.
func run(t testing.TB, addr string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{args[0], "--consul-addr", addr}, args[1:]...)
	if addr == "" {
		full = args
	}
	code := runMain(context.Background(), full, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// hasLine says whether out has a line starting (after indentation) with
// mark and containing text.
func hasLine(out, mark, text string) bool {
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, mark) && strings.Contains(l, text) {
			return true
		}
	}
	return false
}

func writeFile(t testing.TB, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const vlanDoc = `apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: vlan40
spec:
  id: 40
  trunk: bond0
  subnet: 172.80.0.0/16
  gateway: 172.80.0.1
  rangePlan:
    chunkPrefix: 24
`

func serviceDoc(name string, replicas int) string {
	return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata:
  name: %s
spec:
  image: swarmvlan-testapp:dev
  networks: [vlan40]
  replicas: %d
`, name, replicas)
}

func TestValidateExamplesAndSpecDocuments(t *testing.T) {
	for _, dir := range []string{"../../examples", "../../spec/testdata/valid/vlan40.yaml", "../../spec/testdata/valid/web.yaml", "../../spec/testdata/valid/worker1.yaml"} {
		code, out, errOut := run(t, "", "", "validate", "-f", dir)
		if code != 0 {
			t.Fatalf("validate %s: exit %d\n%s%s", dir, code, out, errOut)
		}
	}
	code, out, _ := run(t, "", "", "validate", "-f", "../../examples")
	for _, want := range []string{"VLAN vlan40 valid", "Service web valid", "Host worker1 valid"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
	// A directory is read like kubectl -f: its own files, not its
	// subdirectories' (examples/demo holds another set).
	if strings.Contains(out, "vlan80") || strings.Contains(out, "demo-web") {
		t.Errorf("validate of examples/ read examples/demo too:\n%s", out)
	}
	// The same document in two sources is refused.
	code, _, errOut := run(t, "", "", "validate", "-f", "../../examples", "-f", "../../spec/testdata/valid/vlan40.yaml")
	if code != 1 || !strings.Contains(errOut, `VLAN "vlan40" is also defined in`) {
		t.Errorf("duplicate document accepted: exit %d\n%s", code, errOut)
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	bad := strings.Replace(vlanDoc, "chunkPrefix: 24", "chunkPrefix: 8", 1)
	bad = strings.Replace(bad, "id: 40", "id: 5000", 1)
	writeFile(t, dir, "bad.yaml", bad)
	writeFile(t, dir, "svc.yaml", strings.Replace(serviceDoc("web", -1), "image: swarmvlan-testapp:dev", "image: UPPER/Case", 1))
	code, _, errOut := run(t, "", "", "validate", "-f", dir)
	if code != 1 {
		t.Fatalf("validate exit %d, want 1\n%s", code, errOut)
	}
	for _, want := range []string{
		"bad.yaml: spec.id:",
		"bad.yaml: spec.rangePlan.chunkPrefix: must be between 16 and 30 (subnet is /16)",
		"svc.yaml: spec.replicas:",
		"svc.yaml: spec.image:",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate errors lack %q:\n%s", want, errOut)
		}
	}
}

func TestApplyDiffPrune(t *testing.T) {
	agent := lab.StartConsul(t)
	kv := agent.Client(t).KV()
	dir := t.TempDir()
	writeFile(t, dir, "vlan.yaml", vlanDoc)
	writeFile(t, dir, "svc.yaml", serviceDoc("web", 3)+"---\n"+serviceDoc("api", 2))

	code, out, errOut := run(t, agent.Addr, "", "apply", "-f", dir)
	if code != 0 || !strings.Contains(out, "3 created, 0 changed, 0 unchanged, 0 pruned") {
		t.Fatalf("first apply: exit %d\n%s%s", code, out, errOut)
	}
	p, _, err := kv.Get("swarmvlan/spec/services/api", nil)
	if err != nil || p == nil {
		t.Fatalf("services/api not written: %v", err)
	}
	if !strings.Contains(string(p.Value), "replicas: 2") || strings.Contains(string(p.Value), "name: web") {
		t.Fatalf("services/api holds more or less than its own document:\n%s", p.Value)
	}
	before := p.ModifyIndex

	// Re-applying the same documents, even reformatted, writes nothing.
	writeFile(t, dir, "vlan.yaml", strings.ReplaceAll(vlanDoc, "  ", "    "))
	code, out, _ = run(t, agent.Addr, "", "apply", "-f", dir)
	if code != 0 || !strings.Contains(out, "0 created, 0 changed, 3 unchanged") {
		t.Fatalf("re-apply: exit %d\n%s", code, out)
	}
	if p, _, _ := kv.Get("swarmvlan/spec/services/api", nil); p.ModifyIndex != before {
		t.Fatalf("unchanged document rewritten: index %d -> %d", before, p.ModifyIndex)
	}

	// A hand edit in KV shows as drift in diff, and apply reverts it.
	edited := strings.Replace(serviceDoc("api", 2), "replicas: 2", "replicas: 7", 1)
	if _, err := kv.Put(&api.KVPair{Key: "swarmvlan/spec/services/api", Value: []byte(edited)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(&api.KVPair{Key: "swarmvlan/spec/services/stray", Value: []byte(serviceDoc("stray", 1))}, nil); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, agent.Addr, "", "diff", "-f", dir)
	if code != 0 || !strings.Contains(out, "~ services/api") || !hasLine(out, "-", `"replicas": 7`) ||
		!hasLine(out, "+", `"replicas": 2`) || !strings.Contains(out, "? services/stray") {
		t.Fatalf("diff does not show the drift:\n%s", out)
	}
	code, out, _ = run(t, agent.Addr, "", "apply", "-f", dir, "--prune")
	if code != 0 || !strings.Contains(out, "changed services/api") || !strings.Contains(out, "pruned services/stray") {
		t.Fatalf("apply --prune: exit %d\n%s", code, out)
	}
	if p, _, _ := kv.Get("swarmvlan/spec/services/stray", nil); p != nil {
		t.Fatal("stray document not pruned")
	}

	// Pruning to nothing is refused unless asked for explicitly.
	empty := t.TempDir()
	writeFile(t, empty, "README.txt", "no documents")
	code, _, errOut = run(t, agent.Addr, "", "apply", "-f", writeFile(t, empty, "only-host.yaml", "apiVersion: swarmvlan/v1\nkind: Host\nmetadata: {name: h1}\nspec: {trunk: eth1}\n"), "--prune", "--dry-run")
	if code != 0 {
		t.Fatalf("dry-run prune: exit %d %s", code, errOut)
	}
	keys, _, _ := kv.Keys("swarmvlan/spec/", "", nil)
	if len(keys) != 3 {
		t.Fatalf("dry run changed KV: %v", keys)
	}
	// Nothing under the prefix besides our own is touched by prune.
	if _, err := kv.Put(&api.KVPair{Key: "other/spec/services/x", Value: []byte("x")}, nil); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, agent.Addr, "", "apply", "-f", filepath.Join(empty, "only-host.yaml"), "--prune")
	if code != 0 {
		t.Fatalf("prune to one document: exit %d\n%s%s", code, out, errOut)
	}
	if p, _, _ := kv.Get("other/spec/services/x", nil); p == nil {
		t.Fatal("prune deleted a key outside its prefix")
	}
	code, _, errOut = run(t, agent.Addr, "", "delete", "host", "h1")
	if code != 0 {
		t.Fatalf("delete: %s", errOut)
	}
	writeFile(t, dir, "vlan.yaml", vlanDoc)
	run(t, agent.Addr, "", "apply", "-f", dir)
	emptyDir := t.TempDir()
	code, _, errOut = run(t, agent.Addr, "", "apply", "-f", emptyDir, "--prune")
	if code == 0 {
		t.Fatal("apply --prune of an empty source deleted everything without --allow-empty")
	}
	if keys, _, _ := kv.Keys("swarmvlan/spec/", "", nil); len(keys) != 3 {
		t.Fatalf("refused prune still changed KV: %v (%s)", keys, errOut)
	}
	code, out, errOut = run(t, agent.Addr, "", "apply", "-f", emptyDir, "--prune", "--allow-empty")
	if code != 0 || !strings.Contains(out, "3 pruned") {
		t.Fatalf("apply --prune --allow-empty: exit %d\n%s%s", code, out, errOut)
	}
}

func TestApplyRefusesInvalidAndWritesNothing(t *testing.T) {
	agent := lab.StartConsul(t)
	dir := t.TempDir()
	writeFile(t, dir, "ok.yaml", vlanDoc)
	writeFile(t, dir, "bad.yaml", strings.Replace(serviceDoc("web", 3), "replicas: 3", "replicas: lots", 1))
	code, _, errOut := run(t, agent.Addr, "", "apply", "-f", dir)
	if code != 1 || !strings.Contains(errOut, "spec.replicas") || !strings.Contains(errOut, "nothing was written") {
		t.Fatalf("apply of an invalid set: exit %d\n%s", code, errOut)
	}
	keys, _, _ := agent.Client(t).KV().Keys("swarmvlan/", "", nil)
	if len(keys) != 0 {
		t.Fatalf("invalid apply wrote %v", keys)
	}
}

func TestGetAndStatus(t *testing.T) {
	agent := lab.StartConsul(t)
	dir := t.TempDir()
	writeFile(t, dir, "vlan.yaml", vlanDoc)
	run(t, agent.Addr, "", "apply", "-f", dir)
	code, out, _ := run(t, agent.Addr, "", "get", "vlans", "vlan40")
	if code != 0 || out != vlanDoc {
		t.Fatalf("get vlan: exit %d\n%q", code, out)
	}
	code, out, _ = run(t, agent.Addr, "", "status")
	if code != 0 || !strings.Contains(out, "vlans") || !strings.Contains(out, "not yet reconciled") {
		t.Fatalf("status before any reconciler: exit %d\n%s", code, out)
	}
}

// proc is a `reconciler run` child process.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	name string
}

func startRun(t testing.TB, addr, name string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"run", "--role", "manager", "--consul-addr", addr, "--log-level", "debug"}, extra...)
	p := &proc{cmd: exec.Command(binary, args...), name: name}
	p.cmd.Env = append(os.Environ(), "SWARMVLAN_NODE_NAME="+name)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, p.Logs())
		}
	})
	return p
}

func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func (p *proc) leading() bool { return strings.Contains(p.Logs(), "msg=leading") }

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTwoManagersOneLeaderAndKillHandsOver(t *testing.T) {
	agent := lab.StartConsul(t)
	a := startRun(t, agent.Addr, "a")
	waitFor(t, 20*time.Second, "a to lead", a.leading)
	b := startRun(t, agent.Addr, "b")
	// b must not lead while a holds the lock.
	time.Sleep(2 * time.Second)
	if b.leading() {
		t.Fatal("two managers lead at once")
	}
	killed := time.Now()
	a.cmd.Process.Signal(syscall.SIGKILL)
	waitFor(t, 45*time.Second, "b to take over", b.leading)
	t.Logf("leader takeover after SIGKILL: %v (leader check every %v, critical after %d failures, lock delay %v)",
		time.Since(killed).Round(100*time.Millisecond), state.LeaderCheckInterval, state.LeaderCheckFailures, state.DefaultLeaderLockDelay)
}

func TestInvalidDocumentPutInKVGetsStatusAndLastValidStays(t *testing.T) {
	agent := lab.StartConsul(t)
	kv := agent.Client(t).KV()
	dir := t.TempDir()
	writeFile(t, dir, "vlan.yaml", vlanDoc)
	run(t, agent.Addr, "", "apply", "-f", dir)
	startRun(t, agent.Addr, "a")

	status := func() state.Status {
		var st state.Status
		p, _, err := kv.Get("swarmvlan/status/vlans/vlan40", nil)
		if err != nil || p == nil {
			return st
		}
		json.Unmarshal(p.Value, &st)
		return st
	}
	good, _, _ := kv.Get("swarmvlan/spec/vlans/vlan40", nil)
	waitFor(t, 20*time.Second, "status of the valid document", func() bool {
		st := status()
		return st.ObservedIndex == good.ModifyIndex && len(st.Conditions) > 0 && st.Conditions[0].Status == "True"
	})

	bad := strings.Replace(vlanDoc, "chunkPrefix: 24", "chunkPrefix: 8", 1)
	if _, err := kv.Put(&api.KVPair{Key: "swarmvlan/spec/vlans/vlan40", Value: []byte(bad)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the error in status", func() bool {
		return strings.Contains(status().LastError, "spec.rangePlan.chunkPrefix: must be between 16 and 30 (subnet is /16)")
	})
	st := status()
	if !strings.Contains(st.Conditions[0].Message, fmt.Sprintf("index %d, stays in force", good.ModifyIndex)) {
		t.Fatalf("status does not say the last valid version stays in force: %+v", st.Conditions[0])
	}
	// A document under the wrong name is refused the same way.
	misnamed := strings.Replace(vlanDoc, "name: vlan40", "name: vlan41", 1)
	kv.Put(&api.KVPair{Key: "swarmvlan/spec/vlans/other", Value: []byte(misnamed)}, nil)
	waitFor(t, 10*time.Second, "the misnamed document's error", func() bool {
		p, _, _ := kv.Get("swarmvlan/status/vlans/other", nil)
		return p != nil && strings.Contains(string(p.Value), "metadata.name")
	})
}

// countingProxy counts the HTTP requests a daemon makes to Consul.
func countingProxy(t testing.TB, target string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	var n atomic.Int64
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// BenchmarkIdleRequestRate runs one daemon with every role (the leader and
// the host role) until its VLAN and service are converged, then reports the
// requests per second it makes to Consul while nothing changes, counted by a
// proxy in front of the agent (target: at most 0.2). SWARMVLAN_IDLE_WINDOW
// sets the measured window (default 60s).
func BenchmarkIdleRequestRate(b *testing.B) {
	window := 60 * time.Second
	if v := os.Getenv("SWARMVLAN_IDLE_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		window = d
	}
	if os.Geteuid() != 0 {
		b.Skip("needs root for the veth trunk and the host role")
	}
	lab.EnsureSwarm(b)
	if _, err := lab.BuildTestImage(context.Background(), ""); err != nil {
		b.Fatal(err)
	}
	trunk := "svi" + fmt.Sprint(os.Getpid()%100000)
	if out, err := exec.Command("ip", "link", "add", trunk, "type", "veth", "peer", "name", trunk+"p").CombinedOutput(); err != nil {
		b.Skipf("cannot create a veth pair: %v: %s", err, out)
	}
	exec.Command("ip", "link", "set", trunk, "up").Run()
	agent := lab.StartConsul(b)
	srv, n := countingProxy(b, agent.Addr)
	addr := strings.TrimPrefix(srv.URL, "http://")
	dir := b.TempDir()
	writeFile(b, dir, "vlan.yaml", fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata: {name: idle}
spec:
  trunk: %s
  subnet: 172.123.0.0/16
  rangePlan: {chunkPrefix: 24}
`, trunk))
	writeFile(b, dir, "svc.yaml", `apiVersion: swarmvlan/v1
kind: Service
metadata: {name: idleweb}
spec:
  image: swarmvlan-testapp:dev
  networks: [idle]
  replicas: 1
`)
	if code, out, errOut := run(b, agent.Addr, "", "apply", "-f", dir); code != 0 {
		b.Fatalf("apply: %s%s", out, errOut)
	}
	p := startRun(b, addr, "idle", "--role", "all")
	b.Cleanup(func() {
		// Stop the daemon first, then remove what it made.
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
		ctx := context.Background()
		if d, err := engine.New(""); err == nil {
			cluster.RemoveService(ctx, d, "idleweb")
			waitFor(b, 30*time.Second, "service gone", func() bool {
				_, err := d.NetworkInspect(ctx, "idle")
				if err != nil {
					return true
				}
				cluster.RemoveSwarmNetwork(ctx, d, "idle")
				return false
			})
			host.RemoveConfigNetwork(ctx, d, "idle")
			d.Close()
		}
		exec.Command("ip", "link", "del", trunk).Run()
	})
	kv := agent.Client(b).KV()
	ready := func(key string) bool {
		pair, _, err := kv.Get(key, nil)
		if err != nil || pair == nil {
			return false
		}
		var st state.Status
		json.Unmarshal(pair.Value, &st)
		for _, c := range st.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				return true
			}
		}
		return false
	}
	waitFor(b, 90*time.Second, "VLAN and service ready", func() bool {
		return ready("swarmvlan/status/vlans/idle") && ready("swarmvlan/status/services/idleweb")
	})
	time.Sleep(10 * time.Second) // let start-up requeues and status writes settle
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start, t0 := n.Load(), time.Now()
		time.Sleep(window)
		rate := float64(n.Load()-start) / time.Since(t0).Seconds()
		b.ReportMetric(rate, "req/s")
	}
}
