package reconcile

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestQueueDeduplicates(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	a, b := Key{"VLAN", "a"}, Key{"VLAN", "b"}
	q.Add(a)
	q.Add(b)
	q.Add(a)
	if got := q.Len(); got != 2 {
		t.Fatalf("Len = %d, want 2", got)
	}
	ctx := context.Background()
	k1, _ := q.Get(ctx)
	k2, _ := q.Get(ctx)
	if k1 != a || k2 != b {
		t.Fatalf("order = %v, %v; want a, b", k1, k2)
	}
}

func TestQueueAddWhileActiveRequeuesAfterDone(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	a := Key{"Service", "web"}
	q.Add(a)
	k, _ := q.Get(context.Background())
	q.Add(a) // arrives while a is being processed
	if q.Len() != 0 {
		t.Fatalf("key queued while active: two workers could take it")
	}
	q.Done(k)
	if q.Len() != 1 {
		t.Fatalf("Len after Done = %d, want 1 (the change seen meanwhile)", q.Len())
	}
}

func TestQueueNeverHandsOneKeyToTwoWorkers(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	active := map[Key]int{}
	var overlap bool
	var wg sync.WaitGroup
	processed := make(chan struct{}, 1000)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k, ok := q.Get(ctx)
				if !ok {
					return
				}
				mu.Lock()
				active[k]++
				if active[k] > 1 {
					overlap = true
				}
				mu.Unlock()
				time.Sleep(100 * time.Microsecond)
				mu.Lock()
				active[k]--
				mu.Unlock()
				q.Done(k)
				processed <- struct{}{}
			}
		}()
	}
	for i := 0; i < 300; i++ {
		q.Add(Key{"Service", string(rune('a' + i%3))})
	}
	deadline := time.After(5 * time.Second)
	for q.Len() > 0 {
		select {
		case <-processed:
		case <-deadline:
			t.Fatal("queue did not drain")
		}
	}
	cancel()
	q.ShutDown()
	wg.Wait()
	if overlap {
		t.Fatal("a key was processed by two workers at once")
	}
}

func TestQueueRetryBacksOff(t *testing.T) {
	q := NewQueue(20*time.Millisecond, time.Second)
	k := Key{"VLAN", "x"}
	d1 := q.Retry(k)
	if q.Len() != 0 {
		t.Fatal("retry queued immediately")
	}
	got, ok := q.Get(ctxTimeout(t, 2*time.Second))
	if !ok || got != k {
		t.Fatalf("retry not delivered: %v %v", got, ok)
	}
	q.Done(k)
	d2 := q.Retry(k)
	if d1 >= 20*time.Millisecond || d2 < 20*time.Millisecond {
		t.Fatalf("delays %v then %v: want [10ms,20ms) then [20ms,40ms)", d1, d2)
	}
	q.Forget(k)
	if d := q.Retry(Key{"VLAN", "x"}); d >= 20*time.Millisecond {
		t.Fatalf("delay after Forget = %v, want reset", d)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestRequeueDelayGrowsWhilePolling(t *testing.T) {
	c := &Controller{}
	k := Key{"VLAN", "v"}
	var got []time.Duration
	for i := 0; i < 9; i++ {
		got = append(got, c.requeueDelay(k, Poll(5*time.Second)))
	}
	want := []time.Duration{5, 10, 20, 40, 80, 120, 120, 120, 120}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays = %v, want %v seconds", got, want)
		}
	}
	if d := c.requeueDelay(k, RequeueAfter(3*time.Second)); d != 3*time.Second {
		t.Fatalf("non-poll delay = %v", d)
	}
	if d := c.requeueDelay(k, Poll(5*time.Second)); d != 5*time.Second {
		t.Fatalf("poll delay after a settled outcome = %v, want reset to 5s", d)
	}
}

func TestQueueClaim(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	a, b, c := Key{"Service", "a"}, Key{"Service", "b"}, Key{"Service", "c"}
	q.Add(a)
	if q.Claim(a) {
		t.Fatal("claimed a key that waits in the queue")
	}
	k, _ := q.Get(context.Background())
	if q.Claim(k) {
		t.Fatal("claimed a key being processed")
	}
	q.Done(k)
	q.AddAfter(c, time.Hour)
	if q.Claim(c) {
		t.Fatal("claimed a key waiting for its retry")
	}
	if !q.Claim(b) {
		t.Fatal("could not claim an idle key")
	}
	q.Add(b) // a change while claimed: queued once the claim is done
	if q.Len() != 0 {
		t.Fatal("a claimed key was handed out")
	}
	q.Done(b)
	if q.Len() != 1 {
		t.Fatalf("Len after Done = %d, want 1 (the change seen meanwhile)", q.Len())
	}
}
