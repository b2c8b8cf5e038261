package state

import (
	"context"
	"encoding/json"
	"maps"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestRegisterNode(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s := storeFor(t, a.Addr)
	key := s.NodeKey("node1")

	r, err := s.RegisterNode(ctx, "node1", []byte(`{"host":"h1"}`), 0)
	if err != nil {
		t.Fatalf("RegisterNode: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			r.Close()
		}
	})
	pair, _, err := c.KV().Get(key, nil)
	if err != nil || pair == nil || pair.Session != r.Session() || string(pair.Value) != `{"host":"h1"}` {
		t.Fatalf("node key = %+v, %v; want held by %s with the value", pair, err, r.Session())
	}
	nodes, err := s.LiveNodes(ctx)
	if err != nil || string(nodes["node1"]) != `{"host":"h1"}` {
		t.Fatalf("LiveNodes = %v, %v", nodes, err)
	}

	t.Run("update", func(t *testing.T) {
		if err := r.Update(ctx, []byte(`{"host":"h1","ready":true}`)); err != nil {
			t.Fatal(err)
		}
		pair, _, _ := c.KV().Get(key, nil)
		if pair == nil || string(pair.Value) != `{"host":"h1","ready":true}` {
			t.Fatalf("after Update: %+v", pair)
		}
	})

	t.Run("an older value put back under its session is written again", func(t *testing.T) {
		// What a snapshot restore from before the update does to the key
		// while the session lives on.
		if ok, _, err := c.KV().Acquire(&api.KVPair{Key: key, Value: []byte(`{"host":"h1"}`), Session: r.Session()}, nil); err != nil || !ok {
			t.Fatalf("put the old value back: %v %v", ok, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			pair, _, _ := c.KV().Get(key, nil)
			if pair != nil && string(pair.Value) == `{"host":"h1","ready":true}` && pair.Session == r.Session() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node key still %+v 5 s after an older value was put back", pair)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("a second registration of the same node waits", func(t *testing.T) {
		other := storeFor(t, a.Addr)
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if r2, err := other.RegisterNode(short, "node1", []byte("impostor"), 0); err == nil {
			r2.Close()
			t.Fatal("a second process registered a node key held by a live session")
		}
		pair, _, _ := c.KV().Get(key, nil)
		if pair == nil || pair.Session != r.Session() {
			t.Fatalf("node key taken over: %+v", pair)
		}
	})

	t.Run("the session destroyed server-side: the key vanishes and a live process registers again", func(t *testing.T) {
		old := r.Session()
		// Watch the key so its disappearance is seen even if the
		// re-registration follows quickly.
		ch := runWatch(t, s, key, WatchOptions{})
		next(t, ch, 5*time.Second, "the key held", func(d delivery) bool { return len(d.pairs) == 1 })
		if _, err := c.Session().Destroy(old, nil); err != nil {
			t.Fatal(err)
		}
		next(t, ch, 5*time.Second, "the key gone", func(d delivery) bool { return len(d.pairs) == 0 })
		d := next(t, ch, 10*time.Second, "the key held again", func(d delivery) bool {
			return len(d.pairs) == 1 && d.pairs[0].Session != "" && d.pairs[0].Session != old
		})
		if got := string(d.pairs[0].Value); got != `{"host":"h1","ready":true}` {
			t.Errorf("re-registered value %q, want the last update", got)
		}
		eventually(t, 5*time.Second, "Session() to report the new session", func() bool {
			return r.Session() == d.pairs[0].Session
		})
	})

	t.Run("the key deleted by hand is put back", func(t *testing.T) {
		if _, err := c.KV().Delete(key, nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the key back", func() bool {
			p, _, err := c.KV().Get(key, nil)
			return err == nil && p != nil && p.Session == r.Session()
		})
	})

	t.Run("close removes the key and destroys the session", func(t *testing.T) {
		id := r.Session()
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		closed = true
		if p, _, _ := c.KV().Get(key, nil); p != nil {
			t.Fatalf("key still there after Close: %+v", p)
		}
		if info, _, err := c.Session().Info(id, nil); err != nil || info != nil {
			t.Fatalf("session after Close = %+v, %v; want gone", info, err)
		}
		nodes, err := s.LiveNodes(ctx)
		if err != nil || len(nodes) != 0 {
			t.Fatalf("LiveNodes after Close = %v, %v", nodes, err)
		}
	})
}

func TestLeaderAndNodeShareOneSession(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s := storeFor(t, a.Addr)
	l, err := s.Campaign(ctx, LeaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.RegisterNode(ctx, "node1", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if l.Session() != r.Session() {
		t.Fatalf("leader session %s, node session %s: want one shared session", l.Session(), r.Session())
	}
	sessions, _, err := c.Session().List(nil)
	if err != nil || len(sessions) != 1 {
		t.Fatalf("sessions in Consul = %d (%v), want 1", len(sessions), err)
	}

	// Losing the shared session costs both holders; both come back on a new
	// one, and the leader campaigns again.
	old := l.Session()
	if _, err := c.Session().Destroy(old, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the leader to see the loss", func() bool { return l.Context().Err() != nil })
	eventually(t, 10*time.Second, "the node to register again", func() bool {
		id := r.Session()
		return id != "" && id != old
	})
	l2, err := s.Campaign(ctx, LeaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l2.Session() != r.Session() {
		t.Fatalf("new leader session %s, node session %s: want one shared session", l2.Session(), r.Session())
	}

	// The session lives while one holder does, and goes with the last.
	l2.Resign()
	if info, _, _ := c.Session().Info(r.Session(), nil); info == nil {
		t.Fatal("session destroyed while the node registration still uses it")
	}
	id := r.Session()
	r.Close()
	if info, _, _ := c.Session().Info(id, nil); info != nil {
		t.Fatal("session left behind after its last holder")
	}
}

func TestNodeReports(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s := storeFor(t, a.Addr)
	// The host role's value as it is stored today (reconcile.HostReport).
	stored := `{"hostname":"worker1","vlans":{"v40":{"ready":true,"chunk":"10.40.1.0/24"},"v41":{"ready":false,"reason":"waiting for a chunk"}},"updated":"2025-05-01T10:00:00Z"}`
	for node, value := range map[string]string{"n1": stored, "n2": "not json"} {
		r, err := s.RegisterNode(ctx, node, []byte(value), 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
	}
	// Not live (no session), and not a node's key.
	put(t, c, s.NodeKey("n3"), stored)
	put(t, c, s.NodeKey("n1")+"/x", stored)

	pairs, _, err := c.KV().List(s.NodePrefix(), nil)
	if err != nil {
		t.Fatal(err)
	}
	reports, bad := s.NodeReports(pairs)
	want := NodeReport{
		Hostname: "worker1",
		VLANs: map[string]NodeVLANReport{
			"v40": {Ready: true, Chunk: "10.40.1.0/24"},
			"v41": {Reason: "waiting for a chunk"},
		},
		Updated: time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC),
	}
	got, ok := reports["n1"]
	if len(reports) != 1 || !ok || got.Hostname != want.Hostname || !maps.Equal(got.VLANs, want.VLANs) || !got.Updated.Equal(want.Updated) {
		t.Fatalf("NodeReports = %+v; want only n1: %+v", reports, want)
	}
	if len(bad) != 1 || bad["n2"] == nil {
		t.Fatalf("bad = %v; want n2's decode error", bad)
	}
	// Encoding gives the stored wire format back.
	b, err := json.Marshal(got)
	if err != nil || string(b) != stored {
		t.Fatalf("re-encoded = %s, %v; want %s", b, err, stored)
	}
}
