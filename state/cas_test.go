package state

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestGetAndCASJSON(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	s := storeFor(t, a.Addr)
	key := s.Prefix() + "state/test/x"
	type doc struct{ N int }

	var d doc
	if idx, found, err := s.GetJSON(ctx, key, &d); found || err != nil || idx != 0 {
		t.Fatalf("GetJSON of a missing key = %d, %v, %v", idx, found, err)
	}
	if ok, err := s.CASJSON(ctx, key, doc{1}, 0); !ok || err != nil {
		t.Fatalf("create = %v, %v", ok, err)
	}
	if ok, err := s.CASJSON(ctx, key, doc{2}, 0); ok || err != nil {
		t.Fatalf("create over an existing key = %v, %v; want false", ok, err)
	}
	idx, found, err := s.GetJSON(ctx, key, &d)
	if !found || err != nil || d.N != 1 {
		t.Fatalf("GetJSON = %+v, %v, %v", d, found, err)
	}
	if ok, err := s.CASJSON(ctx, key, doc{3}, idx+1); ok || err != nil {
		t.Fatalf("CAS with a wrong index = %v, %v; want false", ok, err)
	}
	if ok, err := s.CASJSON(ctx, key, doc{3}, idx); !ok || err != nil {
		t.Fatalf("CAS with the right index = %v, %v", ok, err)
	}
	if ok, err := s.CASJSON(ctx, key, doc{4}, idx); ok || err != nil {
		t.Fatalf("CAS with the now stale index = %v, %v; want false", ok, err)
	}
	if _, _, err := s.GetJSON(ctx, key, &d); err != nil || d.N != 3 {
		t.Fatalf("final value %+v, %v; want 3", d, err)
	}
}

func TestAllocations(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s := storeFor(t, a.Addr)
	now := time.Now().UTC().Truncate(time.Second)
	for node, chunk := range map[string]string{"n1": "172.80.1.0/24", "n2": "172.80.2.0/24"} {
		if ok, err := s.CASJSON(ctx, s.AllocationKey("vlan40", node), Allocation{Chunk: chunk, Node: node, Hostname: "h-" + node, Created: now}, 0); !ok || err != nil {
			t.Fatalf("create allocation %s: %v, %v", node, ok, err)
		}
	}
	// Another VLAN's allocation, and one whose name starts the same, stay out.
	if _, err := s.CASJSON(ctx, s.AllocationKey("vlan4", "n1"), Allocation{Chunk: "10.0.0.0/24"}, 0); err != nil {
		t.Fatal(err)
	}

	allocs, indexes, err := s.Allocations(ctx, "vlan40")
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 2 || allocs["n1"].Chunk != "172.80.1.0/24" || allocs["n2"].Hostname != "h-n2" || !allocs["n1"].Created.Equal(now) {
		t.Fatalf("Allocations = %+v", allocs)
	}
	if allocs["n1"].Left != nil {
		t.Fatalf("Left set on a fresh allocation: %v", allocs["n1"].Left)
	}
	// The returned index is the one to check-and-set against.
	left := now.Add(time.Minute)
	n1 := allocs["n1"]
	n1.Left = &left
	if ok, err := s.CASJSON(ctx, s.AllocationKey("vlan40", "n1"), n1, indexes["n1"]); !ok || err != nil {
		t.Fatalf("CAS with the listed index = %v, %v", ok, err)
	}
	allocs, _, _ = s.Allocations(ctx, "vlan40")
	if allocs["n1"].Left == nil || !allocs["n1"].Left.Equal(left) {
		t.Fatalf("Left = %v, want %v", allocs["n1"].Left, left)
	}

	// A key straight under state/allocations/ is no VLAN's folder.
	put(t, c, s.allocationsPrefix()+"stray", "x")
	vlans, err := s.AllocationVLANs(ctx)
	if want := []string{"vlan4", "vlan40"}; err != nil || !slices.Equal(vlans, want) {
		t.Fatalf("AllocationVLANs = %q, %v; want %q", vlans, err, want)
	}

	if _, err := c.KV().Put(&api.KVPair{Key: s.AllocationKey("vlan40", "n3"), Value: []byte("not json")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Allocations(ctx, "vlan40"); err == nil {
		t.Fatal("a corrupt allocation was skipped silently; a chunk could be handed out twice")
	}
}

func TestUpdateScaleIntentConcurrentIncrements(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	s := storeFor(t, a.Addr)
	const n = 50
	if _, err := s.UpdateScaleIntent(ctx, "web", func(cur *ScaleIntent, found bool) (*ScaleIntent, error) {
		if found {
			return nil, fmt.Errorf("found an intent before any was written: %+v", cur)
		}
		return &ScaleIntent{Replicas: 3, Reason: "initial"}, nil
	}); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateScaleIntent(ctx, "web", func(cur *ScaleIntent, found bool) (*ScaleIntent, error) {
				next := *cur
				next.Replicas++
				next.LastUp = time.Now()
				next.UpdatedBy = fmt.Sprintf("worker %d", i)
				return &next, nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent update: %v", err)
		}
	}
	si, _, found, err := s.ScaleIntent(ctx, "web")
	if err != nil || !found || si.Replicas != 3+n {
		t.Fatalf("after %d concurrent increments: %+v, %v, %v; want %d replicas", n, si, found, err, 3+n)
	}

	t.Run("fn can decline", func(t *testing.T) {
		_, before, _, _ := s.ScaleIntent(ctx, "web")
		got, err := s.UpdateScaleIntent(ctx, "web", func(*ScaleIntent, bool) (*ScaleIntent, error) { return nil, nil })
		_, after, _, _ := s.ScaleIntent(ctx, "web")
		if err != nil || got.Replicas != 3+n || before != after {
			t.Fatalf("declined update = %+v, %v; index %d -> %d", got, err, before, after)
		}
	})
	t.Run("fn errors are returned", func(t *testing.T) {
		boom := errors.New("above max")
		if _, err := s.UpdateScaleIntent(ctx, "web", func(*ScaleIntent, bool) (*ScaleIntent, error) { return nil, boom }); !errors.Is(err, boom) {
			t.Fatalf("err = %v, want %v", err, boom)
		}
	})
}
