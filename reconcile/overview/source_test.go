package overview

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/state"
)

// TestSourceWatchesOnlyWhileLookedAt runs the source against a real
// Consul agent, through a proxy that counts its requests: it sends none
// while nobody looks at the dashboard, starts its watches when a snapshot
// is asked for, keeps them while a page is subscribed, and drops the tree
// once idle.
func TestSourceWatchesOnlyWhileLookedAt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	old := IdleAfter
	IdleAfter = 600 * time.Millisecond
	t.Cleanup(func() { IdleAfter = old })

	consul := lab.StartConsul(t)
	proxy := lab.NewFlakyProxy(t, consul.Addr)
	reqs := proxy.Requests
	store, err := state.New(state.Config{Address: proxy.Addr, Prefix: "ovsrc/"})
	if err != nil {
		t.Fatal(err)
	}
	kv := consul.Client(t).KV()
	put := func(key, value string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put(store.SpecKey("VLAN", "v1"), testVLAN)
	put(store.SpecKey("Service", "web"), testService)

	src := NewSource(store, "m1", nil)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	services := func() []string {
		t.Helper()
		var o Overview
		b, _ := src.Snapshot()
		if err := json.Unmarshal(b, &o); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range o.Services {
			names = append(names, s.Name)
		}
		return names
	}
	synced := func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		return src.synced
	}

	time.Sleep(IdleAfter)
	if n := reqs(); n != 0 || synced() {
		t.Fatalf("an unwatched dashboard sent %d Consul requests (synced %v)", n, synced())
	}

	src.WaitSynced(ctx, 5*time.Second)
	if !synced() || !src.Watching() {
		t.Fatal("not synced after a snapshot was asked for")
	}
	if got := services(); len(got) != 1 || got[0] != "web" {
		t.Fatalf("services %v, want web", got)
	}

	// Idle: the watches stop and the tree is dropped.
	deadline := time.Now().Add(IdleAfter + 5*time.Second)
	for synced() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if synced() {
		t.Fatal("still synced after the dashboard went idle")
	}
	src.mu.Lock()
	held := len(src.tree.Spec)
	src.mu.Unlock()
	if held != 0 || len(src.view.Keys()) != 0 {
		t.Errorf("an idle dashboard holds %d KV pairs and %d documents", held, len(src.view.Keys()))
	}
	time.Sleep(100 * time.Millisecond) // the watches' last requests return
	quiet := reqs()
	time.Sleep(IdleAfter)
	if n := reqs() - quiet; n != 0 {
		t.Errorf("an idle dashboard sent %d Consul requests", n)
	}

	// A subscribed page keeps the watches past IdleAfter and gets changes.
	notify, stop := src.Subscribe()
	deadline = time.Now().Add(5 * time.Second)
	for !synced() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * IdleAfter)
	if !synced() {
		t.Fatal("the watches stopped while a page was subscribed")
	}
	put(store.SpecKey("Service", "api"), strings.Replace(testService, "name: web", "name: api", 1))
	deadline = time.Now().Add(5 * time.Second)
	for len(services()) != 2 && time.Now().Before(deadline) {
		select {
		case <-notify:
		case <-time.After(100 * time.Millisecond):
		}
	}
	if got := services(); len(got) != 2 {
		t.Errorf("services %v after api was put, want api and web", got)
	}
	stop()
	deadline = time.Now().Add(IdleAfter + 5*time.Second)
	for synced() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if synced() {
		t.Error("still synced after the last page left")
	}
}
