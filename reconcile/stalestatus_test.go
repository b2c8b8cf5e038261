package reconcile_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// TestStatusOfDeletedDocumentGoes: a status whose document was deleted
// while no leader ran (in no listing's changes) is removed at the start
// of the next term, through its kind's reconcile of the absent document;
// the statuses of a valid and of an invalid document stay.
func TestStatusOfDeletedDocumentGoes(t *testing.T) {
	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr, Prefix: "swarmvlan/"})
	if err != nil {
		t.Fatal(err)
	}
	kv := agent.Client(t).KV()
	ctx := context.Background()
	if _, err := store.Apply(ctx, []state.SpecDoc{
		{Key: store.SpecKey(spec.KindVLAN, "kept"), Value: watchTestVLAN("kept", 120)},
		{Key: store.SpecKey(spec.KindVLAN, "broken"), Value: []byte("kind: VLAN\nmetadata: {name: broken}\nspec: [")},
	}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// Statuses as a deposed leader left them: one of a document deleted
	// since, a node's (not a document's) under another section.
	w := store.NewStatusWriter()
	for _, name := range []string{"kept", "broken", "deleted"} {
		if _, err := w.Write(ctx, "vlans", name, state.Status{LastError: "as left by the last leader"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Write(ctx, state.SectionNodes, "deleted", state.Status{}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var gone []string
	view := reconcile.NewView(store.SpecPrefix())
	c := &reconcile.Controller{Store: store, View: view, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Resync: time.Hour, PrimeStatus: []string{"services", "vlans"}}
	c.Register(spec.KindVLAN, reconcile.ReconcilerFunc(func(_ context.Context, k reconcile.Key, doc *reconcile.Doc) reconcile.Outcome {
		if doc == nil {
			mu.Lock()
			gone = append(gone, k.Name)
			mu.Unlock()
			return reconcile.Gone()
		}
		return reconcile.Done()
	}))
	runController(t, store, view, c)

	get := func(key string) *api.KVPair {
		p, _, err := kv.Get(key, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	deadline := time.Now().Add(10 * time.Second)
	for get(store.StatusKey("vlans", "deleted")) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the status of the deleted document still there after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the other keys' reconciles finish
	mu.Lock()
	if len(gone) != 1 || gone[0] != "deleted" {
		t.Errorf("reconciles of absent documents: %v, want [deleted]", gone)
	}
	mu.Unlock()
	for _, k := range []string{store.StatusKey("vlans", "kept"), store.StatusKey("vlans", "broken"), store.StatusKey(state.SectionNodes, "deleted")} {
		if get(k) == nil {
			t.Errorf("%s removed", k)
		}
	}
}

// TestStatusWrittenAgainAfterRestore: a snapshot restore that puts back a
// status older than the one last written is seen (the status tree's
// index went backwards) and the status written again, although the
// reconcile's outcome did not change since it was last written.
func TestStatusWrittenAgainAfterRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the rollback watch's pace (30 s); runs without -short")
	}
	agent := lab.StartConsul(t)
	store, err := state.New(state.Config{Address: agent.Addr, Prefix: "swarmvlan/"})
	if err != nil {
		t.Fatal(err)
	}
	cli := agent.Client(t)
	ctx := context.Background()
	if _, err := store.Apply(ctx, []state.SpecDoc{{Key: store.SpecKey(spec.KindVLAN, "v"), Value: watchTestVLAN("v", 121)}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	summary := "first"
	view := reconcile.NewView(store.SpecPrefix())
	c := &reconcile.Controller{Store: store, View: view, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Resync: time.Hour, PrimeStatus: []string{"vlans"}}
	c.Register(spec.KindVLAN, reconcile.ReconcilerFunc(func(context.Context, reconcile.Key, *reconcile.Doc) reconcile.Outcome {
		mu.Lock()
		defer mu.Unlock()
		return reconcile.Done().With(map[string]string{"summary": summary})
	}))
	runController(t, store, view, c)

	key := store.StatusKey("vlans", "v")
	waitSummary := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			p, _, err := cli.KV().Get(key, nil)
			if err != nil {
				t.Fatal(err)
			}
			if p != nil && strings.Contains(string(p.Value), `"summary":"`+want+`"`) {
				return
			}
			if time.Now().After(deadline) {
				got := "<absent>"
				if p != nil {
					got = string(p.Value)
				}
				t.Fatalf("status not %q within %v: %s", want, within, got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitSummary("first", 10*time.Second)
	snap, _, err := cli.Snapshot().Save(nil)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := io.ReadAll(snap)
	snap.Close()
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	summary = "second"
	mu.Unlock()
	c.Enqueue(reconcile.Key{Kind: spec.KindVLAN, Name: "v"})
	waitSummary("second", 10*time.Second)
	time.Sleep(2 * reconcile.StatusRollbackPace) // the rollback watch blocked again
	if err := cli.Snapshot().Restore(nil, bytes.NewReader(saved)); err != nil {
		t.Fatal(err)
	}
	waitSummary("second", 2*reconcile.StatusRollbackPace)
}

// runController runs c, fed by a spec watch, until the test ends.
func runController(t *testing.T, store *state.Store, view *reconcile.View, c *reconcile.Controller) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		reconcile.WatchSpec(ctx, store, view, state.WatchOptions{}, func(ks []reconcile.Key) {
			for _, k := range ks {
				c.Enqueue(k)
			}
		}, c.Log)
	}()
	go func() { defer wg.Done(); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}
