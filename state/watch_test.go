package state

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
)

func TestWatchPrefixDeliversPutsAndDeletes(t *testing.T) {
	a := newAgent(t)
	s := storeFor(t, a.Addr)
	c := a.Client(t)
	prefix := s.SpecPrefix()

	put(t, c, prefix+"vlans/a", "1")
	var counters WatchCounters
	ch := runWatch(t, s, prefix, WatchOptions{Counters: &counters})

	first := next(t, ch, 5*time.Second, "the initial state", func(delivery) bool { return true })
	if got := first.values(); len(got) != 1 || got[prefix+"vlans/a"] != "1" {
		t.Fatalf("initial delivery %v, want only vlans/a=1", got)
	}

	t.Run("a put wakes the watch", func(t *testing.T) {
		// Put once the next blocking query is on its way, so the figure is
		// the wake-up, not the MinInterval floor.
		eventually(t, 5*time.Second, "the watch to block again", func() bool { return s.Requests() > first.requests })
		at := put(t, c, prefix+"vlans/b", "2")
		d := next(t, ch, 5*time.Second, "vlans/b", func(d delivery) bool { return d.values()[prefix+"vlans/b"] == "2" })
		if d.index <= first.index {
			t.Errorf("index %d did not grow past %d", d.index, first.index)
		}
		if len(d.values()) != 2 {
			t.Errorf("delivery %v is not the full set under the prefix", d.values())
		}
		t.Logf("put to callback: %v", d.at.Sub(at))
	})

	t.Run("a delete wakes the watch", func(t *testing.T) {
		if _, err := c.KV().Delete(prefix+"vlans/a", nil); err != nil {
			t.Fatal(err)
		}
		next(t, ch, 5*time.Second, "vlans/a gone", func(d delivery) bool {
			_, there := d.values()[prefix+"vlans/a"]
			return !there && len(d.values()) == 1
		})
	})

	t.Run("a write outside the prefix does not wake it", func(t *testing.T) {
		put(t, c, s.StatusKey("vlans", "b"), `{"observedIndex":1}`)
		none(t, ch, 500*time.Millisecond, "status is outside spec/")
	})

	t.Run("deleting everything under the prefix is delivered as empty", func(t *testing.T) {
		if _, err := c.KV().DeleteTree(prefix, nil); err != nil {
			t.Fatal(err)
		}
		next(t, ch, 5*time.Second, "an empty set", func(d delivery) bool { return len(d.pairs) == 0 })
	})

	st := counters.Stats()
	if st.Errors != 0 || st.Resets != 0 {
		t.Errorf("stats %+v: no errors or resets expected", st)
	}
	if st.Deliveries < 4 || st.Wakeups < st.Deliveries {
		t.Errorf("stats %+v: want at least 4 deliveries and as many wake-ups", st)
	}
	if total := s.WatchStats(); total.Deliveries < st.Deliveries {
		t.Errorf("store stats %+v do not include the watch's %+v", total, st)
	}
}

func TestWatchNeverDeliversTheSameIndexTwice(t *testing.T) {
	a := newAgent(t)
	s := storeFor(t, a.Addr)
	put(t, a.Client(t), s.SpecPrefix()+"vlans/a", "1")
	var counters WatchCounters
	// A one-second wait makes the blocking query time out, unchanged, a few
	// times during the test.
	ch := runWatch(t, s, s.SpecPrefix(), WatchOptions{WaitTime: time.Second, Counters: &counters})
	next(t, ch, 5*time.Second, "the initial state", func(delivery) bool { return true })
	none(t, ch, 3500*time.Millisecond, "nothing changed")
	if st := counters.Stats(); st.Wakeups < 3 || st.Deliveries != 1 {
		t.Errorf("stats %+v: want >= 3 timed-out wake-ups and exactly 1 delivery", st)
	}
}

func TestWatchesOnDifferentPrefixesDoNotWakeEachOther(t *testing.T) {
	a := newAgent(t)
	s := storeFor(t, a.Addr)
	c := a.Client(t)
	// Both prefixes hold a key: an empty prefix answers with the whole KV
	// table's index and would wake on any write.
	put(t, c, s.SpecPrefix()+"vlans/a", "1")
	put(t, c, s.NodePrefix()+"n1", "x")
	var specCounters, nodeCounters WatchCounters
	specCh := runWatch(t, s, s.SpecPrefix(), WatchOptions{Counters: &specCounters})
	nodeCh := runWatch(t, s, s.NodePrefix(), WatchOptions{Counters: &nodeCounters})
	next(t, specCh, 5*time.Second, "spec initial state", func(delivery) bool { return true })
	next(t, nodeCh, 5*time.Second, "nodes initial state", func(delivery) bool { return true })

	for i := 0; i < 5; i++ {
		put(t, c, s.SpecPrefix()+"vlans/a", string(rune('2'+i)))
		next(t, specCh, 5*time.Second, "the spec change", func(d delivery) bool {
			return d.values()[s.SpecPrefix()+"vlans/a"] == string(rune('2'+i))
		})
	}
	none(t, nodeCh, 300*time.Millisecond, "only spec/ changed")
	if st := nodeCounters.Stats(); st.Wakeups != 1 {
		t.Errorf("nodes watch stats %+v: woke %d times for spec writes", st, st.Wakeups-1)
	}

	put(t, c, s.NodePrefix()+"n2", "y")
	next(t, nodeCh, 5*time.Second, "the node change", func(d delivery) bool { return len(d.pairs) == 2 })
	none(t, specCh, 300*time.Millisecond, "only state/nodes/ changed")
	if st := specCounters.Stats(); st.Wakeups != 6 {
		t.Errorf("spec watch stats %+v: want 6 wake-ups (initial + 5 puts)", st)
	}
}

func TestWatchOnAnEmptyPrefixDeliversEmptinessOnce(t *testing.T) {
	a := newAgent(t)
	s := storeFor(t, a.Addr)
	c := a.Client(t)
	var counters WatchCounters
	ch := runWatch(t, s, s.SpecPrefix(), WatchOptions{Counters: &counters})
	first := next(t, ch, 5*time.Second, "the initial state", func(delivery) bool { return true })
	if len(first.pairs) != 0 {
		t.Fatalf("initial delivery %v, want empty", first.values())
	}
	// Writes elsewhere move the index an empty prefix answers with.
	for i := 0; i < 3; i++ {
		put(t, c, s.StatusKey("nodes", "n1"), string(rune('a'+i)))
	}
	eventually(t, 5*time.Second, "the watch to wake for the writes elsewhere", func() bool { return counters.Stats().Wakeups >= 2 })
	none(t, ch, 300*time.Millisecond, "the prefix is still empty")
	put(t, c, s.SpecKey("VLAN", "vlan40"), "{}")
	next(t, ch, 5*time.Second, "the first key", func(d delivery) bool { return len(d.pairs) == 1 })
}

func TestWatchRecoversWhenTheIndexGoesBackwards(t *testing.T) {
	a := newAgent(t)
	s := storeFor(t, a.Addr)
	c := a.Client(t)
	prefix := s.SpecPrefix()
	put(t, c, prefix+"vlans/a", "old")

	snap, _, err := c.Snapshot().Save(nil)
	if err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	saved, err := io.ReadAll(snap)
	snap.Close()
	if err != nil {
		t.Fatalf("snapshot read: %v", err)
	}

	var counters WatchCounters
	ch := runWatch(t, s, prefix, WatchOptions{Counters: &counters})
	for i := 0; i < 20; i++ {
		put(t, c, prefix+"vlans/a", "new")
		put(t, c, prefix+"vlans/b", "new")
	}
	before := next(t, ch, 5*time.Second, "the new data", func(d delivery) bool {
		v := d.values()
		return v[prefix+"vlans/a"] == "new" && v[prefix+"vlans/b"] == "new"
	})

	// Restore while the watch's next query is blocked on the newer index:
	// Consul wakes it with the abandoned store's index and the watch must
	// look again to see the index went backwards. (A query sent after the
	// restore just waits on the higher index and sees the restore when its
	// wait time ends.)
	eventually(t, 5*time.Second, "the watch to block again", func() bool { return s.Requests() > before.requests })
	if err := c.Snapshot().Restore(nil, bytes.NewReader(saved)); err != nil {
		t.Fatalf("snapshot restore: %v", err)
	}

	after := next(t, ch, 10*time.Second, "the restored data", func(d delivery) bool {
		v := d.values()
		return len(v) == 1 && v[prefix+"vlans/a"] == "old"
	})
	if after.index >= before.index {
		t.Fatalf("index after restore %d is not below %d: the test did not make it go backwards", after.index, before.index)
	}
	if st := counters.Stats(); st.Resets == 0 {
		t.Errorf("stats %+v: the watch did not count a reset", st)
	}

	// And it keeps watching from the restored index.
	put(t, c, prefix+"vlans/c", "later")
	next(t, ch, 5*time.Second, "a write after the restore", func(d delivery) bool {
		return d.values()[prefix+"vlans/c"] == "later"
	})
}

func TestWatchSurvivesConsulRestart(t *testing.T) {
	a := newAgent(t, lab.WithPersistentData())
	s := storeFor(t, a.Addr)
	c := a.Client(t)
	prefix := s.SpecPrefix()
	put(t, c, prefix+"vlans/a", "1")
	var counters WatchCounters
	ch := runWatch(t, s, prefix, WatchOptions{MaxBackoff: time.Second, Counters: &counters})
	next(t, ch, 5*time.Second, "the initial state", func(delivery) bool { return true })

	a.Stop()
	// While Consul is down the watch keeps retrying (runWatch fails the
	// test if WatchPrefix returns) and delivers nothing.
	eventually(t, 10*time.Second, "a few failed queries", func() bool { return counters.Stats().Errors >= 3 })
	none(t, ch, 100*time.Millisecond, "Consul is down")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatalf("restart consul: %v", err)
	}
	put(t, c, prefix+"vlans/b", "2")
	next(t, ch, 15*time.Second, "a change after the restart", func(d delivery) bool {
		v := d.values()
		return v[prefix+"vlans/a"] == "1" && v[prefix+"vlans/b"] == "2"
	})
}

func TestWatchRidesOutInjectedFailures(t *testing.T) {
	a := newAgent(t)
	proxy := lab.NewFlakyProxy(t, a.Addr)
	s := storeFor(t, proxy.Addr)
	c := a.Client(t)
	prefix := s.SpecPrefix()
	put(t, c, prefix+"vlans/a", "1")
	var counters WatchCounters
	ch := runWatch(t, s, prefix, WatchOptions{MaxBackoff: 500 * time.Millisecond, Counters: &counters})
	next(t, ch, 5*time.Second, "the initial state", func(delivery) bool { return true })

	// Cut the blocking query in flight, then fail the next five requests.
	proxy.FailNext(5)
	proxy.SetDown(true)
	proxy.SetDown(false)
	put(t, c, prefix+"vlans/a", "2")
	next(t, ch, 15*time.Second, "the change made during the failures", func(d delivery) bool {
		return d.values()[prefix+"vlans/a"] == "2"
	})
	if st := counters.Stats(); st.Errors < 5 {
		t.Errorf("stats %+v: want at least 5 errors counted", st)
	}
}

func TestWatchReturnsOnlyWhenCancelled(t *testing.T) {
	// Nothing listens on this address: the watch must keep retrying.
	s := storeFor(t, "127.0.0.1:1")
	ctx, cancel := context.WithCancel(context.Background())
	var counters WatchCounters
	errc := make(chan error, 1)
	go func() {
		errc <- s.WatchPrefix(ctx, s.SpecPrefix(), WatchOptions{MaxBackoff: 100 * time.Millisecond, Counters: &counters},
			func(api.KVPairs, uint64) { t.Error("delivered without Consul") })
	}()
	eventually(t, 5*time.Second, "several failed attempts", func() bool { return counters.Stats().Errors >= 5 })
	select {
	case err := <-errc:
		t.Fatalf("watch returned %v while Consul was away", err)
	default:
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("watch returned %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("watch did not return after cancel")
	}
}

// TestWatchPutStormIsPaced floods a watched prefix with puts: the watch
// starts no more queries than its token bucket allows (the burst plus one
// per MinInterval of the storm), and still delivers the last put.
func TestWatchPutStormIsPaced(t *testing.T) {
	opts := WatchOptions{}.withDefaults()
	reqs, took := putStorm(t, WatchOptions{}, 300)
	bound := uint64(opts.Burst) + uint64(took/opts.MinInterval) + 1
	t.Logf("300 puts in %v: the watch made %d requests (bound %d)", took.Round(time.Millisecond), reqs, bound)
	if reqs > bound {
		t.Errorf("watch made %d requests in %v, more than the bucket allows (%d)", reqs, took, bound)
	}
}
