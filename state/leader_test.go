package state

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
)

type campaignResult struct {
	l   *Leadership
	err error
	at  time.Time
}

func campaignAsync(ctx context.Context, s *Store, opts LeaderOptions) <-chan campaignResult {
	ch := make(chan campaignResult, 1)
	go func() {
		l, err := s.Campaign(ctx, opts)
		ch <- campaignResult{l, err, time.Now()}
	}()
	return ch
}

func mustLead(t *testing.T, ch <-chan campaignResult, d time.Duration, who string) *Leadership {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: Campaign: %v", who, r.err)
		}
		t.Cleanup(r.l.Resign)
		return r.l
	case <-time.After(d):
		t.Fatalf("%s did not become leader within %v", who, d)
	}
	return nil
}

func TestCampaignElectsOneAndResignHandsOver(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	s1, s2 := storeFor(t, a.Addr), storeFor(t, a.Addr)
	ch1 := campaignAsync(ctx, s1, LeaderOptions{Value: []byte("m1")})
	ch2 := campaignAsync(ctx, s2, LeaderOptions{Value: []byte("m2")})

	var loser <-chan campaignResult
	var winnerName, loserName string
	var first *Leadership
	select {
	case r := <-ch1:
		first, loser, winnerName, loserName = r.l, ch2, "m1", "m2"
		if r.err != nil {
			t.Fatal(r.err)
		}
	case r := <-ch2:
		first, loser, winnerName, loserName = r.l, ch1, "m2", "m1"
		if r.err != nil {
			t.Fatal(r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nobody became leader")
	}
	t.Cleanup(first.Resign)

	// The other keeps waiting: exactly one leads.
	select {
	case r := <-loser:
		t.Fatalf("%s also became leader (err %v)", loserName, r.err)
	case <-time.After(time.Second):
	}
	holder, session, err := s1.Leader(ctx)
	if err != nil || holder != winnerName || session != first.Session() {
		t.Fatalf("Leader() = %q, %q, %v; want %q, %q", holder, session, err, winnerName, first.Session())
	}

	resigned := time.Now()
	first.Resign()
	if first.Context().Err() == nil {
		t.Error("resigned leader's context is not cancelled")
	}
	second := mustLead(t, loser, 5*time.Second, loserName)
	t.Logf("hand-over after Resign: %v", time.Since(resigned))
	holder, session, err = s1.Leader(ctx)
	if err != nil || holder != loserName || session != second.Session() {
		t.Fatalf("after resign Leader() = %q, %q, %v; want %q, %q", holder, session, err, loserName, second.Session())
	}
}

func TestDeposedLeaderIsFenced(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s1, s2 := storeFor(t, a.Addr), storeFor(t, a.Addr)
	l1 := mustLead(t, campaignAsync(ctx, s1, LeaderOptions{Value: []byte("m1")}), 10*time.Second, "m1")
	key := s1.AllocationKey("vlan40", "node1")
	if ok, err := l1.CAS(ctx, key, []byte("from m1"), 0); !ok || err != nil {
		t.Fatalf("leader CAS create = %v, %v", ok, err)
	}

	// Depose m1 behind its back, as a session expiry would.
	if _, err := c.Session().Destroy(l1.Session(), nil); err != nil {
		t.Fatalf("destroy session: %v", err)
	}
	eventually(t, 5*time.Second, "the deposed leader's context to be cancelled", func() bool { return l1.Context().Err() != nil })

	pair, _, err := c.KV().Get(key, nil)
	if err != nil || pair == nil {
		t.Fatalf("get %s: %v, %v", key, pair, err)
	}
	for _, l := range []struct {
		name string
		l    *Leadership
	}{
		{"deposed", l1},
		// Consul's fence, not the local check of the context, rejects it.
		{"deposed and not yet aware", lossNotYetSeen(l1)},
	} {
		for _, tc := range []struct {
			name  string
			write func() error
		}{
			{"Txn", func() error {
				return l.l.Txn(ctx, api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: []byte("late")}}})
			}},
			{"CAS", func() error { _, err := l.l.CAS(ctx, key, []byte("late"), pair.ModifyIndex); return err }},
			{"Delete", func() error { _, err := l.l.Delete(ctx, key, pair.ModifyIndex); return err }},
		} {
			t.Run(l.name+" "+tc.name+" is rejected", func(t *testing.T) {
				if err := tc.write(); !errors.Is(err, ErrNotLeader) {
					t.Fatalf("err = %v, want ErrNotLeader", err)
				}
			})
		}
	}

	l2 := mustLead(t, campaignAsync(ctx, s2, LeaderOptions{Value: []byte("m2")}), 10*time.Second, "m2")
	if ok, err := l2.CAS(ctx, key, []byte("from m2"), pair.ModifyIndex); !ok || err != nil {
		t.Fatalf("new leader CAS = %v, %v", ok, err)
	}
	if _, err := l1.CAS(ctx, key, []byte("late"), 0); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("old leader write while m2 leads: err = %v, want ErrNotLeader", err)
	}
	got, _, err := c.KV().Get(key, nil)
	if err != nil || got == nil || string(got.Value) != "from m2" {
		t.Fatalf("%s = %v, %v; want the new leader's value", key, got, err)
	}
}

func TestLeaderFencedWrites(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	s := storeFor(t, a.Addr)
	c := a.Client(t)
	l := mustLead(t, campaignAsync(ctx, s, LeaderOptions{}), 10*time.Second, "leader")
	key := s.ScaleKey("web")

	if ok, err := l.CAS(ctx, key, []byte("1"), 0); !ok || err != nil {
		t.Fatalf("create = %v, %v", ok, err)
	}
	if ok, err := l.CAS(ctx, key, []byte("2"), 0); ok || err != nil {
		t.Fatalf("create over an existing key = %v, %v; want false, nil", ok, err)
	}
	pair, _, _ := c.KV().Get(key, nil)
	if ok, err := l.CAS(ctx, key, []byte("2"), pair.ModifyIndex+1000); ok || err != nil {
		t.Fatalf("CAS with a wrong index = %v, %v; want false, nil", ok, err)
	}
	if ok, err := l.CAS(ctx, key, []byte("2"), pair.ModifyIndex); !ok || err != nil {
		t.Fatalf("CAS with the right index = %v, %v", ok, err)
	}
	if ok, err := l.Delete(ctx, key, pair.ModifyIndex); ok || err != nil {
		t.Fatalf("Delete with a stale index = %v, %v; want false, nil", ok, err)
	}
	pair, _, _ = c.KV().Get(key, nil)
	if string(pair.Value) != "2" {
		t.Fatalf("value %q, want 2", pair.Value)
	}
	if ok, err := l.Delete(ctx, key, pair.ModifyIndex); !ok || err != nil {
		t.Fatalf("Delete with the right index = %v, %v", ok, err)
	}

	t.Run("a failing op is named", func(t *testing.T) {
		err := l.Txn(ctx, api.TxnOps{
			{KV: &api.KVTxnOp{Verb: api.KVSet, Key: s.ScaleKey("a"), Value: []byte("x")}},
			{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: s.ScaleKey("b"), Value: []byte("x"), Index: 999999}},
		})
		var terr *TxnError
		if !errors.As(err, &terr) || errors.Is(err, ErrNotLeader) {
			t.Fatalf("err = %v, want a *TxnError", err)
		}
		if len(terr.Ops) != 1 || terr.Ops[0].Index != 1 || terr.Ops[0].Key != s.ScaleKey("b") {
			t.Fatalf("failed ops %+v, want op 1 on %s", terr.Ops, s.ScaleKey("b"))
		}
		if p, _, _ := c.KV().Get(s.ScaleKey("a"), nil); p != nil {
			t.Fatal("op 0 was written although the transaction failed")
		}
	})
	t.Run("too many ops", func(t *testing.T) {
		ops := make(api.TxnOps, MaxTxnOps)
		for i := range ops {
			ops[i] = &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("%sk%d", s.Prefix(), i)}}
		}
		if err := l.Txn(ctx, ops); err == nil {
			t.Fatalf("Txn with %d ops plus the fence succeeded", len(ops))
		}
		if err := l.Txn(ctx, ops[:MaxTxnOps-1]); err != nil {
			t.Fatalf("Txn with %d ops: %v", MaxTxnOps-1, err)
		}
	})
}

func TestLeaderThroughConsulOutage(t *testing.T) {
	for _, tc := range []struct {
		name        string
		retries     int
		wantDeposed bool
	}{
		{"without a retry limit the lock survives a short outage", 0, false},
		{"with MonitorRetries the leader steps down", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgent(t)
			proxy := lab.NewFlakyProxy(t, a.Addr)
			ctx := testCtx(t)
			s := storeFor(t, proxy.Addr)
			l := mustLead(t, campaignAsync(ctx, s, LeaderOptions{MonitorRetries: tc.retries}), 10*time.Second, "leader")

			proxy.SetDown(true)
			if tc.wantDeposed {
				eventually(t, 10*time.Second, "the leader to step down", func() bool { return l.Context().Err() != nil })
				proxy.SetDown(false)
				return
			}
			none := time.After(3 * time.Second)
			for waiting := true; waiting; {
				select {
				case <-l.Context().Done():
					t.Fatal("leadership lost during a 3 s outage")
				case <-none:
					waiting = false
				}
			}
			proxy.SetDown(false)
			if ok, err := l.CAS(ctx, s.ScaleKey("after-outage"), []byte("1"), 0); !ok || err != nil {
				t.Fatalf("fenced write after the outage = %v, %v", ok, err)
			}
			if l.Context().Err() != nil {
				t.Fatal("leadership lost after the outage")
			}
		})
	}
}

func TestCampaignWaitsForConsul(t *testing.T) {
	a := newAgent(t)
	proxy := lab.NewFlakyProxy(t, a.Addr)
	proxy.SetDown(true)
	ctx := testCtx(t)
	s := storeFor(t, proxy.Addr)
	ch := campaignAsync(ctx, s, LeaderOptions{})
	eventually(t, 5*time.Second, "campaign attempts against the dead proxy", func() bool { return proxy.Failed() >= 3 })
	select {
	case r := <-ch:
		t.Fatalf("Campaign returned while Consul was away: %v", r.err)
	default:
	}
	proxy.SetDown(false)
	mustLead(t, ch, 15*time.Second, "leader")
}

func TestLeadershipEndsWithItsContext(t *testing.T) {
	a := newAgent(t)
	s := storeFor(t, a.Addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := s.Campaign(ctx, LeaderOptions{Value: []byte("m1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Campaign(ctx, LeaderOptions{}); err == nil {
		t.Fatal("a second campaign on the same store succeeded while it leads")
	}
	cancel()
	eventually(t, 5*time.Second, "the lock to be released", func() bool {
		holder, _, err := s.Leader(context.Background())
		return err == nil && holder == ""
	})
	if l.Context().Err() == nil {
		t.Fatal("leadership context still alive")
	}
	l.Resign() // a no-op after the end, and must not block
	l2, err := s.Campaign(testCtx(t), LeaderOptions{})
	if err != nil {
		t.Fatalf("campaign again after the leadership ended: %v", err)
	}
	l2.Resign()
}

// Helper process for TestTakeoverAfterLeaderIsKilled: it campaigns and
// registers a node through the Consul agent named in the environment, says
// so on stdout, and waits to be killed.
const helperEnv = "SWARMVLAN_STATE_HELPER_CONSUL"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		os.Exit(runHelper(addr))
	}
	os.Exit(m.Run())
}

func runHelper(addr string) int {
	s, err := New(Config{Address: addr})
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	ctx := context.Background()
	l, err := s.Campaign(ctx, LeaderOptions{Value: []byte("helper")})
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	r, err := s.RegisterNode(ctx, "helper-node", []byte("helper"), 0)
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	fmt.Println("LEADING", l.Session(), r.Session())
	select {}
}

func TestTakeoverAfterLeaderIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a killed leader's session to expire (up to 2×TTL)")
	}
	a := newAgent(t)
	ctx := testCtx(t)
	s := storeFor(t, a.Addr)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+a.Addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case line := <-lines:
		if !strings.HasPrefix(line, "LEADING ") {
			t.Fatalf("helper: %q", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("helper did not become leader")
	}
	if holder, _, err := s.Leader(ctx); err != nil || holder != "helper" {
		t.Fatalf("Leader() = %q, %v; want helper", holder, err)
	}

	ch := campaignAsync(ctx, s, LeaderOptions{Value: []byte("survivor")})
	killed := time.Now()
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var nodeGone atomic.Int64
	go func() {
		for ctx.Err() == nil && time.Since(killed) < time.Minute {
			nodes, err := s.LiveNodes(ctx)
			if _, alive := nodes["helper-node"]; err == nil && !alive {
				nodeGone.Store(int64(time.Since(killed)))
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	limit := 2*DefaultSessionTTL + DefaultLockDelay + 5*time.Second
	l := mustLead(t, ch, limit, "survivor")
	takeover := time.Since(killed)
	eventually(t, 5*time.Second, "the helper's node key to vanish", func() bool { return nodeGone.Load() > 0 })
	t.Logf("takeover after SIGKILL of the leader: %v (bound 2×TTL + lock delay = %v); node key gone after %v",
		takeover.Round(time.Millisecond), 2*DefaultSessionTTL+DefaultLockDelay, time.Duration(nodeGone.Load()).Round(time.Millisecond))
	if holder, session, err := s.Leader(ctx); err != nil || holder != "survivor" || session != l.Session() {
		t.Fatalf("Leader() = %q, %q, %v; want survivor", holder, session, err)
	}
}

func TestCutOffLeaderStepsDownBeforeAnotherCanLead(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a session to expire (up to 2×TTL)")
	}
	a := newAgent(t)
	proxy := lab.NewFlakyProxy(t, a.Addr)
	ctx := testCtx(t)
	cut := storeFor(t, proxy.Addr)
	l1 := mustLead(t, campaignAsync(ctx, cut, LeaderOptions{Value: []byte("cut off")}), 10*time.Second, "cut off")
	other := storeFor(t, a.Addr)
	ch := campaignAsync(ctx, other, LeaderOptions{Value: []byte("other")})

	// The leader loses Consul but not its process: its session expires in
	// Consul 2×TTL after its last renewal, and it must have stopped leading
	// by then.
	proxy.SetDown(true)
	down := time.Now()
	var stepped time.Time
	select {
	case <-l1.Context().Done():
		stepped = time.Now()
	case r := <-ch:
		t.Fatalf("another manager took over (err %v) while the cut-off leader still led", r.err)
	case <-time.After(3 * DefaultSessionTTL):
		t.Fatal("the cut-off leader never stepped down")
	}
	l2 := mustLead(t, ch, 3*DefaultSessionTTL, "other")
	t.Logf("cut-off leader stepped down after %v; the other took over after %v",
		stepped.Sub(down).Round(time.Millisecond), time.Since(down).Round(time.Millisecond))

	// Back on the network, the old leader's writes stay fenced out.
	proxy.SetDown(false)
	if _, err := l1.CAS(ctx, cut.ScaleKey("x"), []byte("late"), 0); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("old leader write after reconnecting: err = %v, want ErrNotLeader", err)
	}
	if holder, session, err := other.Leader(ctx); err != nil || holder != "other" || session != l2.Session() {
		t.Fatalf("Leader() = %q, %q, %v; want other", holder, session, err)
	}
}

// A store's holders share one session, so a store that leads again holds
// the lock under the session of its previous leadership; the old
// Leadership must still not write.
func TestEndedLeadershipIsFencedWhenTheStoreLeadsAgain(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	s := storeFor(t, a.Addr)
	// The node registration keeps the shared session alive across the
	// leaderships.
	r, err := s.RegisterNode(ctx, "node1", []byte("{}"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	l1 := mustLead(t, campaignAsync(ctx, s, LeaderOptions{Value: []byte("m1")}), 10*time.Second, "first leadership")
	l1.Resign()
	l2 := mustLead(t, campaignAsync(ctx, s, LeaderOptions{Value: []byte("m1")}), 10*time.Second, "second leadership")
	if l2.Session() != l1.Session() {
		t.Skipf("the leaderships used sessions %s and %s; the case needs one shared session", l1.Session(), l2.Session())
	}
	key := s.ScaleKey("web")
	if _, err := l1.CAS(ctx, key, []byte("old"), 0); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("ended leadership CAS: err = %v, want ErrNotLeader", err)
	}
	if err := l1.NewStatusWriter().Delete(ctx, "vlans", "vlan40"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("ended leadership status delete: err = %v, want ErrNotLeader", err)
	}
	if ok, err := l2.CAS(ctx, key, []byte("new"), 0); !ok || err != nil {
		t.Fatalf("current leadership CAS = %v, %v", ok, err)
	}
}
