package state

import (
	"context"
	"errors"
	"testing"
	"time"

	"swarmvlan/lab"
)

// TestFenceProvesTheLockOnlyWhenWriting: an idle leader makes no proof
// reads; a fenced write makes one, a second within ProofMaxAge none, and
// each write starts with more than WriteDeadline and at most
// ProofMaxAge+WriteDeadline left.
func TestFenceProvesTheLockOnlyWhenWriting(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	p := newProbeServer(t)
	s := storeFor(t, a.Addr)
	l := mustLead(t, campaignAsync(ctx, s, LeaderOptions{Value: []byte("a"), Check: p.check("a")}), 10*time.Second, "a")
	if d := l.WriteDeadline(); d != DefaultLeaderLockDelay-ProofMaxAge-fenceMargin || d <= 0 {
		t.Fatalf("WriteDeadline %v with lock delay %v", d, DefaultLeaderLockDelay)
	}
	// Settled: the leader's watches are blocked.
	eventually(t, 5*time.Second, "the leader's queries to block", func() bool {
		n := s.Requests()
		time.Sleep(300 * time.Millisecond)
		return s.Requests() == n
	})
	idle := s.Requests()
	time.Sleep(time.Second)
	if n := s.Requests() - idle; n != 0 {
		t.Fatalf("an idle leader made %d requests", n)
	}

	write := func() (left time.Duration, reqs uint64) {
		t.Helper()
		before := s.Requests()
		err := l.Fence(ctx, func(wctx context.Context) error {
			dl, ok := wctx.Deadline()
			if !ok {
				t.Fatal("fenced write without a deadline")
			}
			left = time.Until(dl)
			return nil
		})
		if err != nil {
			t.Fatalf("Fence: %v", err)
		}
		return left, s.Requests() - before
	}
	for i, want := range []uint64{1, 0} {
		left, reqs := write()
		if reqs != want {
			t.Errorf("write %d: %d proof requests, want %d", i, reqs, want)
		}
		if left <= l.WriteDeadline() || left > ProofMaxAge+l.WriteDeadline() {
			t.Errorf("write %d: started with %v left, want more than %v and at most %v", i, left, l.WriteDeadline(), ProofMaxAge+l.WriteDeadline())
		}
	}
	time.Sleep(ProofMaxAge)
	if _, reqs := write(); reqs != 1 {
		t.Errorf("write after ProofMaxAge: %d proof requests, want 1", reqs)
	}

	// Prefetch reads the proof ahead (one request, even when asked twice
	// at once); the write that follows within ProofMaxAge makes none.
	time.Sleep(ProofMaxAge)
	before := s.Requests()
	l.Prefetch()
	l.Prefetch()
	eventually(t, 5*time.Second, "the prefetched proof", func() bool { return s.Requests() > before })
	if left, reqs := write(); reqs != 0 || left <= l.WriteDeadline() {
		t.Errorf("write after Prefetch: %d proof requests, %v left", reqs, left)
	}
	if n := s.Requests() - before; n != 1 {
		t.Errorf("Prefetch twice and a write: %d requests, want 1", n)
	}
}

// TestFencedWriteEndsBeforeASuccessorLeads: the leader's session is
// invalidated in the middle of a fenced write that never returns by
// itself (a hung Docker call). The write is cut off before the successor
// takes the lock, and the next fenced write is refused.
func TestFencedWriteEndsBeforeASuccessorLeads(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	admin := a.Client(t)
	pa, pb := newProbeServer(t), newProbeServer(t)
	s1, s2 := storeFor(t, a.Addr), storeFor(t, a.Addr)
	l1 := mustLead(t, campaignAsync(ctx, s1, LeaderOptions{Value: []byte("a"), Check: pa.check("a")}), 10*time.Second, "a")
	ch := campaignAsync(ctx, s2, LeaderOptions{Value: []byte("b"), Check: pb.check("b")})
	time.Sleep(500 * time.Millisecond)

	var invalidated, ended time.Time
	err := l1.Fence(ctx, func(wctx context.Context) error {
		if _, err := admin.Session().Destroy(l1.Session(), nil); err != nil {
			t.Errorf("destroy the leader's session: %v", err)
		}
		invalidated = time.Now()
		<-wctx.Done()
		ended = time.Now()
		return wctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung fenced write: %v, want its deadline", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(r.l.Resign)
	t.Logf("session invalidated during the write: write cut off %v later, successor led %v later (lock delay %v): %v apart",
		ended.Sub(invalidated).Round(time.Millisecond), r.at.Sub(invalidated).Round(time.Millisecond),
		DefaultLeaderLockDelay, r.at.Sub(ended).Round(time.Millisecond))
	if !ended.Before(r.at) {
		t.Fatalf("the old leader's write ended %v after the successor took the lock", ended.Sub(r.at))
	}

	called := false
	err = l1.Fence(ctx, func(context.Context) error { called = true; return nil })
	if !errors.Is(err, ErrNotLeader) || called {
		t.Fatalf("fenced write after the lock was lost: err %v, called %v; want ErrNotLeader, not called", err, called)
	}
}

// TestFenceRefusesWithoutProof: a leader cut off from Consul cannot prove
// it holds the lock, so once its last proof is older than ProofMaxAge it
// writes nothing.
func TestFenceRefusesWithoutProof(t *testing.T) {
	a := newAgent(t)
	proxy := lab.NewFlakyProxy(t, a.Addr)
	ctx := testCtx(t)
	p := newProbeServer(t)
	s := storeFor(t, proxy.Addr)
	l := mustLead(t, campaignAsync(ctx, s, LeaderOptions{Value: []byte("a"), Check: p.check("a")}), 10*time.Second, "a")
	if err := l.Fence(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("Fence while connected: %v", err)
	}
	proxy.SetDown(true)
	time.Sleep(ProofMaxAge)
	called := false
	err := l.Fence(ctx, func(context.Context) error { called = true; return nil })
	if !errors.Is(err, ErrNotLeader) || called {
		t.Fatalf("Fence while cut off: err %v, called %v; want ErrNotLeader, not called", err, called)
	}
	proxy.SetDown(false)
}
