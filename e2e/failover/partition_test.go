package failover

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/lab"
)

// TestLeaderCutOff runs, on one cluster of three managers, the faults in
// which a leader can no longer prove it holds the lock while its Docker
// Engine still takes writes: its host cut off from the Consul cluster (the
// Consul ports dropped on its management interface, Swarm's left open),
// and its local Consul agent killed, then started again once another
// manager leads. In both, the leader is busy creating services when the
// fault hits, and a service it created is changed meanwhile; every Docker
// write of the old and the new leader is read from their logs ("docker
// write", with when it was sent and how long it took). Then the agent is
// restarted at once (the leadership may survive that), and one health
// probe of the leader is slowed past its timeout: the leadership must be
// kept.
func TestLeaderCutOff(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.Apply(bed.VLANDoc())
	b.NodesReady(3 * time.Minute)

	t.Run("consul-cut", func(t *testing.T) {
		// The worst case: the leader's host is also the Consul leader, so
		// the other servers first elect another one, and every consistent
		// query they had forwarded to it hangs on a dead connection.
		cutOff(t, b.For(t), "iso", "cut off from Consul",
			func(t *testing.T, h *lab.Host) { cutConsul(t, h) },
			func(t *testing.T, h *lab.Host) { healConsul(t, h) }, makeConsulLeader)
	})
	t.Run("agent-restart", func(t *testing.T) {
		// Down until another manager leads: serf finds the agent gone,
		// serfHealth turns critical and the lock's session ends.
		var down *lab.Host
		t.Cleanup(func() {
			if down != nil {
				startConsul(t, down)
			}
		})
		cutOff(t, b.For(t), "rst", "local agent stopped",
			func(t *testing.T, h *lab.Host) { down = h; h.KillConsul() },
			func(t *testing.T, h *lab.Host) { startConsul(t, h); down = nil }, nil)
	})
	t.Run("agent-restart-quick", func(t *testing.T) {
		quickRestart(t, b.For(t))
	})
	t.Run("probe-slow-once", func(t *testing.T) {
		probeSlowOnce(t, b.For(t))
	})
}

func startConsul(t *testing.T, h *lab.Host) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.StartConsul(ctx); err != nil {
		t.Fatalf("start %s's Consul agent again: %v", h.Name, err)
	}
}

// putServices puts n services (prefix-01, ...) of one replica into KV
// through h's agent.
func putServices(t *testing.T, b *bed.Bed, h *lab.Host, prefix string, n int) []string {
	var names []string
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("%s-%02d", prefix, i)
		names = append(names, name)
		doc := bed.ServiceDoc(bed.ServiceOpts{Name: name, Replicas: 1})
		if _, err := b.Consul(h).KV().Put(&api.KVPair{Key: bed.KVPrefix + "spec/services/" + name, Value: []byte(doc)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// quickRestart restarts the leader's local agent at once, while the
// leader creates services. The agent restores the leader check from its
// data directory, so the session may survive; either way every service
// must be created exactly once, and if another manager took over, the
// old leader's writes must all have ended before the new one's first.
func quickRestart(t *testing.T, b *bed.Bed) {
	const n = 12
	old := leaderNow(t, b)
	_, sess, err := leaderKey(b, otherManager(b, old))
	if err != nil {
		t.Fatal(err)
	}
	names := putServices(t, b, otherManager(b, old), "qr", n)
	b.WaitFor("the leader creates the first qr service", time.Minute, func(ctx context.Context) error {
		svcs, err := b.ManagedServices(ctx)
		if err != nil {
			return err
		}
		for _, name := range names {
			if len(svcs[name]) > 0 {
				return nil
			}
		}
		return errors.New("none yet")
	})
	at := time.Now()
	old.KillConsul()
	startConsul(t, old)
	t.Logf("restarted %s's agent in %v", old.Name, time.Since(at).Round(time.Millisecond))
	b.WaitFor("every qr service converged", 4*time.Minute, func(ctx context.Context) error {
		for _, name := range names {
			if _, err := b.Converged(ctx, bed.Want{Service: name, Replicas: 1}); err != nil {
				return err
			}
		}
		return nil
	})
	lead := leaderNow(t, b)
	_, now, err := leaderKey(b, otherManager(b, lead))
	if err != nil {
		t.Fatal(err)
	}
	writes := dockerWrites(b.Proc(old).Logs())
	if lead == old && now == sess {
		t.Logf("%s kept the leadership (session %s) across the restart of its agent", old.Name, sess)
	} else {
		t.Logf("after the restart of %s's agent %s leads (session %s, was %s)", old.Name, lead.Name, now, sess)
		if lead != old {
			newW := dockerWrites(b.Proc(lead).Logs())
			i := slices.IndexFunc(newW, func(w dockerWrite) bool { return w.Sent.After(at) })
			for _, w := range writes {
				if i >= 0 && !w.Done.Before(newW[i].Sent) {
					t.Errorf("old leader's write %s %s returned %s, after the new leader's first was sent %s",
						w.Verb, w.Object, w.Done.Format(time.StampMicro), newW[i].Sent.Format(time.StampMicro))
				}
			}
			writes = append(writes, newW...)
		}
	}
	checkOnce(t, b, names, writes, "")
}

// checkOnce checks that each of names exists once in Docker, was created
// by at most one write that succeeded, and that only changed was updated,
// once. A create that failed on the client's side (cut off by the fence's
// deadline, or canceled with the term when the leadership was lost while
// it was under way) may still have been carried out by the Engine, which
// the next pass then finds by its labels: such a service has no
// successful create but one cut-off create, and is still one service in
// Docker. A create refused as a name conflict changed nothing.
func checkOnce(t *testing.T, b *bed.Bed, names []string, writes []dockerWrite, changed string) {
	t.Helper()
	creates, updates, cutCreates, failed := map[string]int{}, map[string]int{}, map[string]int{}, 0
	for _, w := range writes {
		if w.Err != "<nil>" && w.Err != "" {
			if slices.Contains(names, w.Object) {
				failed++
				t.Logf("failed write: %s %s sent %s: %s", w.Verb, w.Object, w.Sent.Format(time.StampMicro), w.Err)
				if w.Verb == "service create" && (strings.Contains(w.Err, "deadline exceeded") || strings.Contains(w.Err, "context canceled")) {
					cutCreates[w.Object]++
				}
			}
			continue
		}
		switch w.Verb {
		case "service create":
			creates[w.Object]++
		case "service update":
			updates[w.Object]++
		}
	}
	svcs, err := b.ManagedServices(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		wantUpdates := 0
		if name == changed {
			wantUpdates = 1
		}
		createdOnce := creates[name] == 1 || (creates[name] == 0 && cutCreates[name] > 0)
		if !createdOnce || updates[name] != wantUpdates || len(svcs[name]) != 1 {
			t.Errorf("service %s: created %d times (and %d creates cut off by their deadline or their term), updated %d times (want 1 and %d), %d in Docker",
				name, creates[name], cutCreates[name], updates[name], wantUpdates, len(svcs[name]))
		}
	}
}

// cutOff puts n services (prefix-01, ...) into KV through another
// manager's agent, and applies fault to the leader's host as soon as the
// leader has created the first, then changes the first created service to
// two replicas. Another manager must lead; no Docker write of the old
// leader may end after the new leader's first write was sent; the new
// leader must converge every service, each created once and the changed
// one updated once; after heal the old leader must follow.
func cutOff(t *testing.T, b *bed.Bed, prefix, how string, fault, heal func(*testing.T, *lab.Host), prepare func(*testing.T, *bed.Bed, *lab.Host)) {
	const n = 12
	old := leaderNow(t, b)
	other := otherManager(b, old)
	if prepare != nil {
		prepare(t, b, old)
	}
	if l, err := b.Consul(other).Status().Leader(); err == nil {
		t.Logf("Consul leader before the fault: %s (the leader's host %s is %s)", l, old.Name, old.Addr)
	}
	kv := b.Consul(other).KV()
	names := putServices(t, b, other, prefix, n)
	var first string
	b.WaitFor("the leader creates the first "+prefix+" service", time.Minute, func(ctx context.Context) error {
		svcs, err := b.ManagedServices(ctx)
		if err != nil {
			return err
		}
		for _, name := range names {
			if len(svcs[name]) > 0 {
				first = name
				return nil
			}
		}
		return errors.New("none yet")
	})
	at := time.Now()
	fault(t, old)
	t.Logf("%s: %s, leading, %s while it created %d services (%s existed)", how, old.Name, how, n, first)
	changed := bed.ServiceDoc(bed.ServiceOpts{Name: first, Replicas: 2})
	// The cut-off host may have been the Consul leader: the others elect
	// another first.
	b.WaitFor("the change of "+first+" put", time.Minute, func(ctx context.Context) error {
		_, err := kv.Put(&api.KVPair{Key: bed.KVPrefix + "spec/services/" + first, Value: []byte(changed)}, (&api.WriteOptions{}).WithContext(ctx))
		return err
	})

	next, took := takenOver(t, b, old, at, how)
	bed.Figure(t, "leader "+how+", to the new leader's first reconcile", took)
	b.WaitFor("the new leader converges every "+prefix+" service", 4*time.Minute, func(ctx context.Context) error {
		for _, name := range names {
			want := 1
			if name == first {
				want = 2
			}
			if _, err := b.Converged(ctx, bed.Want{Service: name, Replicas: want}); err != nil {
				return err
			}
		}
		return nil
	})

	heal(t, old)
	b.WaitFor("the old leader "+old.Name+" to follow", time.Minute, func(ctx context.Context) error {
		log := b.Proc(old).Logs()
		lost := bed.LogLines(log, "leadership lost")
		if len(lost) == 0 {
			return errors.New("no leadership lost logged")
		}
		if lt, _ := bed.LogTime(lost[len(lost)-1]); lt.Before(at) {
			return errors.New("no leadership lost logged since the fault")
		}
		if got, err := b.Leader(ctx); err != nil || got != next {
			return fmt.Errorf("leader %v (%v), want %s", got, err, next.Name)
		}
		return nil
	})
	t.Logf("healed %s: it follows %s", old.Name, next.Name)
	// Autopilot may have dropped the cut-off server from the raft peers:
	// the next fault needs all three voting again.
	b.WaitFor("three healthy Consul servers again", 2*time.Minute, func(ctx context.Context) error {
		h, err := b.Consul(next).Operator().AutopilotServerHealth((&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		if !h.Healthy || h.FailureTolerance < 1 {
			return fmt.Errorf("servers healthy %v, failure tolerance %d", h.Healthy, h.FailureTolerance)
		}
		return nil
	})

	oldW := dockerWrites(b.Proc(old).Logs())
	newW := dockerWrites(b.Proc(next).Logs())
	i := slices.IndexFunc(newW, func(w dockerWrite) bool { return w.Sent.After(at) })
	if i < 0 {
		t.Fatalf("the new leader %s logged no Docker write after the fault", next.Name)
	}
	newFirst := newW[i]
	var after int
	last := time.Time{}
	for _, w := range oldW {
		if w.Sent.After(at) {
			after++
		}
		if w.Done.After(last) {
			last = w.Done
		}
		if !w.Done.Before(newFirst.Sent) {
			t.Errorf("old leader %s's write %s %s (sent %s, returned %s) overlaps or follows the new leader's first write %s %s sent %s",
				old.Name, w.Verb, w.Object, w.Sent.Format(time.StampMicro), w.Done.Format(time.StampMicro),
				newFirst.Verb, newFirst.Object, newFirst.Sent.Format(time.StampMicro))
		}
	}
	refused := 0
	for _, l := range strings.Split(b.Proc(old).Logs(), "\n") {
		if lt, ok := bed.LogTime(l); ok && lt.After(at) && strings.Contains(l, "not the leader") {
			refused++
		}
	}
	t.Logf("old leader %s: %d Docker writes in all, %d sent after the fault, last returned %s; %d log lines of refused leader writes after it; new leader %s's first write %s %s sent %s",
		old.Name, len(oldW), after, last.Format(time.StampMicro), refused, next.Name, newFirst.Verb, newFirst.Object, newFirst.Sent.Format(time.StampMicro))
	bed.Figure(t, "leader "+how+", the old leader's last Docker write returned to the new leader's first sent", newFirst.Sent.Sub(last))

	checkOnce(t, b, names, append(oldW, newW...), first)
}

// makeConsulLeader moves the Consul cluster's raft leadership to h's
// server, unless it is there already.
func makeConsulLeader(t *testing.T, b *bed.Bed, h *lab.Host) {
	op := b.Consul(h).Operator()
	b.WaitFor("the Consul leadership on "+h.Name, time.Minute, func(ctx context.Context) error {
		cfg, err := op.RaftGetConfiguration((&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		for _, s := range cfg.Servers {
			if s.Node != h.Name {
				continue
			}
			if s.Leader {
				return nil
			}
			if _, err := op.RaftLeaderTransfer(s.ID, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
				return fmt.Errorf("transfer to %s: %w", s.ID, err)
			}
			return errors.New("transferred; not yet seen leading")
		}
		return fmt.Errorf("no raft server of node %s", h.Name)
	})
}

// probeSlowOnce stops the leading reconciler for 1.3 s, so that one probe
// of its leader check (every second, 500 ms timeout) times out, until the
// agent's log shows exactly that: one failure below the threshold. The
// leader's session must be unchanged, and it must not have stepped down.
func probeSlowOnce(t *testing.T, b *bed.Bed) {
	lead := leaderNow(t, b)
	other := otherManager(b, lead)
	_, sess, err := leaderKey(b, other)
	if err != nil {
		t.Fatal(err)
	}
	agentLog := filepath.Join(lead.Dir, "consul", "consul.log")
	// The leader's agent holds one leader check: its reconciler's.
	checkPrefix := "swarmvlan-leader:"
	p := b.Proc(lead)
	pid := p.Pid()
	t.Cleanup(func() {
		if p.Running() {
			syscall.Kill(-pid, syscall.SIGCONT)
		}
	})
	var failed []string
	tries := 0
	for tries < 6 && len(failed) == 0 {
		tries++
		from := fileSize(t, agentLog)
		if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1300 * time.Millisecond)
		if err := syscall.Kill(-pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// The next probe, a second later, passes and resets the count.
		time.Sleep(2 * time.Second)
		for _, l := range linesFrom(t, agentLog, from) {
			if !strings.Contains(l, checkPrefix) {
				continue
			}
			if strings.Contains(l, "Check is now critical") {
				t.Fatalf("the leader check turned critical: %s", l)
			}
			if strings.Contains(l, "has not reached warning/failure threshold") {
				failed = append(failed, l)
			}
		}
	}
	if len(failed) == 0 {
		t.Fatalf("no probe of %s's leader check failed in %d stops of 1.3 s", lead.Name, tries)
	}
	t.Logf("%d stop(s) of 1.3 s; the agent logged: %s", tries, strings.Join(failed, "\n"))
	b.Holds("the leader keeps its session after one failed probe", 3*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
		_, now, err := leaderKey(b, other)
		if err != nil {
			return err
		}
		if now != sess {
			return fmt.Errorf("leader session %s, was %s", now, sess)
		}
		if got, err := b.Leader(ctx); err != nil || got != lead {
			return fmt.Errorf("leader %v (%v), want %s", got, err, lead.Name)
		}
		return nil
	})
}

// otherManager is a manager other than h.
func otherManager(b *bed.Bed, h *lab.Host) *lab.Host {
	for _, m := range b.Cluster.Managers() {
		if m != h {
			return m
		}
	}
	panic("one manager only")
}

// leaderKey reads the leader key through h's agent.
func leaderKey(b *bed.Bed, h *lab.Host) (holder, session string, err error) {
	p, _, err := b.Consul(h).KV().Get(bed.KVPrefix+"leader", nil)
	if err != nil || p == nil {
		return "", "", err
	}
	return string(p.Value), p.Session, nil
}

// consulPorts are the ports of Consul's cluster traffic (server RPC, serf
// LAN and WAN), which cutConsul drops on a host's management interface.
// Swarm's (2377, 7946, 4789) and the agent's HTTP API stay open, so the
// host's Engine stays in the swarm and the test still reads its agent.
var consulPorts = strconv.Itoa(lab.DefaultConsulPorts.Server) + ":" + strconv.Itoa(lab.DefaultConsulPorts.SerfWAN)

// cutRules are the iptables rules cutConsul inserts in a host's namespace.
func cutRules() [][]string {
	var rules [][]string
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		dir := "-i"
		if chain == "OUTPUT" {
			dir = "-o"
		}
		for _, proto := range []string{"tcp", "udp"} {
			rules = append(rules, []string{chain, dir, lab.ManagementInterface, "-p", proto, "-m", "multiport", "--ports", consulPorts, "-j", "DROP"})
		}
	}
	return rules
}

// cutConsul cuts h off the Consul cluster: its agent loses the other
// servers and they lose it, while its Engine keeps its swarm. The rules
// are removed when the test ends, if healConsul did not.
func cutConsul(t *testing.T, h *lab.Host) {
	t.Cleanup(func() { deleteRules(h) })
	for _, r := range cutRules() {
		if out, err := iptables(h, append([]string{"-I"}, r...)...); err != nil {
			t.Fatalf("%s: iptables -I %v: %v: %s", h.Name, r, err, out)
		}
	}
}

// healConsul removes cutConsul's rules.
func healConsul(t *testing.T, h *lab.Host) {
	if err := deleteRules(h); err != nil {
		t.Fatal(err)
	}
}

func deleteRules(h *lab.Host) error {
	var errs []error
	for _, r := range cutRules() {
		// -C: delete only what is there, so a second call is quiet.
		if _, err := iptables(h, append([]string{"-C"}, r...)...); err != nil {
			continue
		}
		if out, err := iptables(h, append([]string{"-D"}, r...)...); err != nil {
			errs = append(errs, fmt.Errorf("%s: iptables -D %v: %v: %s", h.Name, r, err, out))
		}
	}
	return errors.Join(errs...)
}

func iptables(h *lab.Host, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.Netns, "--", "iptables", "-w"}, args...)...).CombinedOutput()
}

// dockerWrite is one Docker write a reconciler logged.
type dockerWrite struct {
	Verb, Object, Err string
	// Sent is when it was sent, Done when it returned.
	Sent, Done time.Time
}

var logField = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// dockerWrites parses the "docker write" lines of a reconciler's log.
func dockerWrites(log string) []dockerWrite {
	var out []dockerWrite
	for _, l := range bed.LogLines(log, "docker write") {
		f := map[string]string{}
		for _, m := range logField.FindAllStringSubmatch(l, -1) {
			v := m[2]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			f[m[1]] = v
		}
		w := dockerWrite{Verb: f["verb"], Object: f["object"], Err: f["err"]}
		sent, err1 := time.Parse(time.RFC3339Nano, f["sent"])
		took, err2 := time.ParseDuration(f["took"])
		if err1 != nil || err2 != nil {
			continue
		}
		w.Sent, w.Done = sent, sent.Add(took)
		out = append(out, w)
	}
	return out
}

func fileSize(t *testing.T, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// linesFrom returns the lines of path from byte offset from on.
func linesFrom(t *testing.T, path string, from int64) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
