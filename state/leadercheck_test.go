package state

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// probeServer is the /healthz a leader check probes, with answers the test
// controls: the next failNext probes fail (503, or answered after the
// check's timeout when slow is set).
type probeServer struct {
	srv      *httptest.Server
	probes   atomic.Int64
	failed   atomic.Int64
	failNext atomic.Int64
	slow     atomic.Bool
}

func newProbeServer(t *testing.T) *probeServer {
	t.Helper()
	p := &probeServer{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.probes.Add(1)
		if p.failNext.Load() > 0 && p.failNext.Add(-1) >= 0 {
			p.failed.Add(1)
			if p.slow.Load() {
				time.Sleep(LeaderCheckTimeout + 300*time.Millisecond)
			} else {
				http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ok\n"))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *probeServer) check(owner string) *LeaderCheck {
	return &LeaderCheck{URL: p.srv.URL + "/healthz", Owner: owner}
}

// leaderCheckIDs lists the leader checks registered on the agent.
func leaderCheckIDs(t *testing.T, c *api.Client) []string {
	t.Helper()
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for id := range checks {
		if strings.HasPrefix(id, leaderCheckPrefix) {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestCheckBoundLeaderIsReplacedWhenItStopsAnswering: a leader whose
// /healthz stops answering (its process died: connection refused) loses
// the lock once its check turns critical, and the standby takes it after
// the lock delay, not after a TTL.
func TestCheckBoundLeaderIsReplacedWhenItStopsAnswering(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	pa, pb := newProbeServer(t), newProbeServer(t)
	s1, s2 := storeFor(t, a.Addr), storeFor(t, a.Addr)
	l1 := mustLead(t, campaignAsync(ctx, s1, LeaderOptions{Value: []byte("a"), Check: pa.check("a")}), 10*time.Second, "a")
	ch := campaignAsync(ctx, s2, LeaderOptions{Value: []byte("b"), Check: pb.check("b")})
	select {
	case r := <-ch:
		t.Fatalf("b leads (err %v) while a's check passes", r.err)
	case <-time.After(2 * time.Second):
	}
	if pa.probes.Load() == 0 {
		t.Fatal("a's check was never probed")
	}

	pa.srv.Close()
	stopped := time.Now()
	l2 := mustLead(t, ch, 10*time.Second, "b")
	took := time.Since(stopped)
	select {
	case <-l1.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a still thinks it leads after b took over")
	}
	holder, session, err := s2.Leader(ctx)
	if err != nil || holder != "b" || session != l2.Session() {
		t.Fatalf("Leader() = %q, %q, %v; want b", holder, session, err)
	}
	t.Logf("takeover after the leader's /healthz stopped: %v (check every %v, critical after %d failures, lock delay %v)",
		took.Round(time.Millisecond), LeaderCheckInterval, LeaderCheckFailures, DefaultLeaderLockDelay)
}

// TestOneFailedProbeKeepsTheLeadership: one probe that fails or outlasts
// the check's timeout does not cost the leadership; two in a row do.
func TestOneFailedProbeKeepsTheLeadership(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slow  bool
		fails int64
		keeps bool
	}{
		{"one probe slower than the timeout", true, 1, true},
		{"one probe answered 503", false, 1, true},
		{"two probes answered 503", false, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgent(t)
			ctx := testCtx(t)
			p := newProbeServer(t)
			s := storeFor(t, a.Addr)
			l := mustLead(t, campaignAsync(ctx, s, LeaderOptions{Value: []byte("a"), Check: p.check("a")}), 10*time.Second, "a")
			eventually(t, 5*time.Second, "two passing probes", func() bool { return p.probes.Load() >= 2 })
			p.slow.Store(tc.slow)
			p.failNext.Store(tc.fails)
			eventually(t, 10*time.Second, "the failing probes", func() bool { return p.failed.Load() == tc.fails })
			after := p.probes.Load()
			if !tc.keeps {
				select {
				case <-l.Context().Done():
					t.Logf("leadership lost after %d failed probes, as it must", tc.fails)
				case <-time.After(5 * time.Second):
					t.Fatalf("still leading after %d failed probes in a row", tc.fails)
				}
				return
			}
			// Three more probes, all passing: the check never turned
			// critical, the session and the lock are intact.
			eventually(t, 10*time.Second, "three probes after the failure", func() bool { return p.probes.Load() >= after+3 })
			if err := l.Context().Err(); err != nil {
				t.Fatalf("leadership lost after %d failed probe: %v", tc.fails, err)
			}
			if _, session, err := s.Leader(ctx); err != nil || session != l.Session() {
				t.Fatalf("lock held by %q (%v), want the leader's session %q", session, err, l.Session())
			}
		})
	}
}

// TestPredecessorCheckIsDeregistered: a dead predecessor (same owner, same
// agent) left its leader check behind, still passing (it probes a port
// that answers), with its session holding the lock. The new process
// deregisters it, which frees the lock, and leads; another owner's check is
// left alone. Resign then hands over at once and removes the check.
func TestPredecessorCheckIsDeregistered(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	p, other := newProbeServer(t), newProbeServer(t)
	s := storeFor(t, a.Addr)

	stale := leaderCheckOwnerPrefix("a") + "0123456789abcdef"
	foreign := leaderCheckOwnerPrefix("a-b") + "0123456789abcdef"
	for _, id := range []string{stale, foreign} {
		reg := &api.AgentCheckRegistration{ID: id, Name: id, AgentServiceCheck: api.AgentServiceCheck{
			HTTP: other.srv.URL, Interval: "1s", Timeout: "500ms", Status: api.HealthPassing}}
		if err := c.Agent().CheckRegister(reg); err != nil {
			t.Fatal(err)
		}
	}
	old, _, err := c.Session().Create(&api.SessionEntry{NodeChecks: []string{serfHealth, stale}, LockDelay: DefaultLeaderLockDelay, Behavior: api.SessionBehaviorDelete}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := c.KV().Acquire(&api.KVPair{Key: s.LeaderKey(), Value: []byte("predecessor"), Session: old}, nil); err != nil || !ok {
		t.Fatalf("predecessor's acquire: %v, %v", ok, err)
	}

	l := mustLead(t, campaignAsync(ctx, s, LeaderOptions{Value: []byte("a"), Check: p.check("a")}), 10*time.Second, "a")
	ids := leaderCheckIDs(t, c)
	var mine string
	for _, id := range ids {
		switch {
		case id == stale:
			t.Errorf("the predecessor's check %s is still registered", id)
		case id != foreign:
			mine = id
		}
	}
	if len(ids) != 2 || mine == "" {
		t.Fatalf("leader checks %v: want the foreign one and this process's", ids)
	}
	if e, _, err := c.Session().Info(l.Session(), nil); err != nil || e == nil || e.TTL != "" || !strings.Contains(strings.Join(e.NodeChecks, ","), mine) {
		t.Fatalf("leader session %+v (%v): want no TTL, bound to %s", e, err, mine)
	}

	s2 := storeFor(t, a.Addr)
	ch := campaignAsync(ctx, s2, LeaderOptions{Value: []byte("b"), Check: other.check("b")})
	resigned := time.Now()
	l.Resign()
	mustLead(t, ch, 5*time.Second, "b")
	t.Logf("hand-over after Resign: %v", time.Since(resigned).Round(time.Millisecond))
	if e, _, err := c.Session().Info(l.Session(), nil); err != nil || e != nil {
		t.Errorf("resigned leader's session: %+v, %v; want destroyed", e, err)
	}
	eventually(t, 5*time.Second, "the resigned leader's check to go", func() bool {
		for _, id := range leaderCheckIDs(t, c) {
			if id == mine {
				return false
			}
		}
		return true
	})
}

func TestLeaderCheckIDs(t *testing.T) {
	id := newLeaderCheckID("node one/x")
	if !strings.HasPrefix(id, "swarmvlan-leader:node_one_x:") || len(id) != len("swarmvlan-leader:node_one_x:")+16 {
		t.Fatalf("check ID %q", id)
	}
	for _, tc := range []struct {
		id, owner string
		want      bool
	}{
		{leaderCheckOwnerPrefix("a") + "00", "a", true},
		{id, "node one/x", false}, // mine
		{leaderCheckOwnerPrefix("a-b") + "00", "a", false},
		{leaderCheckOwnerPrefix("a") + "b:00", "a", false},
		{"serfHealth", "a", false},
	} {
		if got := isPredecessorCheck(tc.id, tc.owner, id); got != tc.want {
			t.Errorf("isPredecessorCheck(%q, %q) = %v, want %v", tc.id, tc.owner, got, tc.want)
		}
	}
}
