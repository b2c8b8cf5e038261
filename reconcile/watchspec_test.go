package reconcile_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/spec"
	"swarmvlan/state"
)

func watchTestVLAN(name string, octet int) []byte {
	return fmt.Appendf(nil, `apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: %[1]s
spec:
  trunk: eth9
  driver: macvlan
  mode: bridge
  subnet: 172.%[2]d.0.0/16
  gateway: 172.%[2]d.0.1
  mtu: 1500
  rangePlan:
    chunkPrefix: 24
    pool: [172.%[2]d.16.0/20]
`, name, octet)
}

// TestWatchSpecFirstListingQueuesNothing: the listing that first syncs
// the view hands no key to onChange (every controller starts with a pass
// over the synced view; a new leader that also queued each of thousands
// of documents reconciled them one by one beside that pass), and a change
// after it hands on exactly the key that changed.
func TestWatchSpecFirstListingQueuesNothing(t *testing.T) {
	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr, Prefix: "swarmvlan/"})
	if err != nil {
		t.Fatal(err)
	}
	var docs []state.SpecDoc
	for i := range 30 {
		docs = append(docs, state.SpecDoc{Key: store.SpecKey(spec.KindVLAN, fmt.Sprintf("w%02d", i)), Value: watchTestVLAN(fmt.Sprintf("w%02d", i), 100+i)})
	}
	if _, err := store.Apply(context.Background(), docs, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var changed [][]reconcile.Key
	view := reconcile.NewView(store.SpecPrefix())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		reconcile.WatchSpec(ctx, store, view, state.WatchOptions{}, func(ks []reconcile.Key) {
			mu.Lock()
			defer mu.Unlock()
			changed = append(changed, ks)
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-view.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("view not synced in 10 s")
	}
	if n := len(view.List(spec.KindVLAN)); n != 30 {
		t.Fatalf("synced view holds %d VLANs, want 30", n)
	}

	if _, err := store.Apply(context.Background(), []state.SpecDoc{{Key: store.SpecKey(spec.KindVLAN, "w07"), Value: watchTestVLAN("w07", 99)}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := fmt.Sprint(changed)
		n := len(changed)
		mu.Unlock()
		if n > 0 {
			if want := fmt.Sprint([][]reconcile.Key{{{Kind: spec.KindVLAN, Name: "w07"}}}); got != want {
				t.Fatalf("onChange got %s, want only the changed document %s (the first listing queues nothing)", got, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the change after the sync reached no onChange in 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
