package reconcile

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/state"
)

// TestSyncHoldIsBounded: listings seen while a sync is marked in flight are
// held back, the newest is applied when the bound passes (a dead syncer
// cannot freeze the view), and the marker's removal applies at once.
func TestSyncHoldIsBounded(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var mu sync.Mutex
	var applied []string
	apply := func(p api.KVPairs) {
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, string(p[0].Value))
	}
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), applied...)
	}
	listing := func(v string) api.KVPairs { return api.KVPairs{{Key: "k", Value: []byte(v)}} }
	marker := &state.SyncMarker{Commit: "c"}

	h := &syncHold{max: 200 * time.Millisecond}
	defer h.stop()
	h.deliver(listing("a"), nil, apply, log)
	h.deliver(listing("b"), marker, apply, log)
	h.deliver(listing("c"), marker, apply, log)
	if g := got(); len(g) != 1 || g[0] != "a" {
		t.Fatalf("during the hold: %v", g)
	}
	h.deliver(listing("d"), nil, apply, log) // the sync finished
	if g := got(); len(g) != 2 || g[1] != "d" {
		t.Fatalf("after the marker went: %v", g)
	}
	time.Sleep(300 * time.Millisecond)
	if g := got(); len(g) != 2 {
		t.Fatalf("a held listing applied after the hold ended: %v", g)
	}

	// A marker that stays: the newest listing goes in after the bound, and
	// later ones at once.
	h.deliver(listing("e"), marker, apply, log)
	h.deliver(listing("f"), marker, apply, log)
	deadline := time.Now().Add(5 * time.Second)
	for len(got()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := got(); len(g) != 3 || g[2] != "f" {
		t.Fatalf("after the bound: %v", g)
	}
	h.deliver(listing("g"), marker, apply, log)
	if g := got(); len(g) != 4 || g[3] != "g" {
		t.Fatalf("past the bound: %v", g)
	}
}
